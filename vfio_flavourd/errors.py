"""The one exception tree.  Every error a user can cause is a FlavourdError;
the CLI prints its str() and exits non-zero, never a traceback."""

from __future__ import annotations


class FlavourdError(Exception):
    """Base of every error vfio-flavourd reports to a user."""


class UsageError(FlavourdError):
    """A bad option, address or argument on the command line."""


class PolicyError(FlavourdError):
    """The policy is broken.  Carries every problem found, not only the first."""

    def __init__(self, problems, total=None):
        self.problems = list(problems)
        # How many there were: the list may hold only the first of them.
        self.total = len(self.problems) if total is None else total
        super().__init__("\n".join(str(p) for p in self.problems))


class SysfsError(FlavourdError):
    """A read or write under sysfs failed."""

    def __init__(self, path, message, errno=None):
        self.path = str(path)
        self.errno = errno
        super().__init__(f"{self.path}: {message}")


class DeviceGone(SysfsError):
    """The device disappeared (hot-unplug) while we were looking at it."""

    def __init__(self, address):
        self.address = address
        FlavourdError.__init__(self, f"{address}: device is gone (removed or hot-unplugged)")
        self.path = address
        self.errno = None


class UnknownDevice(FlavourdError):
    def __init__(self, address):
        self.address = address
        super().__init__(f"{address}: no such PCI device")


class ModprobeError(FlavourdError):
    """Loading a kernel module failed."""

    def __init__(self, module, message):
        self.module = module
        super().__init__(f"modprobe {module}: {message}")


class ProbeRunning(Exception):
    """Not a FlavourdError: nothing failed and nothing was done.  The
    kernel's own probe of a device just added had not ended when its guards
    were to be asked (Binder.await_probe); the device is left to the bind
    uevent that probe sends."""

    def __init__(self, address):
        self.address = address
        super().__init__(f"{address}: the kernel is still probing it")
