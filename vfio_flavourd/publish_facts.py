"""What the fleet files (Prometheus, NFD, CDI) say, gathered in one pass:
the devices vfio-flavourd holds, from its state checked against sysfs; the
variant drivers this kernel offers; the IOMMU groups that are not viable.

Nothing here opens a device: sysfs links and attributes only.  The daemon
gathers again after every change (coalesced, see publish_daemon.py), so a
FactsCache keeps what cannot change while a device stays on one driver.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from . import __version__
from .iommu import group_status
from .modprobe import normalise_module
from .root import PCI_DEVICES

CATCH_ALL = "vfio_pci"


class HeldDevice(NamedTuple):
    address: str
    vendor: int
    device: int
    driver: str
    module: Optional[str]
    rule: Optional[str]
    iommu_group: Optional[str]
    cdev: Optional[str]          # "vfio3" when sysfs has vfio-dev/vfio3

    @property
    def id_text(self) -> str:
        return f"{self.vendor:04x}:{self.device:04x}"


class Facts(NamedTuple):
    version: str
    kernel_release: str
    variant_modules: tuple       # vfio_pci variants this kernel's modules.alias offers
    devices: tuple               # HeldDevice, in address order
    groups_not_viable: int       # among the groups of the devices we hold


class FactsCache:
    """Per device, the facts read while it sat on one driver; per IOMMU
    group, its viability for one assignment of drivers to its members."""

    def __init__(self):
        self.devices: dict = {}
        self.groups: dict = {}


def _hex(text: Optional[str]) -> Optional[int]:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def held_devices(ctx, cache: FactsCache) -> list:
    """The devices our state says we bound and that sysfs shows still on
    that driver.  A record whose device left (unplugged, rebound by someone
    else) is not published: the files say what a consumer can use now."""
    sysfs = ctx.sysfs
    out = []
    seen = set()
    for address, rec in ctx.state.read().items():
        if rec.get("outcome") != "bound" or not rec.get("driver"):
            continue
        base = f"{PCI_DEVICES}/{address}"
        driver = sysfs.link(f"{base}/driver")
        if driver != rec["driver"]:
            continue
        seen.add(address)
        key = (driver, rec.get("module"), rec.get("rule"))
        hit = cache.devices.get(address)
        if hit is not None and hit[0] == key:
            out.append(hit[1])
            continue
        vendor, device = _hex(sysfs.read(f"{base}/vendor")), _hex(sysfs.read(f"{base}/device"))
        if vendor is None or device is None:
            continue        # gone half-way through
        cdevs = [e for e in sysfs.entries(f"{base}/vfio-dev") if e.startswith("vfio")]
        held = HeldDevice(address, vendor, device, driver, rec.get("module"), rec.get("rule"),
                          sysfs.link(f"{base}/iommu_group"), cdevs[0] if cdevs else None)
        cache.devices[address] = (key, held)
        out.append(held)
    for gone in set(cache.devices) - seen:
        del cache.devices[gone]
    return out


def groups_not_viable(ctx, devices, cache: FactsCache) -> int:
    """How many of our devices' IOMMU groups a VM could not open, because a
    member is on a host driver.  Judged by iommu.group_status, re-judged
    only when a member's driver changed."""
    sysfs = ctx.sysfs
    vfio_modules = ctx.index.modules()
    bad = 0
    groups = sorted({d.iommu_group for d in devices if d.iommu_group is not None})
    for group in groups:
        members = sysfs.entries(f"sys/kernel/iommu_groups/{group}/devices")
        key = tuple((m, sysfs.link(f"{PCI_DEVICES}/{m}/driver")) for m in members)
        hit = cache.groups.get(group)
        if hit is None or hit[0] != key:
            hit = (key, group_status(sysfs, group, vfio_modules).viable)
            cache.groups[group] = hit
        bad += not hit[1]
    for stale in set(cache.groups) - set(groups):
        del cache.groups[stale]
    return bad


def variant_modules(ctx) -> tuple:
    return tuple(sorted(m for m in (normalise_module(x) for x in ctx.index.modules())
                        if m != CATCH_ALL))


def gather(ctx, cache: Optional[FactsCache] = None) -> Facts:
    cache = cache if cache is not None else FactsCache()
    devices = held_devices(ctx, cache)
    return Facts(version=__version__, kernel_release=ctx.root.kernel_release,
                 variant_modules=variant_modules(ctx), devices=tuple(devices),
                 groups_not_viable=groups_not_viable(ctx, devices, cache))
