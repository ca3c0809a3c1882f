"""Shared fixtures: real in-tree vfio_pci aliases and device snapshots."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import pytest
from hypothesis import settings

# Timing is measured in bench/, not asserted here: hypothesis's default
# 200 ms deadline per example failed properties on a loaded 2-core machine
# (a first example paying an import, 296 ms) that were correct.
settings.register_profile("vfio-flavourd", deadline=None)
settings.load_profile("vfio-flavourd")

from vfio_flavourd.aliases import VariantIndex, parse_modules_alias
from vfio_flavourd.pci import PciDevice, make_modalias

# The override-only aliases of the in-tree variant drivers, as depmod writes
# them (kernel-facts.md), with some host-driver and non-PCI lines around them.
REAL_MODULES_ALIAS = """\
# Aliases extracted from modules themselves.
alias pci:v000015B3d0000101Dsv*sd*bc*sc*i* mlx5_core
alias pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_core
alias usb:v0BDAp8153d*dc*dsc*dp*ic*isc*ip*in* r8152
alias acpi*:PNP0C0A:* battery
alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci
alias vfio_pci:v000019E5d0000A256sv*sd*bc*sc*i* hisi_acc_vfio_pci
alias vfio_pci:v000019E5d0000A259sv*sd*bc*sc*i* hisi_acc_vfio_pci
alias vfio_pci:v000019E5d0000A251sv*sd*bc*sc*i* hisi_acc_vfio_pci
alias vfio_pci:v00001DD8d00001003sv*sd*bc*sc*i* pds_vfio_pci
alias vfio_pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_vfio_pci
alias vfio_pci:v00001AF4d00001042sv*sd*bc*sc*i* virtio_vfio_pci
alias vfio_pci:v000010DEd00002342sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci
alias vfio_pci:v000010DEd00002345sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci
alias vfio_pci:v000010DEd00002348sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci
alias vfio_pci:v00008086d00004941sv*sd*bc*sc*i* qat_vfio_pci
alias vfio_pci:v00008086d00004943sv*sd*bc*sc*i* qat_vfio_pci
alias vfio_pci:v00008086d00004945sv*sd*bc*sc*i* qat_vfio_pci
alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
"""


@pytest.fixture
def real_index():
    aliases, warnings = parse_modules_alias(REAL_MODULES_ALIAS, "modules.alias")
    assert warnings == []
    return VariantIndex(aliases, None)


def make_device(address="0000:3b:00.2", vendor=0x15B3, device=0x101E, sv=0x15B3, sd=0x0016,
                class_code=0x020000, **kw) -> PciDevice:
    return PciDevice(address=address, vendor=vendor, device=device, subsystem_vendor=sv,
                     subsystem_device=sd, class_code=class_code,
                     modalias=make_modalias(vendor, device, sv, sd, class_code), **kw)


# The real-kernel tier (tests/vm): its runner and its guest side, whose
# pieces that need no guest are tested here on the host.
_VM = os.path.join(os.path.dirname(__file__), "vm")


@pytest.fixture
def guest_module(tmp_path, monkeypatch):
    """importlib.import_module for the guest side (tests/vm/guest), its
    results share in tmp_path; the test stands in for the guest's sysfs and
    QMP calls."""
    monkeypatch.syspath_prepend(os.path.join(_VM, "guest"))
    import vmguest
    monkeypatch.setattr(vmguest, "SHARE", str(tmp_path))
    return importlib.import_module


@pytest.fixture(scope="module")
def vm_runner():
    """tests/vm/runner.py as a module, its neighbours (setup, debs, stall)
    importable while it loads, as `tests/vm/run` finds them."""
    sys.path.insert(0, _VM)
    try:
        spec = importlib.util.spec_from_file_location("vm_runner_for_host_test",
                                                      os.path.join(_VM, "runner.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(_VM)


@pytest.fixture(autouse=True)
def _own_cache_dir(tmp_path_factory, monkeypatch):
    """Commands on a copied root keep their policy cache in the user's cache
    directory (cache.location); tests keep theirs out of the real one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
