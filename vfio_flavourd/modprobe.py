"""Loading kernel modules, and mapping module names to driver names."""

from __future__ import annotations

import os

from .errors import ModprobeError
from .root import SYS_MODULE, Root
from .sysfs import Sysfs

# What a module name may hold (no regex: `re` alone costs a one-shot
# command half a millisecond and more of imports).
_MODULE_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
ENV_MODPROBE = "VFIO_FLAVOURD_MODPROBE"
# vfio-pci's module: the catch-all every variant is preferred over.
CATCH_ALL = "vfio_pci"


def normalise_module(name: str) -> str:
    """kmod treats '-' and '_' in module names as the same character; so do we
    when comparing.  (Driver names are a different namespace: never
    normalise those.)"""
    return name.replace("-", "_")


def valid_module_name(name: str) -> bool:
    return bool(name) and _MODULE_NAME_CHARS.issuperset(name)


# The PCI driver name a module registers, where it is not the module's own
# name.  In-tree variant drivers set .name = KBUILD_MODNAME, which is the
# module name with '-' read as '_' (drivers/vfio/pci/*/main.c); vfio_pci
# names its driver "vfio-pci" (drivers/vfio/pci/vfio_pci.c) and xe_vfio_pci
# "xe-vfio-pci".  Native udev rules must write driver_override before the
# module is loaded, so they cannot ask sys/module; this table is the one
# place that knows.  tests/vm checks it against the real kernel, and the
# daemon still reads the bound driver back after every bind.
DRIVER_NAMES = {"vfio_pci": "vfio-pci", "xe_vfio_pci": "xe-vfio-pci"}


def expected_driver_name(module: str) -> str:
    """The driver name `module` registers, known without loading it."""
    module = normalise_module(module)
    return DRIVER_NAMES.get(module, module)


class ModuleLoader:
    """Runs modprobe as an argv list, with "--" before the module name."""

    def __init__(self, command: "list[str] | None" = None, timeout: float = 60.0):
        # Found when first needed: finding it imports shutil, and most
        # commands load no module at all.
        self._command = None if command is None else list(command)
        self.timeout = timeout

    @property
    def command(self) -> list:
        if self._command is None:
            import shlex
            self._command = shlex.split(os.environ.get(ENV_MODPROBE, "")) or [find_modprobe()]
        return self._command

    def __repr__(self) -> str:
        return f"ModuleLoader({self.command!r})"

    def load(self, module: str) -> None:
        if not valid_module_name(module):
            raise ModprobeError(module, "not a valid module name")
        import subprocess  # only when a module really has to be loaded
        argv = [*self.command, "--", module]
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=self.timeout)
        except FileNotFoundError:
            raise ModprobeError(module, f"{self.command[0]}: command not found") from None
        except subprocess.TimeoutExpired:
            raise ModprobeError(module, f"timed out after {self.timeout:.0f} s") from None
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise ModprobeError(module, msg[-1] if msg else f"exit status {proc.returncode}")


def find_modprobe() -> str:
    """modprobe's full path.  udevd runs programs with no PATH at all, so the
    callout would otherwise fail with "command not found" (seen on the real
    kernel tier)."""
    import shutil
    path = os.environ.get("PATH") or ""
    return shutil.which("modprobe", path=path + ":/usr/sbin:/sbin:/usr/bin:/bin") or "modprobe"


def driver_names(sysfs: Sysfs, module: str) -> list:
    """PCI driver names a loaded module registers, from
    sys/module/MODULE/drivers/pci:NAME (module vfio_pci registers vfio-pci).
    [] when the module is not loaded or registers no PCI driver."""
    base = f"{SYS_MODULE}/{normalise_module(module)}/drivers"
    return [e[len("pci:"):] for e in sysfs.entries(base) if e.startswith("pci:")]


def module_of_driver(sysfs: Sysfs, driver: str) -> str | None:
    """The module behind a bound driver, from sys/bus/pci/drivers/NAME/module;
    None for built-in drivers that have no module link."""
    return sysfs.link(f"sys/bus/pci/drivers/{driver}/module")
