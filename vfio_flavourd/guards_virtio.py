"""Filesystems and consoles with no block device, carried by a virtio
transport: 9p shares (9pnet_virtio's `mount_tag` on the virtioN device),
virtio-fs (sys/fs/virtiofs/N/{tag,device}) and virtio consoles.  Unbinding
the transport under a mounted 9p share makes the kernel wait for ever in
p9_virtio_remove (net/9p/trans_virtio.c: "waiting for device in use")."""

from __future__ import annotations

import errno
import os

from . import safeio
from .errors import SysfsError



def _is_virtio(name: str) -> bool:
    """virtioN, a virtio transport's child device."""
    return name.startswith("virtio") and name[6:].isascii() and name[6:].isdigit()


def transports(below) -> list:
    """(name, path, tagged) of the virtioN devices among a PCI device's
    descendants (guards.Node); tagged: it has a mount_tag, of whatever kind
    (a directory there is read, and refused, as unreadable)."""
    dirs = {node[1] for node in below}
    return sorted((name, path, "mount_tag" in entries or f"{path}/mount_tag" in dirs)
                  for name, path, entries in below if _is_virtio(name))


def _read(path: str):
    """An attribute's text; None when absent.  Never blocks (safeio): a
    FIFO planted in a copied tree is an error, not a hang."""
    try:
        return safeio.read_text(path, errors="replace").rstrip("\n\0")
    except FileNotFoundError:
        return None


def _share(address: str, kind: str, tag: str, mounts) -> list:
    return [f"virtio transport {address} carries {kind} share '{tag}' mounted on {m.mountpoint}"
            for m in mounts]


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8


def test_mount_9p(tag: str) -> bool:
    """True when the 9p channel `tag` is in use.  9pnet_virtio lets a
    channel be mounted once at a time (p9_virtio_create: EBUSY when
    `inuse`), which makes a read-only mount in a private directory, undone
    at once, the kernel's own answer, and the only one for a share mounted
    where mountinfo cannot show it (under an overlay's lower layers after
    switch_root, or in another mount namespace).  Raises Undecided."""
    import ctypes
    import tempfile
    from .guards_storage import Undecided
    libc = ctypes.CDLL(None, use_errno=True)
    where = tempfile.mkdtemp(prefix="vfio-flavourd-9p-")
    try:
        rc = libc.mount(tag.encode(), where.encode(), b"9p",
                        ctypes.c_ulong(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC),
                        b"trans=virtio")
        if rc == 0:
            libc.umount2(where.encode(), 2)     # MNT_DETACH
            return False
        err = ctypes.get_errno()
        if err == errno.EBUSY:
            return True
        raise Undecided(f"a test mount of it failed: {os.strerror(err)}")
    finally:
        try:
            os.rmdir(where)
        except OSError:
            pass


def check_9p(address: str, virtio: list, tables, probe=None) -> list:
    """`probe`: test_mount_9p on the real root, None on a copied one."""
    from .guards_storage import Undecided
    reasons = []
    for name, path, tagged in virtio:
        if not tagged:
            continue        # 9pnet_virtio makes it: a transport it does not drive
        try:
            tag = _read(os.path.join(path, "mount_tag"))
        except OSError as e:
            reasons.append(f"virtio transport {address}: cannot read {name}/mount_tag "
                           f"({e.strerror}), so cannot tell whether a 9p share is mounted")
            continue
        if tag is None:
            continue
        mounts = [m for m in tables.mounts
                  if m.fstype == "9p" and m.source == tag and m.over_virtio]
        reasons += _share(address, "9p", tag, mounts)
        if mounts or probe is None:
            continue
        try:
            busy = probe(tag)
        except Undecided as e:
            reasons.append(f"virtio transport {address}: cannot tell whether 9p share "
                           f"'{tag}' is mounted ({e})")
            continue
        if busy:
            reasons.append(f"virtio transport {address} carries 9p share '{tag}', mounted "
                           "where this mount namespace cannot see it (test mount: busy)")
    return reasons


def check_virtiofs(sysfs, address: str, top: str, tables) -> list:
    """sys/fs/virtiofs/N: `tag`, and `device` leading to the virtioN device."""
    reasons = []
    for n in sysfs.entries("sys/fs/virtiofs"):
        base = f"sys/fs/virtiofs/{n}"
        where = safeio.resolved(sysfs.root.fspath(f"{base}/device"))
        if not where.startswith(top + "/"):
            continue
        tag = sysfs.read(f"{base}/tag")
        if tag is None:
            reasons.append(f"virtio transport {address}: virtio-fs instance {n} has no "
                           "readable tag, so cannot tell whether it is mounted")
            continue
        reasons += _share(address, "virtio-fs", tag, [
            m for m in tables.mounts if m.fstype == "virtiofs" and m.source == tag])
    return reasons


def check_console(sysfs, address: str, below, virtio: list) -> list:
    """A tty below the device that is an active console, or a virtio
    console transport while an hvc is active: hvc ttys are virtual devices
    (drivers/tty/hvc), so sysfs does not say which transport carries them."""
    active = (sysfs.read("sys/class/tty/console/active") or "").split()
    if not active:
        return []
    ttys = {name for name, *_ in below if name in active}
    if ttys:
        return [f"{address} carries the active console {', '.join(sorted(ttys))}"]
    hvc = [t for t in active if t.startswith("hvc")]
    if not hvc:
        return []
    for name, path, _tagged in virtio:
        driver = os.path.basename(os.readlink(os.path.join(path, "driver"))) \
            if os.path.islink(os.path.join(path, "driver")) else None
        if driver == "virtio_console":
            return [f"virtio transport {address} is a virtio console ({name}) and the "
                    f"active console is {', '.join(hvc)}"]
    return []


def refusals(sysfs, address: str, top: str, below, tables, probe_9p=None) -> list:
    virtio = transports(below)
    if not virtio:
        return check_console(sysfs, address, below, []) if below else []
    if probe_9p is None and sysfs.root.is_host:
        probe_9p = test_mount_9p
    try:
        return (check_9p(address, virtio, tables, probe_9p) + check_virtiofs(sysfs, address, top, tables)
                + check_console(sysfs, address, below, virtio))
    except SysfsError as e:
        return [f"virtio transport {address}: cannot tell what it carries ({e})"]
