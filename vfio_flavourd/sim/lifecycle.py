"""Devices appearing and going: hotplug, remove/rescan and SR-IOV VFs
(drivers/pci/probe.c, remove.c, iov.c).  A mixin of SimKernel."""

from __future__ import annotations

from typing import Optional

from .driver import Op
from .model import SimDevice

AUTO = "auto"


class Lifecycle:
    def add_device(self, address: str, vendor: int, device: int, class_: int,
                   subsys=None, revision: int = 0, iommu_group=AUTO,
                   numa_node: Optional[int] = None) -> SimDevice:
        """Hotplug: pci_device_add() + pci_bus_add_device().  The add uevent
        is queued, then device_attach() probes the device straight away
        (drivers_autoprobe does not stop this), so a loaded host driver
        owns it before any uevent consumer hears of the add.  The NUMA node
        defaults to that of the bridge above."""
        with self.op():
            if address in self.state.devices:
                raise ValueError(f"{address}: already present")
            where = self.state.bus_dirs.get(address[:7])
            if where is None:
                raise ValueError(f"{address}: no bus {address[:7]} on this host")
            if numa_node is None:
                bridge = self.state.devices.get(where.rsplit("/", 1)[-1])
                numa_node = bridge.numa_node if bridge else -1
            sv, sd = subsys if subsys else (vendor, 0)
            group = self._alloc_group() if iommu_group == AUTO else iommu_group
            d = SimDevice(address, vendor, device, sv, sd, class_, f"{where}/{address}",
                          revision=revision, numa_node=numa_node, iommu_group=group)
            if group is not None and iommu_group != AUTO:
                self._groups[group] = self._groups.get(group, 0) + 1
            self._add(d)
            return d

    def remove_device(self, address: str) -> None:
        """Hot-unplug: pci_stop_and_remove_bus_device().  The hardware is
        gone; a rescan will not find it again."""
        with self.op():
            d = self.state.devices.get(address)
            if d is None:
                raise KeyError(address)
            self._remove(d, remember=False)

    # -- devices appear and go (drivers/pci/probe.c, remove.c, iov.c) -----------
    def _add(self, d: SimDevice) -> None:
        self.state.devices[d.address] = d
        self.layout.device(d)
        self.ops.append(Op("add", d.address))
        self._emit("add", d)
        self.device_attach(d)

    def _remove(self, d: SimDevice, remember: bool) -> None:
        """pci_stop_and_remove_bus_device(): children below a bridge first,
        then the driver is released, then the device is deleted."""
        if d.address not in self.state.devices:
            return
        if d.is_bridge:
            prefix = d.devpath + "/"
            for child in reversed([c for c in self.state.devices.values()
                                   if c.devpath.startswith(prefix)]):
                self._remove(child, remember)
        self._release(d)
        if d.vfs:
            self.sriov_disable(d)
        # A VF removed on its own leaves its PF's virtfnN link dangling: only
        # pci_iov_remove_virtfn() (SR-IOV disable) removes that link.
        self.layout.remove_device(d)
        del self.state.devices[d.address]
        self._free_group(d.iommu_group)
        self.ops.append(Op("remove", d.address))
        self._emit("remove", d)
        if remember and not d.physfn:
            self._removed.append(d)

    def rescan(self) -> None:
        """pci_rescan_bus(): functions removed through their `remove`
        attribute are found again, fresh: no driver, no override."""
        removed, self._removed = self._removed, []
        for old in reversed(removed):
            if old.address in self.state.devices:
                continue
            d = SimDevice(old.address, old.vendor, old.device, old.subvendor, old.subdevice,
                          old.class_, old.devpath, revision=old.revision,
                          numa_node=old.numa_node, iommu_group=old.iommu_group,
                          sriov_totalvfs=old.sriov_totalvfs, sriov_offset=old.sriov_offset,
                          sriov_stride=old.sriov_stride, sriov_vf_device=old.sriov_vf_device,
                          nets=old.nets, disks=old.disks, console=old.console,
                          children_owner=old.children_owner, children_live=False)
            if d.iommu_group is not None:
                self._groups[d.iommu_group] = self._groups.get(d.iommu_group, 0) + 1
            self._add(d)

    def sriov_enable(self, pf: SimDevice, n: int) -> None:
        """sriov_enable() -> pci_iov_add_virtfn() for each VF: the device is
        added, physfn/virtfnN linked, then pci_bus_add_device() probes it
        (pci_device_can_probe() applies sriov_drivers_autoprobe)."""
        parent = pf.devpath.rsplit("/", 1)[0]
        pf.vfs = []
        pf.sriov_numvfs = n
        self.layout.attr(pf, "sriov_numvfs")
        for i in range(n):
            addr = pf.vf_address(i)
            if addr[:7] not in self.state.bus_dirs:
                self.state.bus_dirs[addr[:7]] = parent      # virtfn_add_bus()
                self.layout.pci_bus(addr[:7], parent)
            group = self._alloc_group() if pf.iommu_group is not None else None
            vf = SimDevice(addr, pf.vendor, pf.sriov_vf_device, pf.subvendor, pf.subdevice,
                           pf.class_, f"{parent}/{addr}", revision=pf.revision,
                           numa_node=pf.numa_node, iommu_group=group, physfn=pf.address)
            pf.vfs.append(addr)
            self.state.devices[addr] = vf
            self.layout.device(vf)
            self.layout.virtfn(pf, i, vf)
            self.ops.append(Op("add", addr))
            self._emit("add", vf)
            self.device_attach(vf)

    def sriov_disable(self, pf: SimDevice) -> None:
        """sriov_disable() -> pci_iov_remove_virtfn(), last VF first."""
        for i in reversed(range(len(pf.vfs))):
            vf = self.state.devices.get(pf.vfs[i])
            if vf is not None:
                self._remove(vf, remember=False)
            self.layout.virtfn(pf, i, None)
        pf.vfs = []
        pf.sriov_numvfs = 0
        self.layout.attr(pf, "sriov_numvfs")

