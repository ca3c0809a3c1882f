import os
import socket
import time
from types import SimpleNamespace

from vfio_flavourd.events import Event, FakeSource, UdevSource, udevd_running


def test_fake_source_yields_until_closed():
    src = FakeSource()
    src.push(Event("add", "0000:01:00.0"))
    src.push(Event("remove", "0000:01:00.0"))
    src.close()
    assert [e.action for e in src] == ["add", "remove"]
    assert src.pushed == 2


def test_udevd_detection_connects_rather_than_trusting_the_file(tmp_path):
    path = str(tmp_path / "control")
    assert not udevd_running(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(1)
    assert udevd_running(path)
    server.close()        # the file stays behind, as udevd's does
    assert (tmp_path / "control").exists()
    assert not udevd_running(path)


# poll(): what the daemon's binding thread reads with between the
# iterator's turns (daemon._read_some).

class FakeMonitor:
    """What UdevSource uses of a pyudev Monitor: a descriptor select() can
    watch, and poll(timeout=0) giving each queued device, then None."""

    def __init__(self):
        self.r, self.w = socket.socketpair()
        self.queue = []

    def feed(self, action, name, driver=None, seqnum=None):
        self.queue.append(SimpleNamespace(action=action, sys_name=name, driver=driver,
                                          sequence_number=seqnum))
        self.w.send(b"x")

    def fileno(self):
        return self.r.fileno()

    def poll(self, timeout=None):
        if not self.queue:
            return None
        self.r.recv(1)
        return self.queue.pop(0)


def udev_source(monitor):
    src = UdevSource.__new__(UdevSource)    # no netlink socket: the monitor is ours
    src.name, src.monitor = "udev", monitor
    src._rpipe, src._wpipe = os.pipe()
    return src


def test_udev_poll_gives_what_is_queued_and_none_once_closed():
    mon = FakeMonitor()
    src = udev_source(mon)
    t0 = time.monotonic()
    assert src.poll(0.05) == []
    assert time.monotonic() - t0 >= 0.04
    mon.feed("add", "0000:05:00.0", seqnum=7)
    mon.feed("online", "0000:05:00.0")              # not an action the daemon knows
    mon.feed("bind", "0000:05:00.0", "virtio-pci", 8)
    assert src.poll(0) == [Event("add", "0000:05:00.0", None, 7),
                           Event("bind", "0000:05:00.0", "virtio-pci", 8)]
    assert mon.queue == [] and src.poll(0) == []
    src.close()
    assert src.poll(1) is None
    assert list(src) == []


def test_fake_poll_keeps_the_end_for_the_iterator():
    src = FakeSource()
    assert src.poll(0) == []
    src.push(Event("add", "0000:01:00.0"))
    src.push(Event("bind", "0000:01:00.0", "e1000e"))
    src.close()
    assert src.poll(0) == [Event("add", "0000:01:00.0"), Event("bind", "0000:01:00.0", "e1000e")]
    assert src.poll(0) is None and src.poll(0.01) is None
    assert list(src) == []
