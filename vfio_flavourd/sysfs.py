"""Kernel I/O: every read and write of sysfs goes through here.

Paths are relative to the Root ("sys/bus/pci/devices/0000:01:00.0/vendor").
The simulated kernel (vfio_flavourd.sim) subclasses Sysfs and overrides
write() to model what the kernel does on each write; reads stay plain file
reads, so the code under test reads the same way it does in production.
"""

from __future__ import annotations

import errno as _errno
import os

from .errors import SysfsError
from .root import Root


class Sysfs:
    def __init__(self, root: Root):
        self.root = root

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root.dir})"

    def read(self, rel: str) -> str | None:
        """The attribute's value without the trailing newline, or None when it
        does not exist (old kernels and bridges lack many attributes)."""
        try:
            data = _read_all(self.root.fspath(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno in (_errno.ENODEV, _errno.ENXIO):
                return None
            raise SysfsError(rel, e.strerror or str(e), e.errno) from None
        return data.decode("ascii", "replace").rstrip("\n")

    def link(self, rel: str) -> str | None:
        """The last component of a symlink's target ("driver" -> "vfio-pci"),
        or None when there is no such link."""
        try:
            return os.path.basename(os.readlink(self.root.fspath(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno == _errno.EINVAL:  # not a link
                return None
            raise SysfsError(rel, e.strerror or str(e), e.errno) from None

    def entries(self, rel: str) -> list:
        """Sorted names in a directory; [] when it does not exist."""
        try:
            return sorted(os.listdir(self.root.fspath(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:    # a link loop, no permission: say which
            raise SysfsError(rel, e.strerror or str(e), e.errno) from None

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.root.fspath(rel))

    def is_writable(self, rel: str) -> bool:
        return os.access(self.root.fspath(rel), os.W_OK)

    def write(self, rel: str, value: str) -> None:
        """One write() of `value` to a sysfs attribute.  The kernel reports
        errors from the store method as the write's errno."""
        path = self.write_path(rel)
        try:
            # No attribute is a symlink: one here was not put there by sysfs.
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise SysfsError(rel, f"cannot open for writing: {e.strerror}", e.errno) from None
        try:
            os.write(fd, value.encode("ascii"))
        except OSError as e:
            raise SysfsError(rel, f"write of {value!r} failed: {e.strerror}", e.errno) from None
        finally:
            os.close(fd)

    def write_path(self, rel: str) -> str:
        """Where a write of `rel` goes: under sys/, and inside the root."""
        if not rel.startswith("sys/"):
            raise SysfsError(rel, "refusing to write outside sys/")
        path = self.root.fspath(rel)
        self.check_inside(rel, path)
        return path

    def check_inside(self, rel: str, path: str) -> None:
        """Refuse a write whose directory resolves outside the root (a
        device directory linked out of a copied tree).  Free on "/"."""
        from .root import RootEscape
        try:
            self.root.check_inside(path)
        except RootEscape as e:
            raise SysfsError(rel, str(e).split(": ", 1)[1]) from None

    def write_timed(self, rel: str, value: str, seconds: float, on_slow=None,
                    then=()) -> None:
        """write(), by a helper that is abandoned after `seconds`
        (deadline.Stuck): for unbind and probe writes, which run a driver's
        remove() or probe() and may never return.  then=[(rel, value), ...]:
        the timed writes asked for next, in turn, if this one succeeds,
        which the helper may make at once (deadline.in_child)."""
        path = self.write_path(rel)
        from .deadline import in_child
        in_child(path, rel, value, seconds, on_slow,
                 then=[(self.write_path(r), v) for r, v in then])


# sysfs attributes are at most a page; anything that keeps giving more
# (a device node planted in a copied tree) is not an attribute.
_MAX_ATTR = 1 << 16


def _read_all(path: str) -> bytes:
    """The whole file, with plain read(2)s: half the cost of open() and its
    text wrapper, which a scan of thousands of devices pays 13 times each.
    O_NONBLOCK: a FIFO in a copied tree opens at once and reads as empty or
    EAGAIN instead of blocking; only then (and for a read past a page) is
    the file's type looked at, so real sysfs pays no extra fstat."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        try:
            data = os.read(fd, 8192)
        except BlockingIOError:
            data = b""
        if not data or len(data) == 8192:
            _check_regular(fd, path)
        if len(data) == 8192:
            while True:
                more = os.read(fd, 8192)
                if not more:
                    break
                data += more
                if len(data) > _MAX_ATTR:
                    raise OSError(_errno.EFBIG, "larger than any sysfs attribute")
        return data
    finally:
        os.close(fd)


def _check_regular(fd: int, path: str) -> None:
    import stat
    from .safeio import NotRegularFile
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(path, mode)
