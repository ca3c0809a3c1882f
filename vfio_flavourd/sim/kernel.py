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
import threading
import time
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional

from ..root import Root
from . import catalog as cat
from . import faults as F
from . import uevent as ue
from .driver import Driver, Op
from .layout import Layout
from .lifecycle import Lifecycle
from .loader import Modules
from .model import SimDevice
from .probes import DEFAULT_PROBES, vfio_needs_group
from .state import HostState


class SimKernel(Lifecycle, Modules):
    def __init__(self, root_dir, catalog=None, *, state: Optional[HostState] = None):
        from .loader import SimModuleLoader
        from .scan import scan
        from .sysfs import SimSysfs
        self.root = Root(root_dir)
        self.catalog = dict(catalog or cat.CATALOG)
        self.state = state if state is not None else scan(self.root.dir, self.catalog)
        self.layout = Layout(str(self.root.dir))
        # scan() refused any device whose directory resolves outside the
        # root, and a builder's state names only directories it made.
        self.layout.known_inside(d.sys_dir for d in self.state.devices.values())
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
        self._lock = threading.RLock()
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

    # -- operations, time, uevents -------------------------------------------
    @contextmanager
    def op(self):
        """Brackets one kernel operation: its time goes to time_spent and
        its uevents go out when the outermost operation ends."""
        # One operation at a time, as the device core's locks make it: the
        # daemon's worker and a test's hotplug may call in from two threads.
        with self._lock:
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
