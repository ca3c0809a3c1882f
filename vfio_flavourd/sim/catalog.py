"""A table of real kernel modules, the PCI drivers they register and their id
tables, plus a modules.alias generator in kmod's format.

Module names and driver names are kept apart on purpose: module ``vfio_pci``
registers driver ``vfio-pci``, ``xhci_pci`` registers ``xhci_hcd``,
``qat_4xxx`` registers ``4xxx``.  The driver names below were read from each
driver's ``struct pci_driver .name`` in the kernel source (most are
KBUILD_MODNAME; vfio-pci, virtio-pci, pci-stub, 4xxx, xhci_hcd, i801_smbus
are spelled out).

Id entries follow ``struct pci_device_id`` (include/linux/mod_devicetable.h):
PCI_ANY_ID fields, a class/class_mask pair, and ``override_only`` for the
entries that PCI_DRIVER_OVERRIDE_DEVICE_VFIO() declares.  Those match only
when the device's driver_override names the driver (pci_match_device), and
scripts/mod/file2alias.c writes them with the ``vfio_pci:`` prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

PCI_ANY_ID = 0xFFFFFFFF


@dataclass(frozen=True)
class PciId:
    """One ``struct pci_device_id``."""

    vendor: int = PCI_ANY_ID
    device: int = PCI_ANY_ID
    subvendor: int = PCI_ANY_ID
    subdevice: int = PCI_ANY_ID
    class_: int = 0
    class_mask: int = 0
    override_only: bool = False

    def matches(self, vendor: int, device: int, subvendor: int, subdevice: int,
                class_: int) -> bool:
        """pci_match_one_device() in drivers/pci/pci.h."""
        return ((self.vendor == PCI_ANY_ID or self.vendor == vendor)
                and (self.device == PCI_ANY_ID or self.device == device)
                and (self.subvendor == PCI_ANY_ID or self.subvendor == subvendor)
                and (self.subdevice == PCI_ANY_ID or self.subdevice == subdevice)
                and not ((self.class_ ^ class_) & self.class_mask))

    def alias(self) -> str:
        """The pattern scripts/mod/file2alias.c (do_pci_entry) writes for
        this entry: upper-case hex, '*' for PCI_ANY_ID and for a zero class
        mask byte, a trailing '*' when the pattern does not end in one."""
        prefix = "vfio_pci:" if self.override_only else "pci:"
        parts = [prefix]
        for tag, value in (("v", self.vendor), ("d", self.device),
                           ("sv", self.subvendor), ("sd", self.subdevice)):
            parts.append(tag + ("*" if value == PCI_ANY_ID else f"{value:08X}"))
        for tag, shift in (("bc", 16), ("sc", 8), ("i", 0)):
            mask = (self.class_mask >> shift) & 0xFF
            if mask not in (0, 0xFF):
                # file2alias refuses partial byte masks ("Can't handle masks in ...")
                raise ValueError(f"class mask {self.class_mask:#08x} has a partial byte")
            value = (self.class_ >> shift) & 0xFF
            parts.append(tag + (f"{value:02X}" if mask else "*"))
        text = "".join(parts)
        return text if text.endswith("*") else text + "*"


def dev(vendor: int, *devices: int) -> Tuple[PciId, ...]:
    """PCI_DEVICE(vendor, device) / PCI_VDEVICE entries."""
    return tuple(PciId(vendor, d) for d in devices)


def vfio(vendor: int, *devices: int) -> Tuple[PciId, ...]:
    """PCI_DRIVER_OVERRIDE_DEVICE_VFIO(vendor, device) entries."""
    return tuple(PciId(vendor, d, override_only=True) for d in devices)


def cls(class_: int, mask: int = 0xFFFFFF, vendor: int = PCI_ANY_ID) -> Tuple[PciId, ...]:
    """PCI_DEVICE_CLASS(class, mask), optionally with a vendor."""
    return (PciId(vendor=vendor, class_=class_, class_mask=mask),)


@dataclass(frozen=True)
class ModuleInfo:
    """A kernel module as the simulator knows it."""

    name: str                       # as modules.alias spells it (underscores)
    driver: Optional[str] = None    # PCI driver it registers; None: no PCI driver
    ids: Tuple[PciId, ...] = ()
    deps: Tuple[str, ...] = ()      # modules modprobe loads first (modules.dep)
    vfio: bool = False              # vfio-pci or a variant: needs an IOMMU group
    sriov: bool = False             # driver has .sriov_configure
    builtin: bool = False           # built in: always loaded, no modules.alias line
    description: str = ""


VFIO_DEPS = ("vfio", "vfio_iommu_type1", "iommufd", "vfio_pci_core")

_MODULES = [
    # -- the vfio family -------------------------------------------------
    ModuleInfo("vfio"), ModuleInfo("vfio_iommu_type1", deps=("vfio",)),
    ModuleInfo("iommufd"), ModuleInfo("vfio_pci_core", deps=("vfio", "iommufd")),
    # vfio_pci's table is one override-only catch-all (so it never binds on
    # its own: only driver_override or new_id bring devices to it); that
    # entry is where `alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci` comes from.
    # Its sriov_configure returns -ENOENT unless enable_sriov=1 is given
    # (vfio_pci_sriov_configure), which the simulator does not model.
    ModuleInfo("vfio_pci", "vfio-pci", (PciId(override_only=True),), VFIO_DEPS,
               vfio=True, description="VFIO PCI - User Level meta-driver"),
    ModuleInfo("mlx5_vfio_pci", "mlx5_vfio_pci", vfio(0x15B3, 0x101E),
               VFIO_DEPS + ("mlx5_core",), vfio=True),
    ModuleInfo("hisi_acc_vfio_pci", "hisi_acc_vfio_pci", vfio(0x19E5, 0xA256, 0xA259, 0xA251),
               VFIO_DEPS + ("hisi_qm",), vfio=True),
    ModuleInfo("pds_vfio_pci", "pds_vfio_pci", vfio(0x1DD8, 0x1003),
               VFIO_DEPS + ("pds_core",), vfio=True),
    ModuleInfo("virtio_vfio_pci", "virtio_vfio_pci", vfio(0x1AF4, 0x1041),
               VFIO_DEPS + ("virtio_pci",), vfio=True),
    ModuleInfo("nvgrace_gpu_vfio_pci", "nvgrace_gpu_vfio_pci", vfio(0x10DE, 0x2342, 0x2345, 0x2348),
               VFIO_DEPS, vfio=True),
    ModuleInfo("qat_vfio_pci", "qat_vfio_pci", vfio(0x8086, 0x4941, 0x4943, 0x4945),
               VFIO_DEPS + ("intel_qat",), vfio=True),
    # A few of INTEL_BMG_IDS (Battlemage); the real table also has PTL and WCL.
    ModuleInfo("xe_vfio_pci", "xe-vfio-pci", vfio(0x8086, 0xE211, 0xE212, 0xE215),
               VFIO_DEPS, vfio=True),
    ModuleInfo("pci_stub", "pci-stub", (), description="pci-stub: takes devices by new_id or ids="),
    # -- host drivers ----------------------------------------------------
    ModuleInfo("mlx5_core", "mlx5_core",
               dev(0x15B3, 0x1017, 0x1018, 0x1019, 0x101A, 0x101B, 0x101C,
                   0x101D, 0x101E, 0x101F, 0x1021, 0xA2D6), sriov=True),
    ModuleInfo("ice", "ice", dev(0x8086, 0x1591, 0x1592, 0x1593, 0x159B, 0x188A), sriov=True),
    ModuleInfo("iavf", "iavf", dev(0x8086, 0x154C, 0x1571, 0x1889)),
    ModuleInfo("i40e", "i40e", dev(0x8086, 0x1572, 0x1583, 0x1584, 0x158B, 0x37D2), sriov=True),
    ModuleInfo("igb", "igb", dev(0x8086, 0x10C9, 0x1521, 0x1522, 0x1533, 0x1537, 0x1539), sriov=True),
    ModuleInfo("igbvf", "igbvf", dev(0x8086, 0x10CA, 0x1520)),
    ModuleInfo("e1000e", "e1000e", dev(0x8086, 0x10D3, 0x15B7, 0x15BB, 0x15FA)),
    ModuleInfo("ixgbe", "ixgbe", dev(0x8086, 0x10FB, 0x1528, 0x1563, 0x15AB), sriov=True),
    ModuleInfo("ixgbevf", "ixgbevf", dev(0x8086, 0x10ED, 0x1515, 0x1565)),
    ModuleInfo("nvme", "nvme", dev(0x144D, 0xA808) + cls(0x010802),
               deps=("nvme_core",)),
    ModuleInfo("nvme_core"),
    ModuleInfo("virtio_pci", "virtio-pci", (PciId(vendor=0x1AF4),), sriov=True),
    ModuleInfo("intel_qat"),
    ModuleInfo("qat_4xxx", "4xxx", dev(0x8086, 0x4940, 0x4942, 0x4944),
               deps=("intel_qat",), sriov=True),
    ModuleInfo("hisi_qm"),
    ModuleInfo("hisi_sec2", "hisi_sec2", dev(0x19E5, 0xA255, 0xA256), ("hisi_qm",), sriov=True),
    ModuleInfo("hisi_hpre", "hisi_hpre", dev(0x19E5, 0xA258, 0xA259), ("hisi_qm",), sriov=True),
    ModuleInfo("hisi_zip", "hisi_zip", dev(0x19E5, 0xA250, 0xA251), ("hisi_qm",), sriov=True),
    ModuleInfo("pds_core", "pds_core", dev(0x1DD8, 0x100C, 0x100B), sriov=True),
    ModuleInfo("ionic", "ionic", dev(0x1DD8, 0x1002, 0x1003, 0x1004), sriov=True),
    ModuleInfo("mgag200", "mgag200", dev(0x102B, 0x0522, 0x0524, 0x0530, 0x0532,
                                          0x0533, 0x0534, 0x0536, 0x0538)),
    ModuleInfo("ast", "ast", dev(0x1A03, 0x2000)),
    # nouveau: PCI_DEVICE(NVIDIA, ANY) restricted to the display base class.
    ModuleInfo("nouveau", "nouveau", cls(0x030000, 0xFF0000, 0x10DE) + cls(0x030000, 0xFF0000, 0x12D2)),
    ModuleInfo("ahci", "ahci", cls(0x010601)),
    ModuleInfo("xhci_pci", "xhci_hcd", cls(0x0C0330), deps=("xhci_hcd",)),
    ModuleInfo("xhci_hcd"),
    ModuleInfo("i2c_i801", "i801_smbus", dev(0x8086, 0xA1A3, 0xA223, 0x7A23)),
    ModuleInfo("lpc_ich", "lpc_ich", dev(0x8086, 0xA1C1, 0xA1C2, 0xA1CB, 0xA243)),
    ModuleInfo("virtio_net", None, description="virtio bus driver, no PCI id table"),
    # -- built in (no modules.alias line, no module link) ----------------
    ModuleInfo("pcieport", "pcieport", cls(0x060400), builtin=True),
]

CATALOG: Dict[str, ModuleInfo] = {m.name: m for m in _MODULES}


def normalise(name: str) -> str:
    """kmod compares module names with '-' and '_' as the same character."""
    return name.replace("-", "_")


def lookup(module: str, catalog: Optional[Dict[str, ModuleInfo]] = None) -> Optional[ModuleInfo]:
    return (catalog or CATALOG).get(normalise(module))


def by_driver(driver: str, catalog: Optional[Dict[str, ModuleInfo]] = None) -> Optional[ModuleInfo]:
    """The module that registers PCI driver `driver` (exact name)."""
    for m in (catalog or CATALOG).values():
        if m.driver == driver:
            return m
    return None


# Non-PCI lines so alias parsers meet what a real modules.alias holds.
UNRELATED_ALIASES = (
    ("usb:v0BDAp8153d*dc*dsc*dp*icFFisc*ip*in*", "r8152"),
    ("usb:v*p*d*dc*dsc*dp*ic09isc00ip*in*", "usbcore"),
    ("acpi*:PNP0C14:*", "wmi"),
    ("acpi*:INT3F0D:*", "intel_pmc_core"),
    ("of:N*T*Cnvidia,tegra186-pcie", "pcie_tegra194"),
    ("of:N*T*Cnvidia,tegra186-pcieC*", "pcie_tegra194"),
    ("platform:intel_pmc_core", "intel_pmc_core"),
    ("virtio:d00000001v*", "virtio_net"),
    ("cpu:type:x86,ven*fam*mod*:feature:*0085*", "kvm_intel"),
    ("fs-xfs", "xfs"),
    ("char-major-10-196", "vfio"),
    ("devname:vfio/vfio", "vfio"),
    ("net-pf-10", "ipv6"),
    ("pci_epf:pci_epf_test", "pci_epf_test"),
)


def alias_lines(catalog: Optional[Dict[str, ModuleInfo]] = None,
                unrelated: bool = True) -> Iterable[str]:
    for m in (catalog or CATALOG).values():
        if m.builtin:
            continue  # built-ins live in modules.builtin.alias.bin, not here
        for pid in m.ids:
            yield f"alias {pid.alias()} {m.name}"
    if unrelated:
        for pattern, module in UNRELATED_ALIASES:
            yield f"alias {pattern} {module}"


def modules_alias(catalog: Optional[Dict[str, ModuleInfo]] = None, unrelated: bool = True) -> str:
    """The text of lib/modules/REL/modules.alias as depmod writes it."""
    lines = ["# Aliases extracted from modules themselves."]
    lines.extend(alias_lines(catalog, unrelated))
    return "\n".join(lines) + "\n"


def modules_dep(catalog: Optional[Dict[str, ModuleInfo]] = None) -> str:
    """lib/modules/REL/modules.dep: `kernel/...ko: deps...`."""
    cat = catalog or CATALOG
    out = []
    for m in cat.values():
        if m.builtin:
            continue
        deps = " ".join(f"{_ko_path(d)}" for d in m.deps)
        out.append(f"{_ko_path(m.name)}:{' ' + deps if deps else ''}")
    return "\n".join(out) + "\n"


def _ko_path(module: str) -> str:
    return f"kernel/drivers/{module}.ko"
