"""The daemon's reader of raw kernel uevents: the kernel's datagram format,
PCI events only, the kernel as the only sender, and a rescan when the
kernel says it dropped events."""

import errno
import socket
import threading
import time

from vfio_flavourd import uevent_filter
from vfio_flavourd.events import Event
from vfio_flavourd.uevents_kernel import KernelSource, parse

PCI_ADD = (b"add@/devices/pci0000:00/0000:00:1c.3/0000:04:00.0\0ACTION=add\0"
           b"DEVPATH=/devices/pci0000:00/0000:00:1c.3/0000:04:00.0\0SUBSYSTEM=pci\0"
           b"PCI_CLASS=20000\0PCI_ID=1AF4:1041\0PCI_SLOT_NAME=0000:04:00.0\0"
           b"MODALIAS=pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00\0SEQNUM=2210\0")
PCI_BIND = (b"bind@/devices/pci0000:00/0000:00:1c.3/0000:04:00.0\0ACTION=bind\0"
            b"DEVPATH=/devices/pci0000:00/0000:00:1c.3/0000:04:00.0\0SUBSYSTEM=pci\0"
            b"DRIVER=virtio_vfio_pci\0SEQNUM=2231\0")
NET_ADD = (b"add@/devices/pci0000:00/0000:00:1c.3/0000:04:00.0/virtio1/net/eth1\0ACTION=add\0"
           b"DEVPATH=/devices/pci0000:00/0000:00:1c.3/0000:04:00.0/virtio1/net/eth1\0"
           b"SUBSYSTEM=net\0INTERFACE=eth1\0IFINDEX=3\0SEQNUM=2215\0")


def test_pci_events_are_read_as_pyudev_reads_them():
    assert parse(PCI_ADD) == Event("add", "0000:04:00.0", None, 2210)
    assert parse(PCI_BIND) == Event("bind", "0000:04:00.0", "virtio_vfio_pci", 2231)


def test_everything_else_is_dropped():
    assert parse(NET_ADD) is None                                   # another subsystem
    assert parse(PCI_ADD.replace(b"SUBSYSTEM=pci\0", b"SUBSYSTEM=pci_bus\0")) is None
    assert parse(b"libudev\0" + PCI_ADD) is None                    # udevd's format
    assert parse(PCI_ADD.replace(b"ACTION=add", b"ACTION=move")) is None
    assert parse(PCI_ADD.replace(b"SEQNUM=2210", b"SEQNUM=x")) is None
    assert parse(PCI_ADD.replace(b"DEVPATH=", b"DEVPAHT=")) is None
    assert parse(b"\xff\xfe" + PCI_ADD.replace(b"0000:04:00.0\0S", b"\xff\0S")) is None
    assert parse(b"") is None


class FakeNetlink:
    """What a netlink socket's recvfrom gives, fed from the test; fileno()
    is a real descriptor, so that select() works."""

    def __init__(self):
        self.r, self.w = socket.socketpair()
        self.queue = []

    def feed(self, data, sender=(0, 1), error=None):
        self.queue.append((data, sender, error))
        self.w.send(b"x")

    def fileno(self):
        return self.r.fileno()

    def recvfrom(self, size, flags=0):
        if flags & socket.MSG_DONTWAIT and not self.queue:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        self.r.recv(1)
        data, sender, error = self.queue.pop(0)
        if error:
            raise OSError(error, "No buffer space available")
        return data, sender


def collect(source):
    got = []

    def read():
        for ev in source:
            got.append(ev)
    t = threading.Thread(target=read, daemon=True)
    t.start()
    return got, t


def test_the_source_yields_pci_events_from_the_kernel_only_and_rescans_on_overflow():
    fake = FakeNetlink()
    src = KernelSource(rescan=lambda: ["0000:01:00.0", "0000:02:00.0"], sock=fake)
    got, reader = collect(src)
    fake.feed(NET_ADD)
    fake.feed(PCI_ADD, sender=(4242, 1))          # a process, not the kernel
    fake.feed(PCI_ADD)
    fake.feed(None, error=errno.ENOBUFS)
    fake.feed(PCI_BIND)
    deadline = time.monotonic() + 10
    while len(got) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    src.close()
    reader.join(10)
    assert not reader.is_alive()
    assert got == [Event("add", "0000:04:00.0", None, 2210),
                   Event("add", "0000:01:00.0"), Event("add", "0000:02:00.0"),
                   Event("bind", "0000:04:00.0", "virtio_vfio_pci", 2231)]


def test_poll_gives_what_is_queued_at_once_and_none_once_closed():
    """The daemon's holder of the reading reads between the iterator's
    turns: poll() never blocks past its timeout, drains every datagram
    queued, and says when the source is closed."""
    fake = FakeNetlink()
    src = KernelSource(rescan=lambda: ["0000:01:00.0"], sock=fake)
    t0 = time.monotonic()
    assert src.poll(0.05) == []
    assert time.monotonic() - t0 >= 0.04
    fake.feed(PCI_ADD)
    fake.feed(NET_ADD)
    fake.feed(None, error=errno.ENOBUFS)
    fake.feed(PCI_BIND)
    assert src.poll(0) == [Event("add", "0000:04:00.0", None, 2210), Event("add", "0000:01:00.0"),
                           Event("bind", "0000:04:00.0", "virtio_vfio_pci", 2231)]
    assert fake.queue == []
    assert src.poll(0) == []
    src.close()
    assert src.poll(1) is None
    assert list(src) == []      # the iterator ends as well


def filter_length(sock) -> int:
    """Instructions in the socket's classic BPF filter: SO_GET_FILTER with
    no room for them says how many (socket.getsockopt cannot ask that)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    n = ctypes.c_uint(0)
    assert libc.getsockopt(sock.fileno(), socket.SOL_SOCKET, 26, None, ctypes.byref(n)) == 0
    return n.value


def test_a_real_netlink_socket_opens_listens_and_closes():
    """Only listens: binding to the kernel's uevent group writes nothing."""
    src = KernelSource()
    try:
        assert src.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= KernelSource.RECEIVE_BUFFER
        assert filter_length(src.sock) == len(uevent_filter.program()) // 8
        src.close()
        assert list(src) == []          # close() ends the iteration at once
    finally:
        src.sock.close()
