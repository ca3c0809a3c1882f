"""The daemon: coldplug, then act on PCI uevents until told to stop.

Threads: a reader drains the event source into a pending set keyed by
address (so it never blocks on binding, and a burst of 1,000 VF adds can
neither overflow nor be lost: one entry per device, however many events);
one worker binds; the main thread handles signals (whose handlers only set
flags), reloads, the watchdog and status.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time


from . import actions, log, pci
from .context import Context
from .errors import FlavourdError, PolicyError

REMOVE = "remove"
# When several events for one device are pending, the strongest decides what
# the worker does with it.
_STRENGTH = {"unbind": 0, "bind": 1, "change": 2, "add": 3, REMOVE: 4}


class Daemon:
    def __init__(self, ctx: Context, source, notifier, *, dry_run=False, logger=None,
                 make_context=None, settle_timeout: float = 1.0):
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
        self._busy = False

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
            old = self._pending.get(address)
            if old is None or _STRENGTH.get(action, 2) >= _STRENGTH.get(old, 2):
                self._pending[address] = action
            self._cond.notify()

    def _reader(self) -> None:
        try:
            for ev in self.source:
                self.enqueue(ev.address, ev.action)
                with self._cond:
                    self.events_seen += 1
                    self._cond.notify_all()
        except Exception:  # the reader must never die silently
            self.log.exception("event source failed")
            self.request_stop()
        finally:
            self._reader_done.set()

    # -- handling ----------------------------------------------------------------------

    def handle(self, address: str, action: str) -> None:
        """One device: a failure is logged and never stops the daemon."""
        with self._ctx_lock:
            ctx = self.ctx
        try:
            if action == REMOVE and pci.is_address(address) and \
                    not ctx.sysfs.exists(f"sys/bus/pci/devices/{address}"):
                if ctx.state.get(address) is not None:
                    ctx.state.update(address, None)
                    self.log.info("%s: removed; forgotten", address,
                                  extra={"fields": {"PCI_SLOT": address,
                                                    "MESSAGE_ID": log.MSG_GONE}})
                return
            if action == "unbind":
                # Our own unbinds, or a person's: a device left without a
                # driver is not a reason to act.
                return
            if action == "bind" and self._settled_failure(ctx, address):
                return
            decisions = actions.decisions_for(ctx, [address])
            decisions = actions.expand_groups(ctx, decisions)
            binder = ctx.binder(self.settle_timeout)
            for d in decisions:
                out = actions.carry_out(ctx, binder, d, dry_run=self.dry_run)
                self.counts[out.result] += 1
                log.log_outcome(self.log, out)
        except FlavourdError as e:
            if ctx.sysfs.exists(f"sys/bus/pci/devices/{address}"):
                self.counts["failed"] += 1
                self.log.warning("%s: %s", address, e, extra={"fields": {
                    "PCI_SLOT": address, "MESSAGE_ID": log.MSG_FAILED}})
        except Exception:
            self.counts["failed"] += 1
            self.log.exception("%s: unexpected error while handling %s", address, action)
        finally:
            self.handled += 1

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

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop.is_set():
                    if self._reader_done.is_set():
                        return
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                address, action = self._pending.popitem(last=False)
                self._busy = True
            try:
                self.handle(address, action)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            self._wake.set()

    def coldplug(self) -> int:
        with self._ctx_lock:
            ctx = self.ctx
        n = 0
        for address in pci.addresses(ctx.sysfs):
            if self._stop.is_set():
                break
            self.handle(address, "add")
            n += 1
        return n

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
                           "force", len(e.problems))
            self.notifier.ready(self.status_text() + "; reload failed, old policy in force")
            return False
        except FlavourdError as e:
            self.log.error("reload failed: %s; the old policy stays in force", e)
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
        return (f"{managed} managed, {self.counts['bound']} bound, "
                f"{self.counts['failed']} failed, {self.counts['refused']} refused")

    def run(self, ready_hook=None) -> int:
        self.ctx.policy, self.ctx.index    # fail early, before touching anything
        reader = threading.Thread(target=self._reader, name="uevents", daemon=True)
        reader.start()     # listen first, so nothing added during coldplug is missed
        n = self.coldplug()
        self.log.info("coldplug done: %d devices, %s; listening on %s events",
                      n, self.status_text(), getattr(self.source, "name", "?"),
                      extra={"fields": {"MESSAGE_ID": log.MSG_STARTED}})
        self.notifier.ready(self.status_text())
        if ready_hook:
            ready_hook(self)
        worker = threading.Thread(target=self._worker, name="binder", daemon=True)
        worker.start()
        interval = self.notifier.watchdog_interval()
        last_status = None
        while not self._stop.is_set():
            self._wake.wait(interval if interval else 5.0)
            self._wake.clear()
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if interval:
                self.notifier.watchdog()
            text = self.status_text()
            if text != last_status:
                self.notifier.status(text)
                last_status = text
            if not worker.is_alive():
                break
        self.notifier.stopping()
        self.source.close()
        worker.join()       # finishes the device in hand, then returns
        self.log.info("stopped: %s", self.status_text())
        return 0


def wait_idle(daemon: Daemon, timeout: float = 30.0) -> bool:
    """For tests and benchmarks: wait until no event is pending and the worker
    has finished its device."""
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


