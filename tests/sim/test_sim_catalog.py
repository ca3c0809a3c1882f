from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfio_flavourd.sim import catalog as cat
from vfio_flavourd.sim.catalog import PCI_ANY_ID, PciId


@pytest.mark.parametrize("module,driver", [
    ("vfio_pci", "vfio-pci"), ("virtio_pci", "virtio-pci"), ("pci_stub", "pci-stub"),
    ("qat_4xxx", "4xxx"), ("xhci_pci", "xhci_hcd"), ("i2c_i801", "i801_smbus"),
    ("mlx5_vfio_pci", "mlx5_vfio_pci"), ("qat_vfio_pci", "qat_vfio_pci"),
    ("xe_vfio_pci", "xe-vfio-pci"), ("mlx5_core", "mlx5_core"),
])
def test_driver_names_differ_from_module_names_as_in_the_kernel(module, driver):
    assert cat.CATALOG[module].driver == driver


def test_every_vfio_variant_entry_is_override_only_and_host_entries_are_not():
    for m in cat.CATALOG.values():
        for pid in m.ids:
            assert pid.override_only == m.vfio, m.name


def test_lookup_normalises_dashes_and_by_driver_does_not():
    assert cat.lookup("mlx5-vfio-pci").name == "mlx5_vfio_pci"
    assert cat.by_driver("vfio-pci").name == "vfio_pci"
    assert cat.by_driver("vfio_pci") is None


def test_modules_alias_has_the_kernels_lines():
    lines = cat.modules_alias().splitlines()
    assert lines[0] == "# Aliases extracted from modules themselves."
    for line in [
        "alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci",
        "alias vfio_pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_vfio_pci",
        "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci",
        "alias vfio_pci:v000019E5d0000A256sv*sd*bc*sc*i* hisi_acc_vfio_pci",
        "alias vfio_pci:v00001DD8d00001003sv*sd*bc*sc*i* pds_vfio_pci",
        "alias vfio_pci:v000010DEd00002342sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci",
        "alias vfio_pci:v00008086d00004941sv*sd*bc*sc*i* qat_vfio_pci",
        "alias pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_core",
        "alias pci:v*d*sv*sd*bc01sc08i02* nvme",
        "alias pci:v000010DEd*sv*sd*bc03sc*i* nouveau",
        "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci",
        "alias usb:v0BDAp8153d*dc*dsc*dp*icFFisc*ip*in* r8152",
        "alias acpi*:PNP0C14:* wmi",
        "alias platform:intel_pmc_core intel_pmc_core",
    ]:
        assert line in lines
    # built-in drivers have no line; pci-stub has no static ids at all
    assert not [ln for ln in lines if ln.endswith((" pcieport", " pci_stub"))]


def test_file2alias_adds_a_trailing_star_only_when_missing():
    assert PciId(0x8086, 0x1521).alias() == "pci:v00008086d00001521sv*sd*bc*sc*i*"
    assert (PciId(0x8086, 0x1521, 0x8086, 0x0001, 0x020000, 0xFFFFFF).alias()
            == "pci:v00008086d00001521sv00008086sd00000001bc02sc00i00*")


def test_partial_class_mask_bytes_are_refused_like_file2alias():
    with pytest.raises(ValueError):
        PciId(class_=0x020000, class_mask=0xF00000).alias()


def test_modules_dep_lists_dependencies():
    dep = cat.modules_dep()
    assert ("kernel/drivers/mlx5_vfio_pci.ko: kernel/drivers/vfio.ko" in dep)


ids = st.integers(0, 0xFFFF)
maybe = lambda s: st.one_of(st.just(PCI_ANY_ID), s)  # noqa: E731


@st.composite
def pci_ids(draw):
    mask = 0
    for shift in (16, 8, 0):
        mask |= draw(st.sampled_from([0, 0xFF])) << shift
    return PciId(draw(maybe(ids)), draw(maybe(ids)), draw(maybe(ids)), draw(maybe(ids)),
                 draw(st.integers(0, 0xFFFFFF)) & mask, mask, draw(st.booleans()))


@given(pci_ids(), ids, ids, ids, ids, st.integers(0, 0xFFFFFF))
def test_alias_glob_agrees_with_pci_match_one_device(pid, v, d, sv, sd, cls):
    """kmod's glob over the modalias and the kernel's id match are the same
    relation; for override_only entries kmod matches "vfio_" + modalias."""
    modalias = (f"pci:v{v:08X}d{d:08X}sv{sv:08X}sd{sd:08X}"
                f"bc{cls >> 16:02X}sc{cls >> 8 & 0xFF:02X}i{cls & 0xFF:02X}")
    if pid.override_only:
        modalias = "vfio_" + modalias
    assert fnmatchcase(modalias, pid.alias()) == pid.matches(v, d, sv, sd, cls)
