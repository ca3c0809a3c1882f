"""Safety guards: reasons not to take a device away from its host driver.

Users' worst stories with binding tools are the NIC they were logged in
through and the disk the root filesystem was on.  Each check returns a
sentence naming what would break; an empty list means the device is safe.
"""

from __future__ import annotations

import os

from . import guards_virtio, safeio
from .pci import PciDevice
from .root import PCI_DEVICES
from .sysfs import Sysfs


class Node(tuple):
    """A directory below a device: (name, path, entries), entries mapping
    each name in it that is not a directory to whether it is a link."""
    __slots__ = ()


def device_dir(sysfs: Sysfs, address: str) -> str:
    """The device's own sysfs directory, links resolved.  It stays where it
    is for as long as the device is there."""
    return safeio.resolved(sysfs.root.fspath(f"{PCI_DEVICES}/{address}"))


def _descendants(sysfs: Sysfs, address: str, top: str | None = None) -> list:
    """A Node for every directory below the device's own sysfs dir that can
    hold a device or be one, links not followed (they lead out of the
    device).  One scandir a directory and no stat of what it lists: sysfs
    gives every entry's type, and the checks below look at the names in a
    directory before they read anything (os.walk stat()s every link it
    meets; a NIC's tree was 10 ms of each hotplug under TCG).

    The driver core puts a device's directory in its parent device's own,
    or in a class directory there ("net", "block": get_device_parent in
    drivers/base/core.c), and every device's directory has a uevent.  So in
    a directory that is no device (a class directory, or a group such as a
    NIC's queues/) only the subdirectories that are devices can hold one:
    those are walked, each known by its uevent (one lstat, where rx-0,
    tx-0 and theirs were four scandirs for a single-queue NIC, 256 for a
    64-queue one).  A subdirectory whose uevent cannot be looked at is
    walked, and so is every directory of a tree whose device directory has
    no uevent (a copied or simulated tree that may lack them)."""
    top = top or device_dir(sysfs, address)
    out = []
    prune = False
    todo = [top]
    while todo:
        path = todo.pop()
        entries, subdirs = {}, []
        try:
            with os.scandir(path) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        subdirs.append(e)
                    else:
                        entries[e.name] = e.is_symlink()
        except (FileNotFoundError, NotADirectoryError):
            continue        # gone meanwhile (or top is no directory)
        if path != top:
            out.append(Node((os.path.basename(path), path, entries)))
        else:
            prune = "uevent" in entries
        device = "uevent" in entries or path == top
        if device:
            # A device's power/ is its runtime-PM attribute group: files
            # only, and no child can take that name beside it.  Elsewhere
            # (a net/ directory) "power" may be a name.
            subdirs = [e for e in subdirs if e.name != "power"]
        elif prune:
            subdirs = [e for e in subdirs if _may_be_device(e.path)]
        todo += sorted((e.path for e in subdirs), reverse=True)    # depth first, name order
    return out


def _may_be_device(path: str) -> bool:
    """Whether the directory has a uevent: False only when the kernel says
    there is none."""
    try:
        os.lstat(os.path.join(path, "uevent"))
    except FileNotFoundError:
        return False
    except OSError:
        pass
    return True


def _subsystem(node):
    if not node[2].get("subsystem"):
        return None
    try:
        return os.path.basename(os.readlink(os.path.join(node[1], "subsystem")))
    except OSError:
        return None


def block_devices(sysfs: Sysfs, address: str, below=None) -> dict:
    """{name: "major:minor"} of disks and partitions below the device (an
    unreadable `dev` reads as "" so that the guard refuses rather than
    overlooks it), plus the native NVMe multipath heads its controllers
    reach.  `below`: _descendants() of the device, when already walked."""
    found = {}
    controllers = set()
    for node in _descendants(sysfs, address) if below is None else below:
        name, path, entries = node
        if "dev" not in entries:
            continue
        parent = os.path.basename(os.path.dirname(path))
        if parent == "nvme":
            controllers.add(name)
        if (parent == "block" or _subsystem(node) == "block"
                or sysfs.exists(f"sys/class/block/{name}") or sysfs.exists(f"sys/block/{name}")):
            try:
                found[name] = safeio.read_text(os.path.join(path, "dev"),
                                               errors="replace").strip()
            except OSError:
                found[name] = ""
    if controllers:
        from . import guards_storage
        found.update(guards_storage.multipath_heads(sysfs, controllers))
    return found


def net_interfaces(sysfs: Sysfs, address: str, below=None) -> list:
    """(name, path) of the network interfaces below the device: the
    directories of class net (each has a subsystem link), or with an
    operstate under a net/ directory."""
    out = []
    for node in _descendants(sysfs, address) if below is None else below:
        name, path, entries = node
        if ("operstate" in entries and os.path.basename(os.path.dirname(path)) == "net") \
                or _subsystem(node) == "net":
            out.append((name, path))
    return out


def _routed_interfaces(sysfs: Sysfs) -> set:
    names = set()
    for line in (sysfs.read("proc/net/route") or "").splitlines()[1:]:
        f = line.split()
        if f:
            names.add(f[0])
    for line in (sysfs.read("proc/net/ipv6_route") or "").splitlines():
        f = line.split()
        # Link-local and multicast routes come with any interface that is up;
        # they say nothing about it carrying traffic someone depends on.
        if len(f) == 10 and not f[0].startswith(("fe80", "ff")) and f[9] != "lo":
            names.add(f[9])
    return names


def check_storage(sysfs: Sysfs, dev: PciDevice, below=None, tables=None) -> list:
    disks = block_devices(sysfs, dev.address, below)
    if not disks:
        return []
    from . import guards_storage      # a device with no disk below needs none of it
    from .deadline import before_wait
    before_wait()       # an exclusive open of a disk may wait on the disk
    return guards_storage.StorageGuard(sysfs, tables=tables).check(disks)


def check_network(sysfs: Sysfs, dev: PciDevice, below=None) -> list:
    routed = None
    reasons = []
    for name, path in net_interfaces(sysfs, dev.address, below):
        try:
            # Not open(): a FIFO planted in a copied tree would block it.
            state = safeio.read_text(os.path.join(path, "operstate"), errors="replace").strip()
        except OSError as e:
            # Cannot decide whether it carries traffic: refuse.
            reasons.append(f"network interface {name}: cannot read operstate "
                           f"({e.strerror or e}); refusing rather than guessing")
            continue
        if state != "up":
            continue
        if routed is None:
            routed = _routed_interfaces(sysfs)
        if name in routed:
            reasons.append(f"network interface {name} is up and has routes")
    return reasons


def check_console(sysfs: Sysfs, dev: PciDevice) -> list:
    if not dev.boot_vga:
        return []
    top = device_dir(sysfs, dev.address)
    for fb in sysfs.entries("sys/class/graphics"):
        # The class link leads into the device's own directory
        # (.../0000:06:00.0/graphics/fb0), whose `device` link leads back.
        where = safeio.resolved(sysfs.root.fspath(f"sys/class/graphics/{fb}"))
        if where.startswith(top + "/"):
            return [f"it is the boot VGA device and framebuffer {fb} is on it"]
    for vt in sysfs.entries("sys/class/vtconsole"):
        name = sysfs.read(f"sys/class/vtconsole/{vt}/name") or ""
        if sysfs.read(f"sys/class/vtconsole/{vt}/bind") == "1" and "frame buffer" in name:
            return [f"it is the boot VGA device and the console ({vt}) is on a framebuffer"]
    return []


def refusals(sysfs: Sysfs, dev: PciDevice, top: str | None = None) -> list:
    """Every reason not to unbind this device from its host driver.  `top`:
    its device_dir(), when already known."""
    top = top or device_dir(sysfs, dev.address)
    try:
        below = _descendants(sysfs, dev.address, top)    # one walk for every check
    except OSError as e:
        # What lies below it cannot be seen: refuse rather than guess.
        return [f"cannot look at what is below it in sysfs ({e.filename or top}: "
                f"{e.strerror or e}); refusing rather than guessing"]
    reasons = check_console(sysfs, dev)
    if below:
        from .mounts import Tables
        tables = Tables(sysfs)      # read once, by whichever check needs them first
        reasons = (check_storage(sysfs, dev, below, tables=tables)
                   + check_network(sysfs, dev, below)
                   + guards_virtio.refusals(sysfs, dev.address, top, below, tables)
                   + reasons)
    return reasons
