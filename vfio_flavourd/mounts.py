"""The kernel's tables of what is mounted and what swaps: proc/self/mountinfo
and proc/swaps, parsed once per guard run."""

from __future__ import annotations

from ._record import REQUIRED, record
from .errors import SysfsError


def unescape(field: str) -> str:
    """show_mountinfo() writes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field        # the usual case, without importing re
    import re
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


# devnum: "major:minor" (0:NN for btrfs, ZFS, 9p, virtiofs); superopts: a tuple.
class Mount(record("Mount", tuple((f, REQUIRED) for f in (
        "devnum", "mountpoint", "fstype", "source", "superopts")))):
    __slots__ = ()

    @property
    def over_virtio(self) -> bool:
        return "trans=virtio" in self.superopts


def parse_mountinfo(text: str) -> list:
    """Every well-formed line of mountinfo (proc_pid_mountinfo(5)): ID PARENT
    MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS."""
    out = []
    for line in text.splitlines():
        f = line.split(" ")
        try:
            sep = f.index("-", 6)
        except ValueError:
            continue
        if len(f) < sep + 3:
            continue
        out.append(Mount(f[2], unescape(f[4]), f[sep + 1], unescape(f[sep + 2]),
                         tuple(f[sep + 3].split(",")) if len(f) > sep + 3 else ()))
    return out


class Tables:
    """mountinfo and swaps of the root, read on first use.  A table that
    exists but cannot be read raises SysfsError: a guard that cannot see
    what is mounted cannot say a device is free."""

    def __init__(self, sysfs):
        self.sysfs = sysfs
        self._mounts = None
        self._swaps = None

    @property
    def mounts(self) -> list:
        if self._mounts is None:
            self._mounts = parse_mountinfo(self._read("proc/self/mountinfo"))
        return self._mounts

    @property
    def swaps(self) -> set:
        """Device names (basenames) of active swap areas."""
        if self._swaps is None:
            lines = self._read("proc/swaps").splitlines()[1:]
            self._swaps = {unescape(line.split()[0]).rsplit("/", 1)[-1]
                           for line in lines if line.split()}
        return self._swaps

    def _read(self, rel: str) -> str:
        text = self.sysfs.read(rel)
        if text is None:
            if self.sysfs.root.is_host:
                raise SysfsError(rel, "missing (is /proc mounted?)")
            return ""       # a copied root without proc: nothing to see
        return text

    def mounted(self, devnum: str, paths: tuple) -> list:
        """Mounts of a block device: by its number, or by source path, which
        is the only link for btrfs and ZFS (they show an anonymous 0:NN)."""
        return [m for m in self.mounts if m.devnum == devnum or m.source in paths]
