import logging
import os
import signal
import socket
import threading
import time

import pytest

from vfio_flavourd.daemon import Daemon, wait_idle
from vfio_flavourd.events import Event, FakeSource
from vfio_flavourd.notify import Notifier
from vfio_flavourd.sim import HostBuilder, Vanish

from simhost import PF, VF0, VF1, VIRTIO, build_host, driver_of, make_ctx, write_policy

POLICY = """\
version: 1
rules:
  - name: mlx5-vfs
    match: {vendor: 0x15b3, virtfn: true}
    flavour: vfio
  - name: virtio
    match: {vendor: 0x1af4}
    flavour: vfio
"""


class Harness:
    """A daemon on the simulated kernel, fed by a FakeSource subscribed to the
    kernel's uevents, with sd_notify going to a socket we read."""

    def __init__(self, tmp_path, kernel, watchdog_usec=None):
        self.kernel = kernel
        self.ctx = make_ctx(kernel)
        self.source = FakeSource()
        kernel.subscribe(self.source.push_uevent)
        self.sock_path = str(tmp_path / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        env = {"NOTIFY_SOCKET": self.sock_path}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.records = []
        logger = logging.getLogger(f"test-daemon-{id(self)}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        handler = logging.Handler()
        handler.emit = self.records.append
        logger.addHandler(handler)

        def fresh_context(old):
            ctx = make_ctx(kernel)
            return ctx

        self.daemon = Daemon(self.ctx, self.source, Notifier(environ=env), logger=logger,
                             make_context=fresh_context, settle_timeout=0)
        self.ready = threading.Event()
        self.rc = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.rc = self.daemon.run(ready_hook=lambda d: self.ready.set())

    def start(self):
        self.thread.start()
        assert self.ready.wait(30), "daemon never became ready"
        return self

    def messages(self, timeout=0.5):
        """What arrived, until nothing more came for `timeout` (or for at
        most 5 s: watchdog pings never stop)."""
        self.sock.settimeout(timeout)
        out = []
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline:
                out.append(self.sock.recv(4096).decode())
        except socket.timeout:
            pass
        return out

    def idle(self, timeout=120):
        # generous: a package build runs this on a loaded builder's disk
        assert wait_idle(self.daemon, timeout)

    def stop(self):
        self.daemon.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self.rc

    def log_text(self):
        return [r.getMessage() for r in self.records]


@pytest.fixture
def harness(tmp_path):
    made = []

    def make(builder=None, policy=POLICY, **kw):
        b = builder or build_host(tmp_path)
        kernel = b.kernel()
        write_policy(tmp_path, policy)
        h = Harness(tmp_path, kernel, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        if h.thread.is_alive():
            h.stop()


def test_coldplug_then_ready(harness):
    h = harness().start()
    assert driver_of(h.kernel, VF0) == "mlx5_vfio_pci"
    assert driver_of(h.kernel, VF1) == "mlx5_vfio_pci"
    assert driver_of(h.kernel, VIRTIO) == "virtio_vfio_pci"
    msgs = h.messages()
    assert msgs[0] == "READY=1\nSTATUS=3 managed, 3 bound, 0 failed, 0 refused"
    assert h.stop() == 0
    assert h.messages()[-1] == "STOPPING=1\nSTATUS=stopping"


def test_hotplug_after_host_driver_bound_first(harness):
    h = harness().start()
    # A new VF appears; the kernel probes it with mlx5_core before anyone
    # sees the add event (the hotplug ordering of kernel-facts.md).
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "0")
    h.idle()
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "4")
    h.idle()
    for a in ("0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4", "0000:3b:00.5"):
        assert driver_of(h.kernel, a) == "mlx5_vfio_pci", a
    assert h.daemon.counts["failed"] == 0


class _ReadBy(FakeSource):
    """A FakeSource that notes which thread took each event from it."""

    def __init__(self):
        super().__init__()
        self.read_by = []       # (event, thread ident)

    def __iter__(self):
        for ev in super().__iter__():
            self.read_by.append((ev, threading.get_ident()))
            yield ev


def test_the_thread_that_reads_an_add_binds_the_device_itself(harness):
    # That another thread reads on meanwhile is test_deadline's hot-added
    # device whose unbind hangs; here binding takes no time, and whichever
    # thread is free takes the reading next.
    h = harness()
    h.source = h.daemon.source = _ReadBy()
    h.kernel.subscribe(h.source.push_uevent)
    handled = []
    handle = h.daemon.handle
    h.daemon.handle = lambda a, action: (handled.append((a, action, threading.get_ident())),
                                         handle(a, action))
    h.start()
    h.idle()
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "0")
    h.idle()
    del handled[:]
    seen = len(h.source.read_by)
    end = time.monotonic() + 10      # the other thread back to waiting for work
    while h.daemon._idle != 1:
        assert time.monotonic() < end, "the second thread never went back to waiting"
        time.sleep(0.001)
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "1")
    h.idle()
    vf = "0000:3b:00.2"
    assert driver_of(h.kernel, vf) == "mlx5_vfio_pci"
    read = h.source.read_by[seen:]
    add = next(t for ev, t in read if ev.address == vf and ev.action == "add")
    # Bound on its add event by the thread that read it: no hand-off to a
    # woken worker.
    assert (vf, "add", add) in handled, (handled, read)
    assert h.daemon._workers == 2 and h.stop() == 0


def test_burst_of_1000_vfs_loses_nothing(harness, tmp_path):
    b = (HostBuilder(tmp_path)
         .host_bridge("0000:00:00.0")
         .bridge("0000:00:01.0", secondary=0x01)
         .sriov_pf("0000:01:00.0", 0x15B3, 0x101D, 0x020000, vf_device=0x101E, totalvfs=1000,
                   numvfs=0, driver="mlx5_core"))
    h = harness(b).start()
    h.kernel.sysfs.write("sys/bus/pci/devices/0000:01:00.0/sriov_numvfs", "1000")
    h.idle()
    vfs = h.kernel.sysfs.entries("sys/bus/pci/drivers/mlx5_vfio_pci")
    vfs = [v for v in vfs if v.startswith("0000:")]
    assert len(vfs) == 1000
    assert h.daemon.events_seen >= 1000
    assert len(h.ctx.state.read()) == 1000 or len(h.daemon.ctx.state.read()) == 1000
    assert h.daemon.counts["bound"] == 1000


def test_device_removed_while_binding(harness):
    h = harness().start()
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "0")
    h.idle()
    # Unplugged right before the daemon's first write to it (write 1 is ours,
    # to sriov_numvfs, below).
    h.kernel.inject(Vanish("0000:3b:00.2", at_write=h.kernel.write_count + 2))
    h.kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "2")
    h.idle()
    assert not h.kernel.sysfs.exists("sys/bus/pci/devices/0000:3b:00.2")
    assert driver_of(h.kernel, "0000:3b:00.3") == "mlx5_vfio_pci"
    assert h.daemon.ctx.state.get("0000:3b:00.2") is None
    assert h.thread.is_alive()


def test_remove_event_forgets(harness):
    h = harness().start()
    assert h.ctx.state.get(VIRTIO) is not None
    h.kernel.remove_device(VIRTIO)
    h.idle()
    assert h.daemon.ctx.state.get(VIRTIO) is None


def test_one_device_failure_does_not_stop_the_daemon(harness):
    h = harness().start()
    h.source.push(Event("add", "0000:99:00.0"))   # no such device
    h.source.push(Event("add", "not-an-address"))
    h.idle()
    assert h.thread.is_alive()
    h.kernel.remove_device(VIRTIO)
    h.idle()
    assert h.daemon.ctx.state.get(VIRTIO) is None


def test_sighup_reloads_good_policy_and_keeps_old_on_broken(harness, tmp_path):
    h = harness().start()
    h.daemon.install_signal_handlers()
    write_policy(tmp_path, POLICY.replace("flavour: vfio\n", "flavour: host\n", 2).replace(
        "  - name: mlx5-vfs", "  - name: mlx5-vfs") .replace(
        "name: virtio\n    match: {vendor: 0x1af4}\n    flavour: host",
        "name: virtio\n    match: {vendor: 0x1af4}\n    flavour: host"))
    # Now both rules say host: the devices go back to their host drivers.
    os.kill(os.getpid(), signal.SIGHUP)
    deadline = time.monotonic() + 10
    while driver_of(h.kernel, VIRTIO) != "virtio-pci" and time.monotonic() < deadline:
        time.sleep(0.02)
    h.idle()
    assert driver_of(h.kernel, VIRTIO) == "virtio-pci"
    assert driver_of(h.kernel, VF0) == "mlx5_core"
    msgs = h.messages()
    assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in msgs)
    assert any(m.startswith("READY=1") for m in msgs)

    write_policy(tmp_path, "version: 1\nrules:\n  - {name: x, match: {vendr: 1}, flavour: vfio}\n")
    h.daemon.request_reload()
    deadline = time.monotonic() + 10
    while not any("old one stays in force" in m for m in h.log_text()) \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert any("old one stays in force" in m for m in h.log_text())
    assert any("rules[0].match.vendr: unknown key" in m for m in h.log_text())
    assert [r.name for r in h.daemon.ctx.policy.rules] == ["mlx5-vfs", "virtio"]
    assert h.thread.is_alive()


def test_sigterm_mid_burst_finishes_device_in_hand(harness, tmp_path):
    b = (HostBuilder(tmp_path)
         .host_bridge("0000:00:00.0")
         .bridge("0000:00:01.0", secondary=0x01)
         .sriov_pf("0000:01:00.0", 0x15B3, 0x101D, 0x020000, vf_device=0x101E, totalvfs=300,
                   numvfs=0, driver="mlx5_core"))
    h = harness(b).start()
    h.daemon.install_signal_handlers()
    h.kernel.sysfs.write("sys/bus/pci/devices/0000:01:00.0/sriov_numvfs", "300")
    os.kill(os.getpid(), signal.SIGTERM)
    h.thread.join(30)
    assert h.rc == 0
    # Every VF is on a driver, never half-moved: the one in hand was finished.
    for a in h.kernel.sysfs.entries("sys/bus/pci/devices"):
        if a.startswith("0000:01:00.") and a != "0000:01:00.0":
            drv = driver_of(h.kernel, a)
            ov = h.kernel.sysfs.read(f"sys/bus/pci/devices/{a}/driver_override")
            assert drv in ("mlx5_core", "mlx5_vfio_pci"), a
            assert ov in ("(null)", drv), a
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def test_watchdog_pings(harness):
    h = harness(watchdog_usec=200_000).start()
    time.sleep(0.5)
    msgs = h.messages()
    assert msgs.count("WATCHDOG=1") >= 3


def test_dry_run_changes_nothing(harness):
    h = harness()
    h.daemon.dry_run = True
    h.start()
    assert driver_of(h.kernel, VF0) == "mlx5_core"
    assert any("dry-run" in m for m in h.log_text())


def test_failed_device_is_not_retried_on_its_own_rollback_events(harness):
    policy = POLICY.replace("    flavour: vfio\n  - name: virtio", "    flavour: vfio\n    fallback: none\n  - name: virtio")
    h = harness(policy=policy)
    from vfio_flavourd.sim import ProbeFails
    h.kernel.inject(ProbeFails("mlx5_vfio_pci"))
    h.start()
    h.idle()
    assert driver_of(h.kernel, VF0) == "mlx5_core"
    assert h.daemon.ctx.state.get(VF0)["outcome"] == "failed"
    probes = len([op for op in h.kernel.ops if op.kind == "probe"])
    time.sleep(0.3)
    h.idle()
    assert len([op for op in h.kernel.ops if op.kind == "probe"]) == probes
    # A reload tries again.
    h.daemon.request_reload()
    deadline = time.monotonic() + 10
    while len([op for op in h.kernel.ops if op.kind == "probe"]) == probes and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    h.idle()
    assert len([op for op in h.kernel.ops if op.kind == "probe"]) > probes


def test_pending_events_merge_by_strength(harness):
    h = harness()
    d = h.daemon
    d.enqueue("0000:01:00.0", "unbind")
    d.enqueue("0000:01:00.0", "bind")
    d.enqueue("0000:01:00.1", "add")
    d.enqueue("0000:01:00.1", "unbind")
    d.enqueue("0000:01:00.2", "add")
    d.enqueue("0000:01:00.2", "remove")
    assert dict(d._pending) == {"0000:01:00.0": "bind", "0000:01:00.1": "add",
                                "0000:01:00.2": "remove"}
