"""What the fleet files (Prometheus, NFD, CDI) say, gathered in one pass:
the devices vfio-flavourd holds, from its state checked against sysfs; the
variant drivers this kernel offers; the IOMMU groups that are not viable.

Nothing here opens a device: sysfs links and attributes only.  The daemon
gathers again after every change (coalesced, see publish_daemon.py), so a
FactsCache keeps what cannot change while a device stays on one driver.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

from . import __version__
from .iommu import NEUTRAL_DRIVERS, group_status
from .modprobe import CATCH_ALL, module_of_driver, normalise_module
from .pci import PciDevice, is_vfio_driver
from .root import PCI_DEVICES


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
    """What a daemon need not read again at each round (1,000 VFs: a cold
    gather takes 0.37 s, a warm one 0.03 s): per state record, its content
    for one (mtime, size); per device, the facts read while it sat on one
    driver; per IOMMU group, its viability for one assignment of drivers to
    its members; per driver name, whether it is a vfio driver."""

    def __init__(self):
        self.records: dict = {}
        self.devices: dict = {}
        self.groups: dict = {}
        self.vfio_drivers: dict = {}


def state_records(ctx, cache: FactsCache) -> dict:
    """ctx.state.read(), re-reading only the records whose file changed."""
    state = ctx.state
    out = {}
    for address in state.addresses():
        try:
            st = os.stat(os.path.join(state.devices_dir, address + ".json"))
        except OSError:
            continue
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        hit = cache.records.get(address)
        if hit is None or hit[0] != key:
            hit = (key, state.get(address))
            cache.records[address] = hit
        if hit[1] is not None:
            out[address] = hit[1]
    for gone in set(cache.records) - set(out):
        del cache.records[gone]
    return out


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
    for address, rec in state_records(ctx, cache).items():
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
        # vfio-dev/vfioX is made during the vfio probe, before the driver
        # link (really_probe()), so it is there when the link is.
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
            # Every member unbound or on a vfio driver: viable, no more to
            # read.  Otherwise group_status judges (bridges do not count).
            easy = all(drv is None or drv in NEUTRAL_DRIVERS
                       or _is_vfio_driver(sysfs, drv, vfio_modules, cache) for _, drv in key)
            hit = (key, easy or group_status(sysfs, group, vfio_modules).viable)
            cache.groups[group] = hit
        bad += not hit[1]
    for stale in set(cache.groups) - set(groups):
        del cache.groups[stale]
    return bad


def _is_vfio_driver(sysfs, driver: str, vfio_modules, cache: FactsCache) -> bool:
    if driver not in cache.vfio_drivers:
        probe = PciDevice(address="", vendor=0, device=0, driver=driver,
                          driver_module=module_of_driver(sysfs, driver))
        cache.vfio_drivers[driver] = is_vfio_driver(probe, vfio_modules)
    return cache.vfio_drivers[driver]


def variant_modules(ctx) -> tuple:
    return tuple(sorted(m for m in (normalise_module(x) for x in ctx.index.modules())
                        if m != CATCH_ALL))


def gather(ctx, cache: Optional[FactsCache] = None) -> Facts:
    cache = cache if cache is not None else FactsCache()
    devices = held_devices(ctx, cache)
    return Facts(version=__version__, kernel_release=ctx.root.kernel_release,
                 variant_modules=variant_modules(ctx), devices=tuple(devices),
                 groups_not_viable=groups_not_viable(ctx, devices, cache))
