"""Opening files so that no input can hang the tool or steer a write.

Reads: every file the tool reads is opened O_NONBLOCK, so a FIFO or a
device node put where a config file should be cannot block open(2), and is
checked to be a regular file before anything is read from it.

Writes: every file the tool creates is opened O_NOFOLLOW (a symlink planted
where a state file or lock should be is refused, not followed), and the
directory it is created in must resolve inside the root (Root.ensure_dir).
"""

from __future__ import annotations

import errno
import os
import stat

READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
CREATE_FLAGS = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def kind(mode: int) -> str:
    """What a file is, in words, for error messages."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


class NotRegularFile(OSError):
    """An input that is a FIFO, a device, a socket or a directory."""

    def __init__(self, path, mode: int):
        super().__init__(errno.EINVAL, f"{kind(mode)}, not a regular file", str(path))


def open_regular(path, extra_flags: int = 0) -> int:
    """A read-only descriptor of `path`, which must be a regular file."""
    fd = os.open(path, READ_FLAGS | extra_flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(path, st.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_fd(fd: int) -> bytes:
    """Everything left in an open descriptor."""
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def read_private(path) -> bytes | None:
    """A cache file's bytes, or None when it is not ours to trust: owned
    by someone else or writable by group or others.  Never follows a link.
    Raises OSError (FileNotFoundError included) like read_bytes."""
    fd = open_regular(path, os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        return read_fd(fd)
    finally:
        os.close(fd)


def read_bytes(path, extra_flags: int = 0) -> bytes:
    fd = open_regular(path, extra_flags)
    try:
        return read_fd(fd)
    finally:
        os.close(fd)


def read_text(path, encoding: str = "utf-8", errors: str = "strict",
              extra_flags: int = 0) -> str:
    """Raises OSError (NotRegularFile included) or UnicodeDecodeError."""
    return read_bytes(path, extra_flags).decode(encoding, errors)


def create(path, flags: int = os.O_WRONLY | os.O_TRUNC, mode: int = 0o644) -> int:
    """A descriptor of a file this tool creates or rewrites.  A symlink in
    its place fails with ELOOP; a directory with EISDIR."""
    return os.open(path, flags | CREATE_FLAGS, mode)


def write_new(path, data: bytes, mode: int = 0o644, exclusive: bool = False) -> None:
    flags = os.O_WRONLY | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = create(path, flags, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def replace_whole(path, tmp, data: bytes, mode: int = 0o644) -> None:
    """Write `path` whole or not at all: `tmp` (beside it) is created, never
    through a link, given `mode` whatever the umask, filled, fsynced and
    renamed over `path`.  On failure `tmp` is removed and the OSError raised."""
    try:
        fd = create(tmp, os.O_WRONLY | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def resolved(path) -> str:
    """os.path.realpath(path), resolved by the kernel: opened O_PATH (which
    neither reads nor blocks, whatever the file) and read back through
    /proc/self/fd, three system calls where realpath lstat()s every
    component (ten for a PCI device's sysfs path; 0.6 ms of each hotplug's
    guards under QEMU/TCG).  realpath's own answer where the path does not
    resolve or /proc is not there."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path)
    try:
        got = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        got = ""
    finally:
        os.close(fd)
    if not got.startswith("/") or got.endswith(" (deleted)"):
        return os.path.realpath(path)
    return got
