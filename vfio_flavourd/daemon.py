"""The daemon: coldplug, then act on PCI uevents until told to stop.

Threads: a pool of at least two.  One at a time reads the event source
(the reader) into a pending set keyed by address, so that a burst of
1,000 VF adds can neither overflow nor be lost: one entry per device,
however many events.  The others bind.  When an event comes and another
thread is idle, the reader binds the device itself (leader and
followers): the thread that is already awake takes the device.  Handing
the device to a woken worker instead cost each hotplug a wake-up, 2 to
12 ms under QEMU/TCG while the kernel was still probing the new device
(bench figure 7).  It keeps the reading while it works and reads nothing
meanwhile (what comes waits in the socket), so that no thread wakes to
contend with it; it reads the source itself while it waits for the
kernel's probe, and gives the reading up to the idle thread before it
waits on anything else (deadline.before_wait; for its own unbind and
probe, once they have taken deadline.HOLD).  The main thread handles
signals (whose handlers only set flags), reloads, the watchdog and
status.

A device the kernel has just added is probed by the kernel itself at once.
Before its guards are asked, the daemon waits for that probe's bind
uevent (or for the driver link to go, when the probe fails), so that they
see what the host driver made; past PROBE_WAIT the device is left to the
bind uevent.  It reads and decides on the device meanwhile.

An unbind can take minutes or never return (deadline.py).  The thread
that binds gives the reading up once one has taken deadline.HOLD, so
reading never waits on a write for longer.  When every thread that binds
is waiting on such a slow write, another is started for the rest of the
queue (up to MAX_WORKERS); the pool shrinks back to two once the queue is
empty.  No two threads ever hold the same device.  Past its deadline a
device is `stuck`; when the kernel finishes, its bind or unbind uevent
brings it back here, and the move is completed or rolled back.
"""

from __future__ import annotations

import collections
import logging
import signal
import sys
import threading
import time


from . import actions, deadline, log, pci
from .context import Context
from .errors import FlavourdError, PolicyError, ProbeRunning

REMOVE = "remove"
SWITCH_INTERVAL = 0.0005      # seconds; see Daemon.run
MAX_WORKERS = 16              # threads that bind at once; the reader besides
POOL = 2                      # threads kept: the reader and one idle or binding
# An idle thread is woken by whatever gives it work (each change to the
# pending set, the reading or the pool notifies); the timeout is only a
# safety net.  At 0.5 s an idle daemon woke twice a second for nothing.
IDLE_WAIT = 30.0
# A device the kernel has just added is probed by the kernel at once, and its
# driver link is there from the probe's start (driver_sysfs_add comes before
# the driver's probe()).  Its guards must see what that probe made, so the
# daemon waits for the probe's bind uevent (or the link to go: a failed
# probe sends none) this long, then leaves the device to that uevent.
PROBE_WAIT = 1.0
# When several events for one device are pending, the strongest decides what
# the worker does with it.
_STRENGTH = {"unbind": 0, "bind": 1, "change": 2, "add": 3, REMOVE: 4}


class Daemon:
    def __init__(self, ctx: Context, source, notifier, *, dry_run=False, logger=None,
                 make_context=None, settle_timeout: float = 1.0, publisher=None):
        self.ctx = ctx
        self.source = source
        self.notifier = notifier
        self.dry_run = dry_run
        self.log = logger or logging.getLogger(log.LOGGER)
        # Builds a fresh Context for a reload (new policy and modules.alias).
        self.make_context = make_context or (
            lambda old: Context(old.root, old.policy_paths, old.stderr))
        self.settle_timeout = settle_timeout
        self._pending: "collections.OrderedDict[str, str]" = collections.OrderedDict()
        self._cond = threading.Condition()
        self._ctx_lock = threading.Lock()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        self._reader_done = threading.Event()
        self.counts = collections.Counter()
        self.events_seen = 0
        self.handled = 0
        self._in_hand: set = set()      # addresses a thread is handling
        self._parked: set = set()       # ... of which waiting on a slow write
        self._workers = 0               # threads in the pool
        self._idle = 0                  # ... waiting for something to do
        self._reading = False           # ... one of which reads the source
        self._holder = None             # the thread that read its device and
                                        # holds the reading while it binds it
        self._events = None             # the source's iterator, shared by turns
        self._stuck: set = set()
        self._probing: set = set()      # added, and no bind uevent read since
        # Optional publish_daemon.Publisher: fleet files after each change.
        self.publisher = publisher

    @property
    def _busy(self) -> bool:
        return bool(self._in_hand)

    # -- signals: handlers only set flags ------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake.set()

    # -- event intake ---------------------------------------------------------------

    def enqueue(self, address: str, action: str) -> None:
        with self._cond:
            self._queue(address, action)
            self._cond.notify()

    def _queue(self, address: str, action: str) -> None:
        """With the condition held."""
        old = self._pending.get(address)
        if old is None or _STRENGTH.get(action, 2) >= _STRENGTH.get(old, 2):
            self._pending[address] = action
        self._spare_worker()

    def _spare_worker(self) -> None:
        """With the condition held: start a thread when none is idle, every
        thread that binds waits on a slow write, and something else is
        pending."""
        if (self._idle == 0 and self._in_hand and self._in_hand <= self._parked
                and len(self._in_hand) < MAX_WORKERS and self._unheld_pending()):
            self._start_thread("binder-spare")

    def _unheld_pending(self) -> bool:
        """With the condition held: is a device pending that no thread holds?"""
        return any(a not in self._in_hand for a in self._pending)

    def _slow(self, address: str) -> None:
        """Binder.on_slow: this thread's write has taken deadline.PATIENCE."""
        self.log.info("%s: the kernel is slow to finish a write; other devices go on",
                      address, extra={"fields": {"PCI_SLOT": address}})
        with self._cond:
            self._parked.add(address)
            self._spare_worker()
            self._cond.notify_all()

    def _read(self):
        """The reader's turn: read events into the pending set until one can
        be bound by this thread while an idle one could read on.  Returns
        that (address, action); this thread holds the reading until it
        would wait (_let_go).  None once the source has ended (or failed)."""
        try:
            for ev in self._events:
                with self._cond:
                    self._note(ev)
                    item = self._take() if self._idle else None
                    if item is None:
                        self._cond.notify_all()
                        continue
                    self._in_hand.add(item[0])
                    self._holder = threading.get_ident()
                    self._wake_for_others()
                return item
        except Exception:  # the reader must never die silently
            self.log.exception("event source failed")
            self.request_stop()
        with self._cond:
            self._reading = False
            self._reader_done.set()
            self._cond.notify_all()
        return None

    def _note(self, ev) -> None:
        """With the condition held: one event read."""
        if ev.action == "add" and ev.driver is None and ev.seqnum is not None:
            # device_add's own uevent.  A replayed one (udevadm trigger) of a
            # bound device names its driver; the source's own after lost
            # uevents has no seqnum, and the bind uevent may be among those
            # lost.
            self._probing.add(ev.address)
        elif ev.action in ("bind", "unbind", REMOVE):
            self._probing.discard(ev.address)
        self._queue(ev.address, ev.action)
        self.events_seen += 1       # wait_idle counts it

    def _wake_for_others(self) -> None:
        """With the condition held: wake the idle threads if a device no
        thread holds is pending.  Nobody is woken for the reading: the
        uevents that come while this thread works on its device (its own
        probe's bind among them) wait in the socket, where they cost
        nothing.  A thread woken for the reading contended for the
        interpreter at every system call of the binding one: under QEMU/TCG
        that was 1 to 6 ms of a hotplug as it began, and 1 to 4 ms again
        when the probe's bind uevent came (bench figure 7, traced)."""
        if self._unheld_pending():
            self._cond.notify_all()

    def _let_go(self) -> None:
        """The holder gives the reading up before it waits (deadline.before_wait)
        or logs: an idle thread reads on, one started if none is left."""
        if self._holder != threading.get_ident():
            return
        with self._cond:
            self._holder = None
            self._reading = False
            if not self._idle and self._workers <= MAX_WORKERS and not self._stop.is_set():
                self._start_thread("binder-reader")
            self._cond.notify_all()

    def _read_some(self, timeout: float) -> None:
        """The holder reads what the source has, waiting up to `timeout`
        for the first event, without handing the reading over."""
        events = self.source.poll(timeout)
        if events is None:      # closed: the next turn of the iterator ends it
            self._let_go()
            return
        if events:
            with self._cond:
                for ev in events:
                    self._note(ev)
                self._wake_for_others()

    # -- handling ----------------------------------------------------------------------

    def handle(self, address: str, action: str) -> None:
        """One device: a failure is logged and never stops the daemon."""
        with self._ctx_lock:
            ctx = self.ctx
        try:
            if action == REMOVE and pci.is_address(address) and \
                    not ctx.sysfs.exists(f"sys/bus/pci/devices/{address}"):
                deadline.before_wait()     # as before any log: journald may be slow
                if ctx.state.get(address) is not None:
                    ctx.state.update(address, None)
                    self.log.info("%s: removed; forgotten", address,
                                  extra={"fields": {"PCI_SLOT": address,
                                                    "MESSAGE_ID": log.MSG_GONE}})
                return
            rec = ctx.state.get(address) if action != REMOVE else None
            if rec and rec.get("outcome") == "stuck":
                if action not in ("bind", "unbind") and not actions.lock_is_free(
                        ctx.root, address):
                    return      # the write is still in the kernel
                deadline.before_wait()
                self.log.info("%s: %s event for a device that was stuck; the kernel has "
                              "finished, checking it again", address, action,
                              extra={"fields": {"PCI_SLOT": address}})
                out = actions.resume_stuck(ctx, ctx.binder(self.settle_timeout,
                                                           on_slow=self._slow), address, rec)
                if out is not None:
                    self._record(out)
                    return
            elif action == "unbind":
                # Our own unbinds, or a person's: a device left without a
                # driver is not a reason to act.
                return
            if action == "bind" and self._settled_failure(ctx, address):
                return
            binder = ctx.binder(self.settle_timeout, on_slow=self._slow,
                                await_probe=lambda a: self._probe_over(ctx, a))
            started = time.monotonic()
            d, out = actions.decide_and_carry_out(ctx, binder, address, dry_run=self.dry_run)
            deadline.before_wait()
            if out is None:
                return          # gone before we got to it: its remove event follows
            self._published(out, started)
            for member in actions.expand_groups(ctx, [d])[1:]:
                started = time.monotonic()
                try:
                    out = actions.carry_out(ctx, binder, member, dry_run=self.dry_run)
                except ProbeRunning:
                    # A function added with it (a multi-function card) whose
                    # probe outlasts the wait: the others go on.  Its own
                    # bind uevent does not bring the group back, and neither
                    # does a reload: its rule's device is on vfio already.
                    if not self._stop.is_set():
                        self.log.warning(
                            "%s: the kernel is still probing it after %g s, so it stays on "
                            "its host driver, though 'group: all' takes IOMMU group %s with "
                            "%s; the group is not viable until it moves (release and apply "
                            "%s again)", member.device.address, PROBE_WAIT,
                            d.device.iommu_group, address, address,
                            extra={"fields": {"PCI_SLOT": member.device.address}})
                    continue
                self._published(out, started)
        except ProbeRunning:
            # Its bind uevent, once the probe ends, brings it back here.
            deadline.before_wait()
            if not self._stop.is_set():
                self.log.info("%s: the kernel is still probing it after %g s; left to its "
                              "bind uevent", address, PROBE_WAIT,
                              extra={"fields": {"PCI_SLOT": address}})
            return
        except FlavourdError as e:
            deadline.before_wait()
            if ctx.sysfs.exists(f"sys/bus/pci/devices/{address}"):
                self.counts["failed"] += 1
                self.log.warning("%s: %s", address, e, extra={"fields": {
                    "PCI_SLOT": address, "MESSAGE_ID": log.MSG_FAILED}})
        except Exception:
            deadline.before_wait()
            self.counts["failed"] += 1
            self.log.exception("%s: unexpected error while handling %s", address, action)
        finally:
            self.handled += 1
            if self.publisher is not None:
                self.publisher.changed()

    def _probe_over(self, ctx, address: str) -> bool:
        """Binder.await_probe, asked before the guards: False when the
        kernel's own probe of a device just added has not ended within
        PROBE_WAIT (its bind uevent, which brings the device back here, not
        read; its driver link still there).  Traced on 6.12, reading
        driver_override did not wait for that probe, and guards asked during
        it see only part of what it makes.  Asked only there, after the
        device is read and decided on, so that those steps overlap the
        probe, and only for devices the policy binds."""
        link = f"sys/bus/pci/devices/{address}/driver"
        deadline = time.monotonic() + PROBE_WAIT
        me = threading.get_ident()
        wait = 0.0
        while True:
            # The holder of the reading reads the bind uevent itself, which
            # wakes it directly; the others wait for the reader's word.
            reading = self._holder == me
            if reading and not hasattr(self.source, "poll"):
                self._let_go()      # a source it cannot read between turns
                reading = False
            if reading:
                self._read_some(wait)
            with self._cond:
                if self._stop.is_set():
                    return False        # stopping: begin nothing new
                if address not in self._probing:
                    return True
            if ctx.sysfs.link(link) is None:
                return True     # not probed yet (the binder asks again should a driver
                                # turn up: Binder._ask_guards), or it failed
            left = deadline - time.monotonic()
            if left <= 0:
                return False    # the caller says what becomes of the device
            wait = min(left, 0.05)
            if not reading:
                with self._cond:
                    if address in self._probing:
                        self._cond.wait(wait)

    def _published(self, out, started: float) -> None:
        if self.publisher is not None:
            self.publisher.outcome(out, time.monotonic() - started)
        self._record(out)

    def _record(self, out) -> None:
        self.counts[out.result] += 1
        with self._cond:
            (self._stuck.add if out.result == "stuck" else self._stuck.discard)(out.address)
        log.log_outcome(self.log, out)

    def _settled_failure(self, ctx, address: str) -> bool:
        """A bind event for a device we failed to move and gave back to its
        driver: the event is our own rollback.  Acting on it would retry the
        same failure for ever (seen on the real-kernel tier); a reload or a
        new add event retries instead."""
        rec = ctx.state.get(address)
        if not rec or rec.get("outcome") != "failed":
            return False
        now = ctx.sysfs.link(f"sys/bus/pci/devices/{address}/driver")
        return now == rec.get("previous_driver")

    def _take(self):
        """With the condition held: the oldest pending device no thread holds."""
        for address in self._pending:
            if address not in self._in_hand:
                return address, self._pending.pop(address)
        return None

    def _next(self):
        """With the condition held: what this thread does next.  "read"
        (the reading is free), an (address, action) it now holds, or None:
        leave the pool."""
        while True:
            if self._stop.is_set():
                return None
            if not self._reading and not self._reader_done.is_set():
                self._reading = True
                return "read"
            item = self._take()
            if item is not None:
                self._in_hand.add(item[0])
                return item
            if self._workers > POOL or (self._reader_done.is_set() and not self._pending):
                return None
            self._idle += 1
            try:
                self._cond.wait(IDLE_WAIT)
            finally:
                self._idle -= 1

    def _serve(self) -> None:
        try:
            while True:
                with self._cond:
                    item = self._next()
                if item is None:
                    return
                if item == "read":
                    item = self._read()
                    if item is None:        # the source ended: what is pending
                        continue            # is still bound
                address, action = item
                try:
                    with deadline.waiting_hook(self._let_go):
                        self.handle(address, action)
                finally:
                    with self._cond:
                        if self._holder == threading.get_ident():
                            self._holder = None     # this thread reads next
                            self._reading = False
                        self._in_hand.discard(address)
                        self._parked.discard(address)
                        self._cond.notify_all()
                self._wake.set()
        finally:
            with self._cond:
                self._workers -= 1
                self._cond.notify_all()

    def _start_thread(self, name: str) -> None:
        """With the condition held."""
        self._workers += 1
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def coldplug(self) -> int:
        """Every device through the pool; returns once each is handled or
        waiting on a slow write (so one slow unbind does not hold up READY)."""
        with self._ctx_lock:
            ctx = self.ctx
        addresses = list(pci.addresses(ctx.sysfs))
        for address in addresses:
            self.enqueue(address, "add")
        with self._cond:
            while not self._stop.is_set() and (
                    any(a in addresses for a in self._pending)
                    or not self._in_hand <= self._parked):
                self._cond.wait(0.5)
        return len(addresses)

    # -- reload -------------------------------------------------------------------------

    def reload(self) -> bool:
        self.notifier.reloading()
        try:
            new = self.make_context(self.ctx)
            new.policy      # parse now: a broken policy must not replace the old one
            new.index
            if self.ctx._loader is not None:
                new.loader = self.ctx._loader
            if self.ctx._sysfs is not None:
                new.sysfs = self.ctx._sysfs
        except PolicyError as e:
            for p in e.problems:
                self.log.error("reload: %s", p, extra={"fields": {
                    "MESSAGE_ID": log.MSG_RELOAD_FAILED}})
            self.log.error("reload: the new policy has %d problems; the old one stays in "
                           "force", e.total)
            self.notifier.ready(self.status_text() + "; reload failed, old policy in force")
            return False
        except FlavourdError as e:
            self.log.error("reload failed: %s; the old policy stays in force", e)
            self.notifier.ready(self.status_text() + "; reload failed, old policy in force")
            return False
        except Exception as e:  # whatever breaks a reload must not stop the daemon
            self.log.exception("reload failed: %r; the old policy stays in force", e)
            self.notifier.ready(self.status_text() + "; reload failed, old policy in force")
            return False
        with self._ctx_lock:
            self.ctx = new
        self.log.info("reloaded: %d rules, %d vfio_pci aliases", len(new.policy.rules),
                      len(new.index), extra={"fields": {"MESSAGE_ID": log.MSG_RELOADED}})
        for address in pci.addresses(new.sysfs):
            self.enqueue(address, "change")
        self.notifier.ready(self.status_text())
        return True

    # -- main loop ----------------------------------------------------------------------

    def status_text(self) -> str:
        with self._ctx_lock:
            ctx = self.ctx
        managed = ctx.state.count()
        with self._cond:
            stuck = len(self._stuck)
        return (f"{managed} managed, {self.counts['bound']} bound, "
                f"{self.counts['failed']} failed, {self.counts['refused']} refused"
                + (f", {stuck} stuck" if stuck else ""))

    def run(self, ready_hook=None) -> int:
        self.ctx.policy, self.ctx.index    # fail early, before touching anything
        # The reader parses the uevents that the binding thread's own
        # unbind and probe cause while it works.  A thread woken for the
        # GIL waits for the holder's switch interval, 5 ms by default:
        # under TCG two such hand-offs, event to worker and probe to
        # settle, were 12 ms of the 90 from an add event to the variant
        # bound (bench figure 7 measures it).
        before = sys.getswitchinterval()
        sys.setswitchinterval(min(before, SWITCH_INTERVAL))
        try:
            return self._run(ready_hook)
        finally:
            sys.setswitchinterval(before)

    def _run(self, ready_hook) -> int:
        self._events = iter(self.source)
        with self._cond:   # one takes the reading, one the coldplug
            for _ in range(POOL):
                self._start_thread("binder")
        n = self.coldplug()
        self.log.info("coldplug done: %d devices, %s; listening on %s events",
                      n, self.status_text(), getattr(self.source, "name", "?"),
                      extra={"fields": {"MESSAGE_ID": log.MSG_STARTED}})
        self.notifier.ready(self.status_text())
        if self.publisher is not None:
            self.publisher.start(self)
        if ready_hook:
            ready_hook(self)
        interval = self.notifier.watchdog_interval()
        last_status = None
        while not self._stop.is_set():
            self._wake.wait(interval if interval else 5.0)
            self._wake.clear()
            if self._reload.is_set():
                self._reload.clear()
                ok = self.reload()
                if self.publisher is not None:
                    self.publisher.reloaded(ok)
            if interval:
                self.notifier.watchdog()
            text = self.status_text()
            if text != last_status:
                self.notifier.status(text)
                last_status = text
            with self._cond:
                if not self._workers:
                    break
        self.notifier.stopping()
        self.source.close()
        with self._cond:    # each thread finishes the device in hand (each write
            while self._workers:    # has its deadline), the reader its read
                self._cond.wait(0.5)
        if self.publisher is not None:
            self.publisher.stop()
        self.log.info("stopped: %s", self.status_text())
        return 0


def wait_idle(daemon: Daemon, timeout: float = 30.0) -> bool:
    """For tests and benchmarks: wait until no event is pending and every
    thread has finished its device."""
    deadline = time.monotonic() + timeout
    pushed = getattr(daemon.source, "pushed", None)      # FakeSource only
    with daemon._cond:
        while daemon._pending or daemon._busy or (
                pushed is not None and daemon.events_seen < daemon.source.pushed):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            daemon._cond.wait(min(left, 0.05))
    return True


