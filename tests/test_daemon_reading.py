"""The thread that reads an event and binds its device keeps the reading
while it works, and gives it up before it waits (daemon._let_go, deadline.before_wait)."""

import threading
import time

from vfio_flavourd.events import FakeSource
from vfio_flavourd.state import DeviceLock

from simhost import PF, driver_of
from test_daemon import harness  # noqa: F401  (a fixture)

VF = "0000:3b:00.2"


class _Timeline(FakeSource):
    """A FakeSource that notes which thread took each event, by either way
    of reading; the test adds the daemon's timed writes to the same list."""

    def __init__(self):
        super().__init__()
        self.timeline = []      # ("read", event, thread) and ("timed", rel, thread)

    def __iter__(self):
        for ev in super().__iter__():
            self.timeline.append(("read", ev, threading.get_ident()))
            yield ev

    def poll(self, timeout):
        got = super().poll(timeout)
        for ev in got or ():
            self.timeline.append(("read", ev, threading.get_ident()))
        return got


def _start(harness):
    h = harness()
    h.source = h.daemon.source = _Timeline()
    h.kernel.subscribe(h.source.push_uevent)
    write_timed = h.kernel.sysfs.write_timed

    def timed(rel, *a, **kw):
        h.source.timeline.append(("timed", rel, threading.get_ident()))
        try:
            return write_timed(rel, *a, **kw)
        finally:    # who holds the reading once the write is made
            h.source.timeline.append(("holder", rel, h.daemon._holder))
    h.kernel.sysfs.write_timed = timed
    h.start()
    h.idle()
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "0")
    h.idle()
    end = time.monotonic() + 10      # the second thread back to waiting for work
    while h.daemon._idle != 1:
        assert time.monotonic() < end, "the second thread never went back to waiting"
        time.sleep(0.001)
    del h.source.timeline[:]
    return h


def test_until_its_first_wait_only_the_binding_thread_reads(harness):
    # The simulated kernel probes a new VF with mlx5_core as it adds it: the
    # add and that probe's bind uevent are queued together.  The thread that
    # reads the add reads the bind as well, itself, while it waits for the
    # probe to end; nobody else reads before its unbind.
    h = _start(harness)
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "1")
    h.idle()
    assert driver_of(h.kernel, VF) == "mlx5_vfio_pci"
    tl = h.source.timeline
    first = next(i for i, e in enumerate(tl) if e[0] == "timed" and e[1].endswith("/unbind"))
    binder = tl[first][2]
    before = [(e[1].action, e[1].address, e[2] == binder) for e in tl[:first]]
    assert ("add", VF, True) in before and ("bind", VF, True) in before, tl
    assert all(mine for _, _, mine in before), tl
    # It gave the reading up with the write: whichever thread is free first
    # reads the unbind and the variant's bind.
    assert tl[first + 1] == ("holder", tl[first][1], None), tl
    assert h.daemon._workers == 2 and h.stop() == 0


def test_a_thread_that_waits_for_a_device_lock_lets_the_others_read(harness):
    # A person's `apply` holds the new VF's lock: the daemon's thread waits
    # for it, and the add of the next VF is read meanwhile, not after.
    h = _start(harness)
    lock = DeviceLock(h.ctx.root, VF, timeout=1)
    with lock:
        h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "1")
        end = time.monotonic() + 10
        while not any(e[0] == "read" and e[1].address == VF and e[1].action == "bind"
                      for e in h.source.timeline):
            assert time.monotonic() < end, h.source.timeline
            time.sleep(0.005)
        h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "0")
        end = time.monotonic() + 10
        while not any(e[0] == "read" and e[1].address == VF and e[1].action == "remove"
                      for e in h.source.timeline):
            assert time.monotonic() < end, ("nothing read while a thread waits for a lock",
                                            h.source.timeline)
            time.sleep(0.005)
    h.idle()
    assert h.stop() == 0


class _IterateOnly:
    """A source with no poll(): the holder cannot read it between turns."""

    def __init__(self):
        self._fake = FakeSource()
        self.name = "iterate-only"

    @property
    def pushed(self):
        return self._fake.pushed

    def push_uevent(self, uevent):
        self._fake.push_uevent(uevent)

    def close(self):
        self._fake.close()

    def __iter__(self):
        return iter(self._fake)


def test_a_source_without_poll_gets_the_reading_handed_over_for_the_probe(harness):
    h = harness()
    h.source = h.daemon.source = _IterateOnly()
    h.kernel.subscribe(h.source.push_uevent)
    h.start()
    h.idle()
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "0")
    h.idle()
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "1")
    h.idle()
    assert driver_of(h.kernel, VF) == "mlx5_vfio_pci"
    # Its probe's bind uevent was read by another thread in time: the device
    # was not left to it after the whole wait.
    assert not [m for m in h.log_text() if "still probing" in m], h.log_text()
    assert h.stop() == 0
