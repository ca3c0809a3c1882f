"""PCI uevents as plain data, and the sources that deliver them.

pyudev stays at this edge: each pyudev.Device becomes an Event at once, so
everything behind it is tested without pyudev (FakeSource).
"""

from __future__ import annotations

import os
import queue
import select
from dataclasses import dataclass
from typing import Iterator, Optional

ACTIONS = ("add", "remove", "bind", "unbind", "change")
# For either event source's socket: a burst of 1,000 VF adds overflows the
# default.
RECEIVE_BUFFER = 1 << 20


@dataclass(frozen=True)
class Event:
    action: str
    address: str
    driver: Optional[str] = None
    seqnum: Optional[int] = None


class FakeSource:
    """An event source for tests: push() from any thread; iterating yields
    events until close()."""

    def __init__(self):
        self._q: "queue.Queue" = queue.Queue()
        self.name = "fake"
        self.pushed = 0

    def push(self, event: Event) -> None:
        self.pushed += 1
        self._q.put(event)

    def push_uevent(self, uevent) -> None:
        """Adapter for the simulated kernel's subscribe() callback."""
        self.push(Event(uevent.action, uevent.address, getattr(uevent, "driver", None),
                        getattr(uevent, "seqnum", None)))

    def close(self) -> None:
        self._q.put(None)

    def __iter__(self) -> Iterator[Event]:
        while True:
            ev = self._q.get()
            if ev is None:
                return
            yield ev

    def poll(self, timeout: float):
        """What is queued, waiting up to `timeout` for the first; None once
        closed (the end stays queued for the iterator)."""
        out = []
        try:
            ev = self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait()
            while ev is not None:
                out.append(ev)
                ev = self._q.get_nowait()
            self._q.put(None)
        except queue.Empty:
            return out
        return out or None


class UdevSource:
    """PCI uevents from netlink through pyudev.  `source` is "udev" (events
    after udevd ran its rules: our rule has set driver_override by then) or
    "kernel" (raw kernel events, where no udevd runs)."""

    RECEIVE_BUFFER = RECEIVE_BUFFER

    def __init__(self, source: Optional[str] = None, logger=None, context=None):
        import pyudev
        self._pyudev = pyudev
        if source is None:
            source = "udev" if udevd_running() else "kernel"
        self.name = source
        self.context = context or pyudev.Context()
        self.monitor = pyudev.Monitor.from_netlink(self.context, source=source)
        self.monitor.filter_by("pci")
        try:
            self.monitor.set_receive_buffer_size(self.RECEIVE_BUFFER)
        except (OSError, EnvironmentError) as e:
            if logger:
                logger.warning("cannot raise the uevent receive buffer to 1 MiB (%s); "
                               "large SR-IOV bursts may lose events", e)
        self._rpipe, self._wpipe = os.pipe()
        self.monitor.start()

    def close(self) -> None:
        os.write(self._wpipe, b"x")

    def __iter__(self) -> Iterator[Event]:
        while True:
            r, _, _ = select.select([self.monitor.fileno(), self._rpipe], [], [])
            if self._rpipe in r:
                return
            device = self.monitor.poll(timeout=0)
            if device is None:
                continue
            ev = to_event(device)
            if ev is not None:
                yield ev

    def poll(self, timeout: float):
        """The events queued, waiting up to `timeout` for the first; None
        once closed (KernelSource.poll)."""
        r, _, _ = select.select([self.monitor.fileno(), self._rpipe], [], [], timeout)
        if self._rpipe in r:
            return None
        out = []
        while r:
            device = self.monitor.poll(timeout=0)
            if device is None:
                break
            ev = to_event(device)
            if ev is not None:
                out.append(ev)
        return out


def udevd_running(control: str = "/run/udev/control") -> bool:
    """Is a udevd listening?  Its control socket outlives it, so connect
    rather than check that the file exists: a daemon that trusted a stale
    socket listened for udev events nobody sent (seen on the real-kernel
    tier)."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        s.connect(control)
        return True
    except OSError:
        return False
    finally:
        s.close()


def to_event(device) -> Optional[Event]:
    """A pyudev.Device (as a monitor returns it) to an Event."""
    action = device.action
    address = device.sys_name
    if action not in ACTIONS or not address:
        return None
    return Event(action, address, device.driver, device.sequence_number)
