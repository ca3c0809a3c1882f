"""Is a block device below a PCI device in use?  Asked of the kernel itself
where possible: an exclusive open fails with EBUSY for every mounted
filesystem, active swap, and md, dm, btrfs, ZFS and bcache member (the test
mkfs and wipefs rely on; blkdev_get_by_dev() with a holder, block/bdev.c).
A copied root (--root DIR) has no devices to open, so there the kernel's
tables stand in: mountinfo, swaps, holders and btrfs's member lists.
"""

from __future__ import annotations

import errno
import os
import stat

from .errors import SysfsError
from .mounts import Tables

EXCLUSIVE = "exclusive open"
TABLES = "copied-root tables: mountinfo, swaps, holders, btrfs devices"


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _is_devnum(text: str) -> bool:
    """ "major:minor", as a block device's `dev` attribute reads."""
    major, sep, minor = text.partition(":")
    return bool(sep) and _digits(major) and _digits(minor)


def _is_nvme_namespace(name: str) -> bool:
    """nvmeXnY: a namespace, not a controller (nvmeX) or partition (nvmeXnYpZ)."""
    ctrl, sep, ns = name[4:].partition("n")
    return name.startswith("nvme") and bool(sep) and _digits(ctrl) and _digits(ns)


class Undecided(Exception):
    """A guard could not tell whether the device is in use."""


def method(sysfs) -> str:
    """How `in use` is decided on this root, for `explain`."""
    return EXCLUSIVE if sysfs.root.is_host else TABLES


def exclusive_open(name: str, devnum: str, dev_dir: str = "/dev") -> bool:
    """True when the kernel holds the block device exclusively (EBUSY).
    Opens /dev/NAME when it is that very device, else a node made with
    mknod in a private directory.  Any other failure raises Undecided."""
    major, minor = (int(x) for x in devnum.split(":"))
    rdev = os.makedev(major, minor)
    node = os.path.join(dev_dir, name)
    scratch = None
    try:
        st = os.stat(node)
        usable = stat.S_ISBLK(st.st_mode) and st.st_rdev == rdev
    except OSError:
        usable = False
    try:
        if not usable:
            import tempfile
            scratch = tempfile.mkdtemp(prefix="vfio-flavourd-guard-")   # mode 0700
            node = os.path.join(scratch, name)
            try:
                os.mknod(node, stat.S_IFBLK | 0o600, rdev)
            except OSError as e:
                raise Undecided(f"/dev/{name} is missing and mknod {devnum} failed: "
                                f"{e.strerror}") from None
        try:
            fd = os.open(node, os.O_RDONLY | os.O_EXCL | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.EBUSY:
                return True
            raise Undecided(f"exclusive open of /dev/{name} ({devnum}) failed: "
                            f"{e.strerror}") from None
        os.close(fd)
        return False
    finally:
        if scratch is not None:
            import shutil
            shutil.rmtree(scratch, ignore_errors=True)


def multipath_heads(sysfs, controllers: set) -> dict:
    """{name: devnum} of native NVMe multipath head disks (nvme-subsysN/nvmeXnY)
    whose subsystem reaches one of `controllers` (nvme0, ...): the path
    devices below the PCI device (nvme0c0n1) have no node of their own."""
    heads = {}
    for subsys in sysfs.entries("sys/class/nvme-subsystem"):
        base = f"sys/class/nvme-subsystem/{subsys}"
        names = sysfs.entries(base)
        if not controllers.intersection(names):
            continue
        for n in names:
            devnum = sysfs.read(f"{base}/{n}/dev") if _is_nvme_namespace(n) else None
            if devnum:
                heads[n] = devnum
    return heads


def _btrfs_members(sysfs) -> dict:
    """{device name: [every member of its btrfs filesystem]}."""
    out = {}
    for fsid in sysfs.entries("sys/fs/btrfs"):
        members = sysfs.entries(f"sys/fs/btrfs/{fsid}/devices")
        for m in members:
            out[m] = members
    return out


class StorageGuard:
    """Reasons not to take away the block devices `disks` ({name: devnum})."""

    def __init__(self, sysfs, opener=exclusive_open, host=None, tables=None):
        self.sysfs = sysfs
        # Only the real / has device nodes to open (tests set `host`).
        self.host = sysfs.root.is_host if host is None else host
        self.tables = Tables(sysfs) if tables is None else tables
        self.opener = opener
        self._btrfs = None

    def uses(self, name: str, devnum: str) -> list:
        """What the tables say holds the device: "btrfs mounted on /srv",
        "active swap", "held by dm-0", "a member of a btrfs filesystem"."""
        if self._btrfs is None:
            self._btrfs = _btrfs_members(self.sysfs)
        members = self._btrfs.get(name, [name])
        paths = tuple(f"/dev/{m}" for m in members)
        out = [f"{m.fstype} mounted on {m.mountpoint}"
               for m in self.tables.mounted(devnum, paths)]
        if name in self.tables.swaps:
            out.append("active swap")
        holders = self.sysfs.entries(f"sys/class/block/{name}/holders") or \
            self.sysfs.entries(f"sys/block/{name}/holders")
        if holders:
            out.append(f"held by {', '.join(holders)} (md, LVM or dm member)")
        if name in self._btrfs and not out:
            out.append("a member of a btrfs filesystem")
        return list(dict.fromkeys(out))

    def check(self, disks: dict) -> list:
        reasons = []
        host = self.host
        for name, devnum in sorted(disks.items()):
            if not _is_devnum(devnum or ""):
                reasons.append(f"/dev/{name}: cannot tell whether it is in use "
                               f"(its dev attribute reads {devnum!r})")
                continue
            try:
                uses = self.uses(name, devnum)
                busy = self.opener(name, devnum) if host else bool(uses)
            except (Undecided, SysfsError) as e:
                reasons.append(f"/dev/{name}: cannot tell whether it is in use ({e})")
                continue
            how = "exclusive open: busy" if host else "copied root: kernel tables"
            if busy and uses:
                reasons.append(f"/dev/{name} carries {'; '.join(uses)} ({how})")
            elif busy:
                reasons.append(f"/dev/{name} is held exclusively by the kernel ({how})")
            elif uses:
                # The open succeeded, yet a table names a user: trust the
                # more careful answer.
                reasons.append(f"/dev/{name} carries {'; '.join(uses)} "
                               "(mountinfo; the exclusive open succeeded)")
        return reasons
