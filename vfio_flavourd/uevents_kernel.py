"""PCI uevents read from the kernel's own netlink socket, where no udevd runs.

pyudev's kernel monitor hands every kernel uevent up to Python.  The
in-kernel socket filter libudev installs reads the subsystem hashes in
udevd's own messages, which kernel events do not carry, so each uevent of
a NIC's unbind and probe (its net device, its queues, its virtio device)
woke the reader thread, took the GIL and went through ctypes only to be
dropped, while the worker was binding (bench figure 7).  This reader takes
each datagram itself and drops all but SUBSYSTEM=pci with one bytes search,
and the kernel drops most others before they wake it (uevent_filter).

The kernel's format (lib/kobject_uevent.c): "ACTION@DEVPATH", then
KEY=VALUE fields, each NUL-terminated, in one datagram to multicast group 1.
"""

from __future__ import annotations

import errno
import os
import select
import socket

from .events import ACTIONS, RECEIVE_BUFFER, Event

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1            # udevd re-sends to group 2, in its own format
_PCI = b"\0SUBSYSTEM=pci\0"


def parse(data: bytes) -> Event | None:
    """The Event in one kernel uevent datagram; None for another subsystem,
    an action the daemon does not follow, or anything malformed."""
    if _PCI not in data or data.startswith(b"libudev\0"):
        return None
    props = {}
    for field in data.split(b"\0")[1:]:
        key, sep, value = field.partition(b"=")
        if sep:
            props[key] = value
    try:
        action = props[b"ACTION"].decode("ascii")
        name = props[b"DEVPATH"].rsplit(b"/", 1)[-1].decode("ascii")
        driver = props[b"DRIVER"].decode("ascii") if b"DRIVER" in props else None
        seqnum = int(props[b"SEQNUM"]) if b"SEQNUM" in props else None
    except (KeyError, UnicodeDecodeError, ValueError):
        return None
    if action not in ACTIONS or not name:
        return None
    return Event(action, name, driver, seqnum)


class KernelSource:
    """Kernel uevents of PCI devices.  `rescan()`: the addresses to look at
    again when the kernel reports it dropped uevents (a burst larger than
    the receive buffer): each comes back as an add event, which the daemon
    handles idempotently, rather than a device being missed."""

    RECEIVE_BUFFER = RECEIVE_BUFFER
    name = "kernel"

    def __init__(self, logger=None, rescan=None, sock=None):
        self.log = logger
        self.rescan = rescan
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 NETLINK_KOBJECT_UEVENT)
            try:
                self._grow_buffer(sock)
                self._filter(sock)
                sock.bind((0, KERNEL_GROUP))
            except OSError:
                sock.close()
                raise
        self.sock = sock
        self._rpipe, self._wpipe = os.pipe()

    def _grow_buffer(self, sock) -> None:
        # SO_RCVBUFFORCE goes past net.core.rmem_max, for root.
        for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, self.RECEIVE_BUFFER)
                return
            except OSError as e:
                err = e
        if self.log:
            self.log.warning("cannot raise the uevent receive buffer to 1 MiB (%s); large "
                             "SR-IOV bursts make the daemon look at every device again", err)

    def _filter(self, sock) -> None:
        """Before bind, so that no other subsystem's uevent is queued."""
        from .uevent_filter import attach
        try:
            attach(sock)
        except OSError as e:
            if self.log:
                self.log.warning("cannot attach the uevent socket filter (%s); every "
                                 "uevent wakes the daemon, which drops those not PCI", e)

    def close(self) -> None:
        os.write(self._wpipe, b"x")

    def __iter__(self):
        while True:
            ready, _, _ = select.select([self.sock, self._rpipe], [], [])
            if self._rpipe in ready:
                return
            try:
                yield from self._receive(0)
            except (BlockingIOError, InterruptedError):
                continue

    def poll(self, timeout: float):
        """The events the kernel has sent, waiting up to `timeout` for the
        first; None once closed.  For the daemon's thread that holds the
        reading between its turns of the iterator (never both at once)."""
        ready, _, _ = select.select([self.sock, self._rpipe], [], [], timeout)
        if self._rpipe in ready:
            return None
        out = []
        while ready:
            try:
                out += self._receive(socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
        return out

    def _receive(self, flags: int) -> list:
        """The events in one datagram (one uevent; or, when the kernel says
        it dropped some, an add for every device to look at again)."""
        try:
            data, sender = self.sock.recvfrom(1 << 16, flags)
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            if self.log:
                self.log.warning("the kernel dropped uevents (receive buffer full); "
                                 "looking at every PCI device again")
            return [Event("add", address) for address in (self.rescan() if self.rescan else ())]
        # Only the kernel (port id 0) sends to this group as itself; a
        # process would need CAP_NET_ADMIN, and is not listened to.
        if not isinstance(sender, tuple) or sender[0] != 0:
            return []
        ev = parse(data)
        return [] if ev is None else [ev]
