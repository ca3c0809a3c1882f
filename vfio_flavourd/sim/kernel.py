"""A simulated kernel: the PCI core's binding behaviour over a sysfs tree.

State lives in memory (HostState) and is written through to the tree
(Layout) at every change, so plain file reads see what the kernel would
show.  Writes reach it through `kernel.sysfs` (SimSysfs), module loads
through `kernel.loader` (SimModuleLoader).  The behaviour follows
drivers/base/dd.c (device_attach, driver_attach, really_probe),
drivers/base/bus.c and drivers/pci/{pci-driver,probe,remove,iov}.c; each
method names the function it models.
"""

from __future__ import annotations

import errno
import time
from contextlib import contextmanager
from typing import Callable, Dict, List, NamedTuple, Optional

from ..errors import ModprobeError
from ..root import Root
from . import catalog as cat
from . import faults as F
from . import uevent as ue
from .layout import Layout
from .matching import pci_match_device
from .model import SimDevice
from .probes import DEFAULT_PROBES, vfio_needs_group
from .state import HostState

AUTO = "auto"


class Op(NamedTuple):
    """One thing the kernel did: kind is write, modprobe, rmmod, probe,
    bind, unbind, add or remove; errno 0 means it succeeded."""
    kind: str
    target: str
    value: str = ""
    errno: int = 0


class Driver:
    """A registered struct pci_driver: the module's static ids plus the
    dynamic ids added through new_id."""

    def __init__(self, info: cat.ModuleInfo):
        self.info = info
        self.name = info.driver
        self.dynids: List[cat.PciId] = []

    def __repr__(self) -> str:
        return f"Driver({self.name} from {self.info.name})"

    def match(self, dev: SimDevice):
        return pci_match_device(self.name, self.info.ids, self.dynids, dev)


class SimKernel:
    def __init__(self, root_dir, catalog=None, *, state: Optional[HostState] = None):
        from .loader import SimModuleLoader
        from .scan import scan
        from .sysfs import SimSysfs
        self.root = Root(root_dir)
        self.catalog = dict(catalog or cat.CATALOG)
        self.state = state if state is not None else scan(self.root.dir, self.catalog)
        self.layout = Layout(str(self.root.dir))
        self.drivers: Dict[str, Driver] = {}
        for name in self.state.loaded:
            info = self.catalog[name]
            if info.driver:
                self.drivers[info.driver] = Driver(info)
        self.faults: List[F.Fault] = []
        self.probes: Dict[str, Callable] = dict(DEFAULT_PROBES)
        self.dmesg: List[str] = []
        self.ops: List[Op] = []
        self.uevents: List[ue.Uevent] = []
        self.time_spent = 0.0
        self.write_count = 0
        self._subscribers: List[Callable] = []
        self._queue: List[ue.Uevent] = []
        self._flushing = False
        self._seqnum = 0
        self._depth = 0
        self._removed: List[SimDevice] = []
        self._groups: Dict[int, int] = {}
        for d in self.state.devices.values():
            if d.iommu_group is not None:
                self._groups[d.iommu_group] = self._groups.get(d.iommu_group, 0) + 1
        self._group_hint = 0
        self.override_supported = True
        self.sysfs = SimSysfs(self)
        self.loader = SimModuleLoader(self)

    def __repr__(self) -> str:
        return f"SimKernel({str(self.root.dir)!r}, {len(self.state.devices)} devices)"

    # -- public helpers ----------------------------------------------------
    @property
    def devices(self) -> Dict[str, SimDevice]:
        return self.state.devices

    def device(self, address: str) -> SimDevice:
        return self.state.devices[address]

    @property
    def loaded_modules(self) -> List[str]:
        return list(self.state.loaded)

    def subscribe(self, callback: Callable[[ue.Uevent], None]) -> Callable[[], None]:
        """Deliver every later uevent to `callback`, in kernel order, once
        the operation that caused it has finished (a consumer never sees an
        add before the kernel's own probe of that device has run)."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def inject(self, *faults: F.Fault) -> None:
        for f in faults:
            if isinstance(f, F.OverrideMissing):
                self._drop_override_attr()
            self.faults.append(f)

    def set_probe(self, module: str, probe: Optional[Callable]) -> None:
        """Give MODULE's driver a probe(kernel, dev) -> errno; None restores
        the default."""
        name = cat.normalise(module)
        if probe is None:
            self.probes.pop(name, None)
            if name in DEFAULT_PROBES:
                self.probes[name] = DEFAULT_PROBES[name]
        else:
            self.probes[name] = probe

    def modprobe(self, module: str) -> None:
        """modprobe MODULE: its dependencies first, then the module; a PCI
        driver's registration attaches it to every unbound device it
        matches (bus_add_driver -> driver_attach, when drivers_autoprobe)."""
        with self.op():
            info = cat.lookup(module, self.catalog)
            if info is None:
                self.ops.append(Op("modprobe", module, "", errno.ENOENT))
                raise ModprobeError(module, f"modprobe: FATAL: Module {module} not found "
                                            f"in directory /lib/modules/{self.root.kernel_release}")
            try:
                self._insmod(info, module)
            except ModprobeError:
                self.ops.append(Op("modprobe", module, "", errno.EINVAL))
                raise
            self.ops.append(Op("modprobe", module))

    def rmmod(self, module: str) -> None:
        """modprobe -r MODULE: driver_unregister() releases every device
        the driver holds, then the module goes."""
        with self.op():
            info = cat.lookup(module, self.catalog)
            name = cat.normalise(module)
            if info is None or info.name not in self.state.loaded:
                raise ModprobeError(module, f"modprobe: FATAL: Module {name} is not in kernel.")
            if info.builtin:
                raise ModprobeError(module, f"modprobe: FATAL: Module {name} is builtin.")
            if any(info.name in self.catalog[m].deps for m in self.state.loaded):
                raise ModprobeError(module, f"modprobe: FATAL: Module {name} is in use.")
            if info.driver and info.driver in self.drivers:
                for d in list(self.state.devices.values()):
                    if d.driver == info.driver:
                        self._release(d)
                del self.drivers[info.driver]
                self.layout.remove_driver(info)
            self.layout.remove_module(info.name)
            if info.name == "vfio":
                self.layout.unlink("dev/vfio/vfio")
            self.state.loaded.remove(info.name)
            self.ops.append(Op("rmmod", name))

    def add_device(self, address: str, vendor: int, device: int, class_: int,
                   subsys=None, revision: int = 0, iommu_group=AUTO,
                   numa_node: int = -1) -> SimDevice:
        """Hotplug: pci_device_add() + pci_bus_add_device().  The add uevent
        is queued, then device_attach() probes the device straight away
        (drivers_autoprobe does not stop this), so a loaded host driver
        owns it before any uevent consumer hears of the add."""
        with self.op():
            if address in self.state.devices:
                raise ValueError(f"{address}: already present")
            where = self.state.bus_dirs.get(address[:7])
            if where is None:
                raise ValueError(f"{address}: no bus {address[:7]} on this host")
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

    # -- operations, time, uevents -------------------------------------------
    @contextmanager
    def op(self):
        """Brackets one kernel operation: its time goes to time_spent and
        its uevents go out when the outermost operation ends."""
        outer = self._depth == 0
        t0 = time.perf_counter() if outer else 0.0
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if outer:
                self.time_spent += time.perf_counter() - t0
                self._flush()

    def _emit(self, action: str, d: SimDevice, driver: Optional[str] = None) -> None:
        self._seqnum += 1
        ev = ue.make(action, d, self._seqnum, driver)
        self.uevents.append(ev)
        self._queue.append(ev)

    def _flush(self) -> None:
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._queue:
                ev = self._queue.pop(0)
                for cb in list(self._subscribers):
                    cb(ev)
        finally:
            self._flushing = False

    # -- binding (drivers/base/dd.c) -------------------------------------------
    def can_probe(self, d: SimDevice) -> bool:
        """pci_device_can_probe(): a VF probes only when its PF's
        sriov_drivers_autoprobe is set or the VF has a driver_override."""
        if not d.physfn:
            return True
        pf = self.state.devices.get(d.physfn)
        return pf is None or pf.sriov_autoprobe or d.override is not None

    def probe(self, drv: Driver, d: SimDevice) -> int:
        """really_probe() + pci_device_probe(): 0 when bound, else the
        probe's errno (positive)."""
        if not self.can_probe(d):
            self.ops.append(Op("probe", d.address, drv.name, errno.ENODEV))
            return errno.ENODEV
        err = 0
        for f in self.faults:
            if isinstance(f, F.ProbeFails):
                err = f.check(drv.name, d.address)
                if err:
                    break
        if not err and drv.info.vfio:
            err = vfio_needs_group(self, d)
        if not err:
            fn = self.probes.get(drv.info.name)
            err = fn(self, d) if fn else 0
        self.ops.append(Op("probe", d.address, drv.name, err))
        if err in (errno.ENODEV, errno.ENXIO):
            self.dmesg.append(f"{drv.name} {d.address}: probe with driver {drv.name} "
                              f"rejects match {-err}")
        elif err:
            self.dmesg.append(f"{drv.name} {d.address}: probe with driver {drv.name} "
                              f"failed with error {-err}")
        else:
            self._bind(d, drv)
        return err

    def device_attach(self, d: SimDevice) -> bool:
        """device_attach(): offer the device to each registered driver in
        registration order; a failed probe lets the next driver try."""
        if d.driver:
            return True
        for drv in list(self.drivers.values()):
            if drv.match(d) is not None and self.probe(drv, d) == 0:
                return True
        return False

    def driver_attach(self, drv: Driver) -> None:
        """driver_attach(): offer the driver every unbound device it
        matches, in bus order; probe errors are ignored."""
        for d in list(self.state.devices.values()):
            if d.driver is None and d.address in self.state.devices and drv.match(d) is not None:
                self.probe(drv, d)

    def _bind(self, d: SimDevice, drv: Driver) -> None:
        """driver_bound(): the driver link, the driver's device link, the
        KOBJ_BIND uevent; vfio_group_fops: the first vfio device of a group
        creates /dev/vfio/GROUP."""
        d.driver = drv.name
        self.layout.link_driver(d)
        self.layout.attr(d, "uevent")
        self.layout.attr(d, "enable")
        if drv.info.vfio and d.iommu_group is not None:
            self.layout.vfio_node(d.iommu_group, True)
        if d.children_owner == drv.name and not d.children_live:
            self._children(d, create=True)
        self.ops.append(Op("bind", d.address, drv.name))
        self._emit("bind", d)

    def _release(self, d: SimDevice) -> None:
        """device_release_driver(): the driver's remove() runs (a PF driver
        with sriov_configure disables SR-IOV there, destroying its VFs),
        the links go, then KOBJ_UNBIND."""
        name = d.driver
        if name is None:
            return
        drv = self.drivers.get(name)
        info = drv.info if drv else cat.ModuleInfo(name, name)
        if d.vfs and d.sriov_numvfs and info.sriov:
            self.sriov_disable(d)
        if d.children_owner == name and d.children_live:
            self._children(d, create=False)
        d.driver = None
        self.layout.unlink_driver(d, name)
        self.layout.attr(d, "uevent")
        self.layout.attr(d, "enable")
        if info.vfio and d.iommu_group is not None and not self._group_has_vfio(d.iommu_group):
            self.layout.vfio_node(d.iommu_group, False)
        self.ops.append(Op("unbind", d.address, name))
        self._emit("unbind", d, driver=name)

    def _group_has_vfio(self, group: int) -> bool:
        for o in self.state.devices.values():
            if o.iommu_group == group and o.driver:
                drv = self.drivers.get(o.driver)
                if drv and drv.info.vfio:
                    return True
        return False

    def _children(self, d: SimDevice, create: bool) -> None:
        """Interfaces and disks exist while their driver holds the device.
        Recreated ones come back down, unrouted and unmounted."""
        for n in d.nets:
            if create:
                n.up = n.routed = False
                self.layout.net(d, n)
            else:
                self.layout.remove_net(d, n)
        for k in d.disks:
            if create:
                self.layout.disk(d, k)
            else:
                self.layout.remove_disk(d, k)
        if d.console:
            if create:
                self.layout.console(d)
            else:
                self.layout.remove_console(d)
        d.children_live = create
        if d.nets:
            self.layout.proc_net(n for o in self.state.devices.values()
                                 if o.children_live for n in o.nets)

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
        if d.physfn:
            pf = self.state.devices.get(d.physfn)
            if pf and d.address in pf.vfs:
                self.layout.virtfn(pf, pf.vfs.index(d.address), None)
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

    # -- modules -------------------------------------------------------------
    def _insmod(self, info: cat.ModuleInfo, requested: str) -> None:
        if info.name in self.state.loaded:
            return
        for dep in info.deps:
            self._insmod(self.catalog[dep], requested)
        for f in self.faults:
            if isinstance(f, F.ModprobeFails):
                msg = f.check(info.name)
                if msg:
                    raise ModprobeError(requested, msg)
        self.state.loaded.append(info.name)
        if info.name == "vfio":
            self.layout.mkdir("dev/vfio")
            self.layout.write("dev/vfio/vfio", "", 0o666)
        if not info.driver:
            self.layout.module(info.name)
            return
        drv = Driver(info)
        self.drivers[drv.name] = drv
        self.layout.driver(info)
        if self.state.autoprobe:
            self.driver_attach(drv)

    # -- IOMMU group numbers (ida_alloc: the lowest free id) -----------------------
    def _alloc_group(self) -> int:
        g = self._group_hint
        while g in self._groups:
            g += 1
        self._groups[g] = 1
        self._group_hint = g + 1
        return g

    def _free_group(self, g: Optional[int]) -> None:
        if g is None or g not in self._groups:
            return
        self._groups[g] -= 1
        if self._groups[g] <= 0:
            del self._groups[g]
            self._group_hint = min(self._group_hint, g)

    def _drop_override_attr(self) -> None:
        self.override_supported = False
        self.layout.omit.add("driver_override")
        for d in self.state.devices.values():
            d.override = None
            self.layout.unlink(f"{d.sys_dir}/driver_override")
