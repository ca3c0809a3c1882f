"""A hot-added device is probed by the kernel at once, and its driver link
is there from the probe's start.  The daemon's guards must see what that
probe made, so on an add event it waits for the probe's bind uevent (or
for the link to go: a failed probe sends none), up to daemon.PROBE_WAIT,
and past that leaves the device to the bind uevent."""

from __future__ import annotations

import logging
import threading
import time

from vfio_flavourd import daemon as daemon_mod
from vfio_flavourd.daemon import wait_idle
from vfio_flavourd.events import Event
from vfio_flavourd.sim import ProbeFails

from simhost import driver_of
from test_daemon import Harness
from test_deadline import sim, wait_for

NEW = "0000:07:00.0"


def _hold_binds(h, address):
    """The harness's source keeps back the bind uevents of `address`, as
    if the kernel's probe of it were still running; returns (held, let_go)."""
    held, lock = [], threading.Lock()
    push = h.source.push

    def hold(ev):
        with lock:
            if ev.address == address and ev.action == "bind" and held is not None:
                held.append(ev)
                return
        push(ev)

    h.source.push = hold

    def let_go():
        with lock:
            events = list(held)
            held.clear()
        for ev in events:
            push(ev)
        return events

    return held, let_go


def _add_nic(kernel):
    kernel.add_device(NEW, 0x8086, 0x10D3, 0x020000, subsys=(0x8086, 0xA01F))


def _started(tmp_path, hold=True):
    """A daemon on the simulated host, idle; with hold, the bind uevents of
    NEW kept back: (kernel, harness, held, let_go)."""
    kernel, _ = sim(tmp_path)
    h = Harness(tmp_path, kernel)
    held, let_go = _hold_binds(h, NEW) if hold else ([], None)
    h.start()
    h.idle()
    return kernel, h, held, let_go


def _bound_to_vfio(h):
    assert wait_for(lambda: driver_of(h.kernel, NEW) == "vfio-pci", 10), h.log_text()[-5:]


def test_an_added_device_is_bound_only_once_the_kernels_probe_has_ended(tmp_path):
    kernel, h, held, let_go = _started(tmp_path)
    _add_nic(kernel)
    assert wait_for(lambda: held, 5)          # the kernel's own probe bound e1000e
    time.sleep(0.4)
    assert driver_of(kernel, NEW) == "e1000e", h.log_text()[-5:]
    assert [ev.driver for ev in let_go()] == ["e1000e"]
    _bound_to_vfio(h)
    assert h.stop() == 0


def test_a_probe_longer_than_the_wait_leaves_the_device_to_its_bind_uevent(
        tmp_path, monkeypatch):
    monkeypatch.setattr(daemon_mod, "PROBE_WAIT", 0.2)
    kernel, h, held, let_go = _started(tmp_path)
    _add_nic(kernel)
    assert wait_for(lambda: any("still probing" in m for m in h.log_text()), 5), \
        h.log_text()[-5:]
    h.idle()
    time.sleep(0.3)
    assert driver_of(kernel, NEW) == "e1000e"
    let_go()
    _bound_to_vfio(h)
    assert h.stop() == 0


def test_a_failed_probe_is_not_waited_for(tmp_path, monkeypatch):
    # No bind uevent follows a failed probe, and the link goes with it.
    monkeypatch.setattr(daemon_mod, "PROBE_WAIT", 30.0)
    kernel, h, _, _ = _started(tmp_path, hold=False)
    kernel.inject(ProbeFails("e1000e", address=NEW, times=1))
    _add_nic(kernel)
    _bound_to_vfio(h)
    assert not any("still probing" in m for m in h.log_text())
    assert h.stop() == 0


def test_a_replayed_add_of_a_bound_device_is_not_waited_for(tmp_path, monkeypatch):
    # udevadm trigger's add names the bound driver; no bind uevent follows it.
    monkeypatch.setattr(daemon_mod, "PROBE_WAIT", 30.0)
    kernel, h, _, _ = _started(tmp_path, hold=False)
    _add_nic(kernel)
    _bound_to_vfio(h)
    h.idle()
    h.source.push(Event("add", NEW, "vfio-pci", 10_000))
    assert wait_idle(h.daemon, 5), "the replayed add was waited for"
    assert not any("still probing" in m for m in h.log_text())
    assert h.stop() == 0


def test_the_sources_own_add_after_lost_uevents_is_not_waited_for(tmp_path, monkeypatch):
    # KernelSource.rescan: after ENOBUFS every device comes back as an add
    # event of the source's own, with no seqnum; the bind uevent it would
    # wait for may be among those lost.
    monkeypatch.setattr(daemon_mod, "PROBE_WAIT", 30.0)
    kernel, _ = sim(tmp_path)
    h = Harness(tmp_path, kernel)
    seen = []
    push = h.source.push
    h.source.push = lambda ev: seen.append(ev) if ev.address == NEW else push(ev)
    h.start()
    h.idle()
    _add_nic(kernel)        # its add and bind uevents lost
    assert wait_for(lambda: len(seen) >= 2, 5)
    h.source.push = push
    push(Event("add", NEW))
    _bound_to_vfio(h)
    assert not any("still probing" in m for m in h.log_text())
    assert h.stop() == 0


def test_a_device_the_policy_leaves_alone_is_not_waited_for(tmp_path, monkeypatch):
    # The wait is for the guards, and only a bind asks them: an igb, which
    # no rule names, is not held up while its bind uevent is kept back.
    monkeypatch.setattr(daemon_mod, "PROBE_WAIT", 30.0)
    kernel, h, held, let_go = _started(tmp_path)
    kernel.add_device(NEW, 0x8086, 0x1521, 0x020000)
    assert wait_for(lambda: held, 5)
    assert wait_idle(h.daemon, 5), "a device no rule names waited for the kernel's probe"
    assert driver_of(kernel, NEW) == "igb"
    let_go()
    assert h.stop() == 0


def test_a_group_member_still_probing_does_not_stop_the_others(tmp_path, monkeypatch):
    # A multi-function card's functions are added and probed together; a
    # 'group: all' rule on the first must not give up on the third because
    # the kernel still probes the second.
    from simhost import build_host, make_ctx, write_policy
    from vfio_flavourd.daemon import Daemon
    from vfio_flavourd.notify import Notifier
    monkeypatch.setattr(daemon_mod, "PROBE_WAIT", 0.1)
    b = build_host(tmp_path)
    b.bridge("0000:00:07.0", secondary=0x07)
    for fn in range(3):
        b.device(f"0000:07:00.{fn}", 0x8086, 0x10D3, 0x020000, driver="e1000e",
                 iommu_group=77)
    kernel = b.kernel()
    write_policy(tmp_path, """\
        version: 1
        rules:
          - {name: g, match: {address: "0000:07:00.0"}, flavour: vfio, group: all}
        """)
    logged = []
    logger = logging.getLogger(f"test-group-{id(logged)}")
    logger.propagate = False
    handler = logging.Handler()
    handler.emit = lambda r: logged.append(r.getMessage())
    logger.addHandler(handler)
    d = Daemon(make_ctx(kernel), None, Notifier(environ={}), settle_timeout=0, logger=logger)
    d._probing.add("0000:07:00.1")      # its add read, its bind uevent not yet
    d.handle("0000:07:00.0", "add")
    assert [driver_of(kernel, f"0000:07:00.{fn}") for fn in range(3)] == \
        ["vfio-pci", "e1000e", "vfio-pci"]
    assert d.counts["bound"] == 2 and d.counts["failed"] == 0
    # What the log promises is what brings it back: not its bind uevent.
    assert [m for m in logged if "still probing" in m] == [
        "0000:07:00.1: the kernel is still probing it after 0.1 s, so it stays on its host "
        "driver, though 'group: all' takes IOMMU group 77 with 0000:07:00.0; the group is "
        "not viable until it moves (release and apply 0000:07:00.0 again)"]
    from vfio_flavourd import actions, pci
    ctx = d.ctx
    binder = ctx.binder(0)
    assert binder.release(pci.fresh(ctx.sysfs, "0000:07:00.0")).result == "released"
    for dec in actions.expand_groups(ctx, actions.decisions_for(ctx, ["0000:07:00.0"])):
        actions.carry_out(ctx, binder, dec)
    assert [driver_of(kernel, f"0000:07:00.{fn}") for fn in range(3)] == ["vfio-pci"] * 3
