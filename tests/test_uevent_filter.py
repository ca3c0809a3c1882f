"""The daemon's uevent socket filter (classic BPF, run by this machine's
kernel on a socketpair): another subsystem's uevents are dropped before
they wake the reader, and nothing of PCI's ever is."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings, strategies as st

from vfio_flavourd import uevent_filter
from vfio_flavourd.uevents_kernel import parse

from test_uevents_kernel import NET_ADD, PCI_ADD, PCI_BIND


@pytest.fixture(scope="module")
def pair():
    """(send, receive): a datagram socketpair, the filter on the receiving end."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    uevent_filter.attach(b)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def passes(pair, data: bytes) -> bool:
    send, receive = pair
    send.send(data)
    try:
        got = receive.recv(1 << 16)
    except BlockingIOError:
        return False
    assert got == data
    return True


def uevent(action: str, devpath: str, subsystem: str, *rest: str) -> bytes:
    """A datagram in the kernel's format (lib/kobject_uevent.c)."""
    fields = [f"ACTION={action}", f"DEVPATH={devpath}", f"SUBSYSTEM={subsystem}", *rest,
              "SEQNUM=4711"]
    return f"{action}@{devpath}\0".encode() + b"".join(f.encode() + b"\0" for f in fields)


def test_pci_uevents_pass_and_others_are_dropped(pair):
    assert passes(pair, PCI_ADD) and passes(pair, PCI_BIND)
    assert not passes(pair, NET_ADD)
    assert not passes(pair, PCI_ADD.replace(b"SUBSYSTEM=pci\0", b"SUBSYSTEM=pci_bus\0"))
    queue = "/devices/pci0000:00/0000:00:1c.3/0000:04:00.0/virtio1/net/eth1/queues/rx-0"
    assert not passes(pair, uevent("add", queue, "queues"))
    assert not passes(pair, uevent("unbind", queue.rsplit("/", 3)[0], "virtio",
                                   "DRIVER=virtio_net"))


def test_what_it_cannot_read_as_another_subsystem_passes(pair):
    # Not the kernel's order: parse() decides, as without the filter.
    odd = PCI_ADD.replace(b"SUBSYSTEM=pci\0", b"").replace(b"SEQNUM", b"SUBSYSTEM=net\0SEQNUM")
    assert passes(pair, odd) and parse(odd) is None
    # A header longer than the program looks: passed, even another subsystem's.
    deep = "/devices/" + "/".join(["x" * 60] * 20)
    assert passes(pair, uevent("add", deep, "net"))
    assert passes(pair, uevent("add", deep, "pci"))


def test_the_longest_header_it_reads_is_still_read(pair):
    for length in (uevent_filter.HEADER_MAX - 1, uevent_filter.HEADER_MAX):
        devpath = "/devices/pci0000:00/" + "d" * (length - len("add@/devices/pci0000:00/") - 1)
        assert len(f"add@{devpath}\0") == length
        assert passes(pair, uevent("add", devpath, "pci"))
        assert not passes(pair, uevent("add", devpath, "net"))


def test_a_subsystem_longer_than_a_word_is_refused():
    with pytest.raises(ValueError):
        uevent_filter.program(b"virtio")


_name = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789:._-"), min_size=1,
                max_size=40)


@settings(max_examples=300, deadline=None)
@given(action=st.sampled_from(["add", "bind", "unbind", "remove", "change", "move",
                               "online", "offline"]),
       parts=st.lists(_name, min_size=1, max_size=30),
       subsystem=st.one_of(st.sampled_from(["pci", "net", "pci_bus", "pc", "virtio",
                                            "block", "queues", "p"]), _name),
       driver=st.one_of(st.none(), _name))
def test_it_drops_exactly_what_it_can_read_as_not_pci(pair, action, parts, subsystem,
                                                      driver):
    devpath = "/devices/" + "/".join(parts)
    data = uevent(action, devpath, subsystem, *([f"DRIVER={driver}"] if driver else []))
    header = len(f"{action}@{devpath}\0")
    assert passes(pair, data) == (subsystem == "pci" or header > uevent_filter.HEADER_MAX)
