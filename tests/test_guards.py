"""guards, guards_storage, guards_virtio and mounts on hand-built trees laid
out as the kernel lays them out (paths in the comments of each module)."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from conftest import make_device

from vfio_flavourd import guards, guards_storage
from vfio_flavourd.mounts import parse_mountinfo
from vfio_flavourd.root import Root
from vfio_flavourd.sysfs import Sysfs

ADDR = "0000:00:04.0"
DEV = f"sys/devices/pci0000:00/{ADDR}"
ROOT_9P = ("20 1 0:19 / / ro,relatime - 9p hostroot "
           "ro,sync,dirsync,access=client,msize=512000,trans=virtio")


class Tree:
    def __init__(self, root):
        self.root = root
        (root / "sys/bus/pci/devices").mkdir(parents=True)
        (root / DEV).mkdir(parents=True)
        os.symlink(f"../../../devices/pci0000:00/{ADDR}", root / f"sys/bus/pci/devices/{ADDR}")
        self.mountinfo()

    def file(self, rel, text):
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def mountinfo(self, *lines, swaps=""):
        self.file("proc/self/mountinfo", "\n".join(
            ["22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw", *lines]) + "\n")
        self.file("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n" + swaps)

    def disk(self, name, devnum, ctrl="nvme0"):
        base = f"{DEV}/nvme/{ctrl}/{name}"
        self.file(f"{DEV}/nvme/{ctrl}/dev", "241:0\n")
        self.file(f"{base}/dev", devnum + "\n")
        (self.root / f"{base}/holders").mkdir(parents=True)
        (self.root / "sys/class/block").mkdir(parents=True, exist_ok=True)
        os.symlink(self.root / base, self.root / f"sys/class/block/{name}")
        return base

    def virtio(self, n, **attrs):
        base = f"{DEV}/virtio{n}"
        (self.root / base).mkdir(parents=True)
        for k, v in attrs.items():
            self.file(f"{base}/{k}", v)
        return base

    def refusals(self, host=None, opener=None):
        sysfs = Sysfs(Root(self.root))
        if host is None:
            return guards.refusals(sysfs, make_device(address=ADDR))
        guard = guards_storage.StorageGuard(sysfs, opener=opener, host=host)
        return guard.check(guards.block_devices(sysfs, ADDR))


@pytest.fixture
def tree(tmp_path):
    return Tree(tmp_path)


def test_mountinfo_fields_and_escapes():
    m, = parse_mountinfo("42 35 0:37 / /mnt/my\\040disk rw shared:5 master:2 - btrfs "
                         "/dev/nvme1n1 rw,space_cache=v2\nbroken line\n")
    assert (m.devnum, m.mountpoint, m.fstype, m.source) == ("0:37", "/mnt/my disk", "btrfs",
                                                           "/dev/nvme1n1")
    assert m.superopts == ("rw", "space_cache=v2") and not m.over_virtio


def test_btrfs_with_an_anonymous_device_number_is_seen_by_source(tree):
    tree.disk("nvme1n1", "259:0")
    tree.mountinfo("42 35 0:37 / /srv rw - btrfs /dev/nvme1n1 rw")
    assert tree.refusals() == [
        "/dev/nvme1n1 carries btrfs mounted on /srv (copied root: kernel tables)"]


def test_btrfs_member_named_by_the_mount_of_another_member(tree):
    tree.disk("nvme2n1", "259:1")
    tree.file("sys/fs/btrfs/5d2b/devices/nvme1n1", "")
    tree.file("sys/fs/btrfs/5d2b/devices/nvme2n1", "")
    tree.mountinfo("42 35 0:37 / /srv rw - btrfs /dev/nvme1n1 rw")
    assert tree.refusals() == [
        "/dev/nvme2n1 carries btrfs mounted on /srv (copied root: kernel tables)"]


def test_swap_holders_and_free_disks(tree):
    base = tree.disk("nvme0n1", "259:0")
    tree.disk("nvme0n2", "259:5")
    (tree.root / f"{base}/holders/dm-0").mkdir()
    tree.mountinfo(swaps="/dev/nvme0n1 partition 8388604 0 -2\n")
    assert tree.refusals() == [
        "/dev/nvme0n1 carries active swap; held by dm-0 (md, LVM or dm member) "
        "(copied root: kernel tables)"]


def test_host_asks_the_kernel_and_names_what_holds_it(tree):
    tree.disk("nvme1n1", "259:0")
    tree.disk("nvme1n2", "259:1")
    tree.disk("nvme1n3", "259:2")
    tree.mountinfo("42 35 0:37 / /srv rw - btrfs /dev/nvme1n1 rw")
    busy = {"nvme1n1": True, "nvme1n2": True, "nvme1n3": False}
    seen = []

    def opener(name, devnum):
        seen.append((name, devnum))
        return busy[name]
    assert tree.refusals(host=True, opener=opener) == [
        "/dev/nvme1n1 carries btrfs mounted on /srv (exclusive open: busy)",
        "/dev/nvme1n2 is held exclusively by the kernel (exclusive open: busy)"]
    assert seen == [("nvme1n1", "259:0"), ("nvme1n2", "259:1"), ("nvme1n3", "259:2")]


def test_host_that_cannot_open_refuses_with_the_reason(tree):
    tree.disk("nvme1n1", "259:0")

    def opener(name, devnum):
        raise guards_storage.Undecided("exclusive open of /dev/nvme1n1 (259:0) failed: "
                                       "Permission denied")
    assert tree.refusals(host=True, opener=opener) == [
        "/dev/nvme1n1: cannot tell whether it is in use (exclusive open of /dev/nvme1n1 "
        "(259:0) failed: Permission denied)"]


def test_unreadable_dev_attribute_refuses(tree):
    base = tree.disk("nvme1n1", "259:0")
    (tree.root / f"{base}/dev").unlink()
    (tree.root / f"{base}/dev").mkdir()        # read() fails: IsADirectoryError
    assert guards.block_devices(Sysfs(Root(tree.root)), ADDR) == {}  # not a file: no dev
    (tree.root / f"{base}/dev").rmdir()
    tree.file(f"{base}/dev", "garbage\n")
    assert tree.refusals() == [
        "/dev/nvme1n1: cannot tell whether it is in use (its dev attribute reads 'garbage')"]


def test_multipath_head_is_guarded_through_its_subsystem(tree):
    tree.file(f"{DEV}/nvme/nvme0/dev", "241:0\n")
    tree.file("sys/class/nvme-subsystem/nvme-subsys0/nvme0/dev", "241:0\n")
    tree.file("sys/class/nvme-subsystem/nvme-subsys0/nvme0n1/dev", "259:3\n")
    tree.mountinfo("30 1 259:3 / /data rw - xfs /dev/nvme0n1 rw")
    assert tree.refusals() == [
        "/dev/nvme0n1 carries xfs mounted on /data (copied root: kernel tables)"]


def test_exclusive_open_ebusy_and_the_dev_node(tree, monkeypatch, tmp_path):
    opened = []
    real_open = os.open

    def fake_open(path, flags, *a, **kw):
        if not flags & os.O_EXCL:
            return real_open(path, flags, *a, **kw)        # shutil.rmtree's own opens
        opened.append((path, flags))
        raise OSError(errno.EBUSY, "Device or resource busy")
    monkeypatch.setattr(guards_storage.os, "open", fake_open)
    monkeypatch.setattr(guards_storage.os, "mknod", lambda path, mode, dev: open(path, "w").close())
    assert guards_storage.exclusive_open("nvme9n1", "259:7", str(tmp_path / "nodev")) is True
    path, flags = opened[0]
    assert os.path.basename(path) == "nvme9n1" and path.startswith("/")
    assert flags == os.O_RDONLY | os.O_EXCL | os.O_NONBLOCK | os.O_CLOEXEC
    assert not os.path.exists(os.path.dirname(path))      # the private directory is gone


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a block node needs root")
def test_exclusive_open_of_a_node_with_no_device_cannot_decide(tmp_path):
    # 240:250 is in the "local/experimental" range: no driver, so ENXIO.
    with pytest.raises(guards_storage.Undecided, match="No such device"):
        guards_storage.exclusive_open("ghost", "240:250", str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_9p_share_on_the_transport(tree):
    tree.virtio(0, mount_tag="hostroot\0")
    tree.virtio(1, mount_tag="spare")
    tree.mountinfo(ROOT_9P, "40 20 0:40 / /srv/share rw - 9p hostroot rw,trans=virtio",
                   "41 20 0:41 / /mnt/tcp rw - 9p spare rw,trans=tcp")
    assert tree.refusals() == [
        "virtio transport 0000:00:04.0 carries 9p share 'hostroot' mounted on /",
        "virtio transport 0000:00:04.0 carries 9p share 'hostroot' mounted on /srv/share"]


def test_unmounted_share_is_free_and_unreadable_tag_refuses(tree):
    base = tree.virtio(0, mount_tag="out")
    tree.mountinfo(ROOT_9P)
    assert tree.refusals() == []
    (tree.root / f"{base}/mount_tag").unlink()
    (tree.root / f"{base}/mount_tag").mkdir()
    reasons = tree.refusals()
    assert len(reasons) == 1 and reasons[0].startswith(
        "virtio transport 0000:00:04.0: cannot read virtio0/mount_tag (a directory, not a "
        "regular file)")


def test_a_fifo_where_an_attribute_should_be_refuses_at_once(tree):
    """A copied tree with FIFOs for mount_tag and a disk's dev: opening
    them must not block (nobody writes them), and the guard refuses."""
    base = tree.virtio(0)
    os.mkfifo(tree.root / f"{base}/mount_tag")
    disk = tree.disk("nvme0n1", "259:0")
    (tree.root / f"{disk}/dev").unlink()
    os.mkfifo(tree.root / f"{disk}/dev")
    tree.mountinfo(ROOT_9P)
    got = []
    worker = threading.Thread(target=lambda: got.append(tree.refusals()), daemon=True)
    worker.start()
    worker.join(10)
    assert got, "the guard blocked on a FIFO"
    reasons = got[0]
    assert "virtio transport 0000:00:04.0: cannot read virtio0/mount_tag (a FIFO, not a " \
        "regular file), so cannot tell whether a 9p share is mounted" in reasons
    assert "/dev/nvme0n1: cannot tell whether it is in use (its dev attribute reads '')" \
        in reasons


def test_virtiofs_tag_through_its_device_link(tree):
    base = tree.virtio(2)
    (tree.root / "sys/fs/virtiofs/0").mkdir(parents=True)
    tree.file("sys/fs/virtiofs/0/tag", "myfs\n")
    os.symlink(tree.root / base, tree.root / "sys/fs/virtiofs/0/device")
    tree.mountinfo("50 1 0:50 / /var/lib/data rw - virtiofs myfs rw")
    assert tree.refusals() == [
        "virtio transport 0000:00:04.0 carries virtio-fs share 'myfs' mounted on /var/lib/data"]


def test_virtio_console_that_is_the_active_console(tree):
    base = tree.virtio(3)
    (tree.root / "sys/bus/virtio/drivers/virtio_console").mkdir(parents=True)
    os.symlink(tree.root / "sys/bus/virtio/drivers/virtio_console", tree.root / f"{base}/driver")
    tree.file("sys/class/tty/console/active", "ttyS0\n")
    assert tree.refusals() == []
    tree.file("sys/class/tty/console/active", "ttyS0 hvc0\n")
    assert tree.refusals() == [
        "virtio transport 0000:00:04.0 is a virtio console (virtio3) and the active console "
        "is hvc0"]


def test_explain_says_what_the_guards_would_refuse_and_how(tmp_path, capsys):
    from simhost import BOOT_DISK, build_host, write_policy
    from vfio_flavourd.cli import main
    build_host(tmp_path).build()
    policy = write_policy(tmp_path, f"""\
        version: 1
        rules:
          - {{name: disks, match: {{address: "{BOOT_DISK}"}}, flavour: vfio}}
        """)
    assert main(["--root", str(tmp_path), "--policy", str(policy), "explain", BOOT_DISK]) == 0
    out = capsys.readouterr().out
    assert ("safety guards (block devices checked by copied-root tables: mountinfo, swaps, "
            "holders, btrfs devices):\n"
            "  /dev/nvme0n1p1 carries vfat mounted on /boot/efi (copied root: kernel tables)\n"
            "  /dev/nvme0n1p2 carries ext4 mounted on / (copied root: kernel tables)\n"
            "  apply refuses this device unless forced") in out
    assert main(["--root", str(tmp_path), "--policy", str(policy), "explain", BOOT_DISK,
                 "--json"]) == 0
    g = __import__("json").loads(capsys.readouterr().out)["guards"]
    assert g["method"].startswith("copied-root tables") and len(g["refusals"]) == 2


def test_9p_share_hidden_from_mountinfo_is_found_by_a_test_mount(tree):
    from vfio_flavourd import guards_virtio
    from vfio_flavourd.mounts import Tables
    tree.virtio(0, mount_tag="hostroot")
    tree.virtio(1, mount_tag="spare")
    tree.mountinfo("20 1 0:30 / / rw - overlay overlay rw,lowerdir=/mnt/hostroot")
    sysfs = Sysfs(Root(tree.root))
    below = list(guards._descendants(sysfs, ADDR))
    busy = {"hostroot": True, "spare": False}
    reasons = guards_virtio.check_9p(ADDR, guards_virtio.transports(below), Tables(sysfs),
                                     probe=busy.__getitem__)
    assert reasons == ["virtio transport 0000:00:04.0 carries 9p share 'hostroot', mounted "
                       "where this mount namespace cannot see it (test mount: busy)"]

    def undecided(tag):
        raise guards_storage.Undecided("a test mount of it failed: Operation not permitted")
    reasons = guards_virtio.check_9p(ADDR, guards_virtio.transports(below), Tables(sysfs),
                                     probe=undecided)
    assert len(reasons) == 2 and reasons[1] == ("virtio transport 0000:00:04.0: cannot tell whether 9p share "
                          "'spare' is mounted (a test mount of it failed: Operation not "
                          "permitted)")


def test_operstate_that_cannot_be_read_refuses_and_never_blocks(tmp_path):
    """A FIFO where a NIC's operstate should be: no hang, and the guard,
    unable to decide, refuses."""
    import threading
    from vfio_flavourd import guards
    from vfio_flavourd.pci import read_device
    addr = "0000:05:00.0"
    dev_dir = tmp_path / "sys/devices/pci0000:00" / addr
    (dev_dir / "net/eth9").mkdir(parents=True)
    os.mkfifo(dev_dir / "net/eth9/operstate")
    os.symlink("../../../../../class/net", dev_dir / "net/eth9/subsystem")
    for attr, value in (("vendor", "0x8086"), ("device", "0x10d3"), ("class", "0x020000")):
        (dev_dir / attr).write_text(value + "\n")
    (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
    os.symlink(f"../../../devices/pci0000:00/{addr}", tmp_path / f"sys/bus/pci/devices/{addr}")
    sysfs = Sysfs(Root(tmp_path))
    dev = read_device(sysfs, addr)
    got = []
    t = threading.Thread(target=lambda: got.append(guards.check_network(sysfs, dev)), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading a FIFO operstate blocked"
    assert len(got[0]) == 1 and "eth9: cannot read operstate" in got[0][0], got


def test_an_interface_named_power_is_still_seen(tree):
    """A device's own power/ is skipped, but a NIC renamed "power" sits
    in a net/ directory, where the name is free: it is still guarded."""
    dev = tree.root / DEV
    (dev / "uevent").write_text("")
    (dev / "power").mkdir()
    tree.file(f"{DEV}/power/control", "auto\n")
    tree.file(f"{DEV}/net/power/operstate", "up\n")
    tree.file(f"{DEV}/net/power/uevent", "INTERFACE=power\n")     # a device, as every one
    tree.file("proc/net/route", "Iface\tDestination\npower\t00000000\n")
    assert tree.refusals() == ["network interface power is up and has routes"]
    names = [n[0] for n in guards._descendants(Sysfs(Root(tree.root)), ADDR)]
    assert names == ["net", "power"]          # net/power; the device's power/ not walked


def _kernel_nic(tree, queues=2):
    """A virtio NIC laid out as the driver core lays it out: every device
    with a uevent; net/ a class directory; queues/ and statistics/ no
    devices."""
    tree.file(f"{DEV}/uevent", "PCI_SLOT_NAME=" + ADDR + "\n")
    tree.file(f"{DEV}/msi_irqs/25", "msix\n")
    base = f"{DEV}/virtio3"
    tree.file(f"{base}/uevent", "")
    tree.file(f"{base}/net/eth7/uevent", "INTERFACE=eth7\n")
    tree.file(f"{base}/net/eth7/operstate", "up\n")
    tree.file(f"{base}/net/eth7/statistics/rx_bytes", "0\n")
    for q in range(queues):
        tree.file(f"{base}/net/eth7/queues/rx-{q}/rps_cpus", "0\n")
        tree.file(f"{base}/net/eth7/queues/tx-{q}/byte_queue_limits/limit", "0\n")
    tree.file("proc/net/route", "Iface\tDestination\neth7\t00000000\n")


def _walked(tree):
    top = str(tree.root / DEV)
    return sorted(n[1][len(top) + 1:] for n in guards._descendants(Sysfs(Root(tree.root)), ADDR))


def test_a_group_below_a_device_is_walked_but_not_what_no_device_can_be_in(tree):
    _kernel_nic(tree)
    assert _walked(tree) == [
        "msi_irqs", "virtio3", "virtio3/net", "virtio3/net/eth7",
        "virtio3/net/eth7/queues", "virtio3/net/eth7/statistics"]
    assert tree.refusals() == ["network interface eth7 is up and has routes"]


def test_a_device_in_a_class_directory_is_found_at_any_depth(tree):
    # nvme/ and block/ are class directories; nvme0, its namespace and its
    # partition are devices, each in its parent device's directory.
    _kernel_nic(tree, queues=0)
    for rel in ("nvme/nvme0", "nvme/nvme0/nvme0n1", "nvme/nvme0/nvme0n1/nvme0n1p1"):
        tree.file(f"{DEV}/{rel}/uevent", "")
    tree.file(f"{DEV}/nvme/nvme0/nvme0n1/dev", "259:0\n")
    tree.file(f"{DEV}/nvme/nvme0/nvme0n1/nvme0n1p1/dev", "259:1\n")
    for name in ("nvme0n1", "nvme0n1p1"):
        os.makedirs(tree.root / "sys/class/block", exist_ok=True)
        os.symlink(tree.root / DEV / "nvme/nvme0" / ("nvme0n1" if name == "nvme0n1"
                                                     else "nvme0n1/nvme0n1p1"),
                   tree.root / f"sys/class/block/{name}")
    sysfs = Sysfs(Root(tree.root))
    assert guards.block_devices(sysfs, ADDR) == {"nvme0n1": "259:0", "nvme0n1p1": "259:1"}


def test_without_uevents_in_the_tree_everything_is_walked(tree):
    # A copied tree may lack them: nothing is left out then.
    _kernel_nic(tree, queues=1)
    for p in (tree.root / DEV).rglob("uevent"):
        p.unlink()
    assert "virtio3/net/eth7/queues/tx-0/byte_queue_limits" in _walked(tree)


def test_a_directory_whose_uevent_cannot_be_looked_at_is_walked(tree, monkeypatch):
    _kernel_nic(tree, queues=1)
    lstat = os.lstat

    def refusing(path, *a, **k):
        if str(path).endswith("rx-0/uevent"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return lstat(path, *a, **k)
    monkeypatch.setattr(os, "lstat", refusing)
    walked = _walked(tree)
    assert "virtio3/net/eth7/queues/rx-0" in walked
    assert "virtio3/net/eth7/queues/tx-0" not in walked



def test_a_walk_that_the_kernel_refuses_is_a_refusal_that_says_why(tree, monkeypatch):
    # Below the device, a directory that cannot be listed (a copied tree's
    # permissions, a link loop): what is there cannot be seen.
    _kernel_nic(tree, queues=0)
    scandir = os.scandir

    def refusing(path, *a, **k):
        if str(path).endswith("/virtio3"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path, *a, **k)
    monkeypatch.setattr(os, "scandir", refusing)
    reasons = tree.refusals()
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith(f"cannot look at what is below it in sysfs ({tree.root / DEV}"
                                 "/virtio3: Permission denied)"), reasons
    assert reasons[0].endswith("refusing rather than guessing")
