"""The ModuleLoader interface, served by the simulated kernel."""

from __future__ import annotations

import errno

from ..errors import ModprobeError
from ..modprobe import ModuleLoader, valid_module_name
from . import catalog as cat
from . import faults as F
from .driver import Driver, Op


class SimModuleLoader(ModuleLoader):
    """load() is `modprobe -- MODULE`, unload() is `modprobe -r -- MODULE`.
    Errors carry modprobe's own text, as ModuleLoader reports it (the last
    line modprobe printed)."""

    def __init__(self, kernel):
        super().__init__(command=["modprobe"])
        self.kernel = kernel

    def __repr__(self) -> str:
        return f"SimModuleLoader({self.kernel!r})"

    def load(self, module: str) -> None:
        if not valid_module_name(module):
            raise ModprobeError(module, "not a valid module name")
        self.kernel.modprobe(module)

    def unload(self, module: str) -> None:
        if not valid_module_name(module):
            raise ModprobeError(module, "not a valid module name")
        self.kernel.rmmod(module)


class Modules:
    """Loading and unloading modules: a mixin of SimKernel."""

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

