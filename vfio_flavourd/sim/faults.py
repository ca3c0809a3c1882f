"""Fault injection for the simulated kernel.

Each fault is a small object the kernel consults at one kind of step; a
hypothesis strategy (strategies.py) draws lists of them.  `times` limits how
often a fault fires (None: every time); a fault that has fired its last time
stays in the list, inert, so tests can inspect `fired`.
"""

from __future__ import annotations

import errno as _errno
from fnmatch import fnmatchcase
from typing import Optional


class Fault:
    times: Optional[int] = None

    def __init__(self, times: Optional[int] = None):
        self.times = times
        self.fired = 0

    def _fire(self) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True

    def __repr__(self) -> str:
        fields = {k: v for k, v in vars(self).items() if k != "fired" and v is not None}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"


def _match(pattern: Optional[str], value: Optional[str]) -> bool:
    return pattern is None or (value is not None and fnmatchcase(value, pattern))


class ModprobeFails(Fault):
    """modprobe MODULE fails (as when the module's init returns an error)."""

    def __init__(self, module: str, message: Optional[str] = None, times: Optional[int] = None):
        super().__init__(times)
        self.module = module.replace("-", "_")
        self.message = message

    def check(self, module: str) -> Optional[str]:
        if module.replace("-", "_") == self.module and self._fire():
            return self.message or f"modprobe: ERROR: could not insert '{self.module}': Invalid argument"
        return None


class ProbeFails(Fault):
    """DRIVER's probe() returns -ERRNO (only on ADDRESS, a glob, if given)."""

    def __init__(self, driver: str, address: Optional[str] = None, errno: int = _errno.EIO,
                 times: Optional[int] = None):
        super().__init__(times)
        self.driver, self.address, self.errno = driver, address, errno

    def check(self, driver: str, address: str) -> int:
        if driver == self.driver and _match(self.address, address) and self._fire():
            return self.errno
        return 0


class UnbindBusy(Fault):
    """A write to drivers/DRIVER/unbind returns EBUSY."""

    def __init__(self, driver: Optional[str] = None, address: Optional[str] = None,
                 times: Optional[int] = None):
        super().__init__(times)
        self.driver, self.address = driver, address

    def check(self, driver: str, address: str) -> int:
        if _match(self.driver, driver) and _match(self.address, address) and self._fire():
            return _errno.EBUSY
        return 0


class WriteFails(Fault):
    """A write whose path matches PATH (a glob on the root-relative path)
    returns ERRNO; with `nth`, only the nth sysfs write (1-based)."""

    def __init__(self, path: str = "*", errno: int = _errno.EIO, nth: Optional[int] = None,
                 times: Optional[int] = None):
        super().__init__(times)
        self.path, self.errno, self.nth = path, errno, nth

    def check(self, rel: str, count: int) -> int:
        if (self.nth is None or self.nth == count) and fnmatchcase(rel, self.path) and self._fire():
            return self.errno
        return 0


class Vanish(Fault):
    """The device ADDRESS is hot-unplugged right before or right after the
    nth sysfs write (1-based)."""

    def __init__(self, address: str, at_write: int = 1, when: str = "before"):
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        super().__init__(1)
        self.address, self.at_write, self.when = address, at_write, when

    def check(self, count: int, when: str) -> Optional[str]:
        if count == self.at_write and when == self.when and self._fire():
            return self.address
        return None


class OverrideMissing(Fault):
    """driver_override does not exist (kernels before 3.16): the attribute
    is absent on every device, present and future."""


class OverrideLocked(Fault):
    """driver_override exists but cannot be written: opening it for writing
    fails with ERRNO (EACCES; EROFS for a read-only /sys in a container;
    EPERM).  ADDRESS limits it to some devices."""

    def __init__(self, address: Optional[str] = None, errno: int = _errno.EACCES):
        super().__init__(None)
        self.address, self.errno = address, errno

    def check(self, address: str) -> int:
        if _match(self.address, address):
            return self.errno
        return 0


class Hang(Fault):
    """A write whose path matches PATH (a glob) and whose value matches
    VALUE blocks, as a driver's remove() that never finishes does (9p's
    p9_virtio_remove with a share mounted), until release() is called; then
    the write is carried out.  It blocks outside the kernel's lock, so other
    devices' writes go on meanwhile."""

    def __init__(self, path: str = "*", value: Optional[str] = None,
                 times: Optional[int] = 1):
        import threading
        super().__init__(times)
        self.path, self.value = path, value
        self._released = threading.Event()
        self.waiting = threading.Event()      # set once a write is blocked

    def check(self, rel: str, value: str) -> bool:
        return (fnmatchcase(rel, self.path) and _match(self.value, value.strip())
                and self._fire())

    def block(self) -> None:
        self.waiting.set()
        self._released.wait()

    def release(self) -> None:
        self._released.set()
