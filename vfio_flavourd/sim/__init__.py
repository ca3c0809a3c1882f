"""A simulated Linux PCI core for tests and examples: a catalog of real
modules, a builder of kernel-shaped sysfs trees, and a kernel model that
binds, unbinds, probes and hotplugs over such a tree.  Nothing here touches
the machine's own /sys or loads a module."""

from .catalog import CATALOG, ModuleInfo, PciId, modules_alias
from .faults import (Fault, Hang, ModprobeFails, OverrideLocked, OverrideMissing, ProbeFails,
                     UnbindBusy, Vanish, WriteFails)
from .kernel import Op, SimKernel
from .loader import SimModuleLoader
from .sysfs import SimSysfs
from .tree import AUTO, HostBuilder
from .uevent import Uevent

__all__ = [
    "AUTO", "CATALOG", "Fault", "Hang", "HostBuilder", "ModprobeFails", "ModuleInfo", "Op",
    "OverrideLocked", "OverrideMissing", "PciId", "ProbeFails", "SimKernel",
    "SimModuleLoader", "SimSysfs", "UnbindBusy", "Uevent", "Vanish", "WriteFails",
    "modules_alias",
]
