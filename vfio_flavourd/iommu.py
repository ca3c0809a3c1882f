"""IOMMU group viability, as the kernel's vfio core judges it.

A group can be used through /dev/vfio/N only when every endpoint in it is
bound to a vfio driver or pci-stub, or to no driver; bridges do not count
(vfio_dev_driver_allowed and the group walk in drivers/vfio/group.c).
"""

from __future__ import annotations

import os

from . import pci
from ._record import REQUIRED, record
from .pci import is_vfio_driver
from .errors import DeviceGone, UnknownDevice
from .sysfs import Sysfs

NEUTRAL_DRIVERS = ("pci-stub",)


class GroupStatus(record("GroupStatus", (
        ("group", REQUIRED),
        ("members", REQUIRED),
        ("blockers", REQUIRED)))):      # ((address, driver), ...)
    __slots__ = ()

    @property
    def viable(self) -> bool:
        return self.group is not None and not self.blockers


def group_status(sysfs: Sysfs, group: str | None, vfio_modules=()) -> GroupStatus:
    if group is None:
        return GroupStatus(None, (), ())
    members = tuple(pci.iommu_group_members(sysfs, group))
    blockers = []
    for address in members:
        try:
            dev = pci.read_device(sysfs, address)
        except (DeviceGone, UnknownDevice):
            continue
        if dev.is_bridge or dev.driver is None or dev.driver in NEUTRAL_DRIVERS:
            continue
        if not is_vfio_driver(dev, vfio_modules):
            blockers.append((address, dev.driver))
    return GroupStatus(group, members, tuple(blockers))


def open_holders(sysfs: Sysfs, address: str, group: str | None) -> list:
    """[(pid, comm, path)] of processes holding the device's VFIO nodes open:
    its group's /dev/vfio/N, and its iommufd cdev /dev/vfio/devices/vfioX.
    A device in use by a VM must not be moved under it."""
    nodes = set()
    if group is not None:
        nodes.add(f"/dev/vfio/{group}")
    for cdev in sysfs.entries(f"sys/bus/pci/devices/{address}/vfio-dev"):
        nodes.add(f"/dev/vfio/devices/{cdev}")
    if not nodes:
        return []
    found = []
    for pid in sysfs.entries("proc"):
        if not pid.isdigit():
            continue
        for fd in sysfs.entries(f"proc/{pid}/fd"):
            try:
                target = os.readlink(sysfs.root.path(f"proc/{pid}/fd/{fd}"))
            except OSError:
                continue
            if target in nodes:
                comm = sysfs.read(f"proc/{pid}/comm") or "?"
                found.append((int(pid), comm, target))
                break
    return sorted(found)
