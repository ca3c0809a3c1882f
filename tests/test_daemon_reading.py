"""The thread that reads an event and binds its device keeps the reading
while it works, and gives it up before it waits (daemon._let_go,
deadline.before_wait): at once for a device lock, after deadline.HOLD for a
write it asked for."""

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


def test_the_binding_thread_alone_reads_until_its_device_is_bound(harness):
    # The simulated kernel probes a new VF with mlx5_core as it adds it: the
    # add and that probe's bind uevent are queued together.  The thread that
    # reads the add reads the bind as well, itself, while it waits for the
    # probe to end.  Its unbind and probe return at once: it holds the
    # reading through them, and reads what they sent when it is done.
    h = _start(harness)
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "1")
    h.idle()
    assert driver_of(h.kernel, VF) == "mlx5_vfio_pci"
    tl = h.source.timeline
    timed = [i for i, e in enumerate(tl) if e[0] == "timed"]
    assert [tl[i][1].rsplit("/", 1)[-1] for i in timed] == [
        "driver_override", "unbind", "drivers_probe"], tl
    binder = tl[timed[0]][2]
    reads = [(e[1].action, e[1].address, e[2] == binder) for e in tl if e[0] == "read"]
    assert ("add", VF, True) in reads and ("bind", VF, True) in reads, tl
    assert all(mine for _, _, mine in reads), tl
    assert [e for e in tl if e[0] == "holder"] == [
        ("holder", tl[i][1], binder) for i in timed], tl
    # The variant's bind uevent, read after both writes.
    last = max(i for i, e in enumerate(tl) if e[0] == "read" and e[1].action == "bind")
    assert last > timed[-1] and tl[last][1].driver == "mlx5_vfio_pci", tl
    assert h.daemon._workers == 2 and h.stop() == 0


def test_a_write_that_hangs_past_hold_lets_the_others_read(harness, monkeypatch):
    # The unbind of the new VF's host driver hangs.  The binding thread
    # keeps the reading for deadline.HOLD, then gives it up, and the VF's
    # remove is read while that write still hangs.
    from vfio_flavourd import deadline
    from vfio_flavourd.sim.faults import Hang
    monkeypatch.setattr(deadline, "HOLD", 0.4)
    h = _start(harness)
    hang = Hang("sys/bus/pci/drivers/*/unbind", VF)
    h.kernel.inject(hang)
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "1")
    assert hang.waiting.wait(10), h.source.timeline
    began = time.monotonic()
    assert h.daemon._holder is not None
    end = began + 10
    while h.daemon._holder is not None:
        assert time.monotonic() < end, "the reading was never handed over"
        time.sleep(0.002)
    held = time.monotonic() - began
    assert held >= 0.2, f"handed over {held:.3f} s into the write, before HOLD"
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "0")
    while not any(e[0] == "read" and e[1].address == VF and e[1].action == "remove"
                  for e in h.source.timeline):
        assert time.monotonic() < end, ("nothing read while a write hangs",
                                        h.source.timeline)
        time.sleep(0.005)
    assert not [e for e in h.source.timeline
                if e[0] == "holder" and e[1].endswith("/unbind")]       # still hanging
    hang.release()
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
