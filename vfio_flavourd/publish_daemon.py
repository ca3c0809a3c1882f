"""The daemon's publisher: rewrites the fleet files after each change, at
most once per interval, from a thread of its own.

The binder worker only sets an event (changed()) and adds to counters
(outcome()): it never waits on a file.  A round of writing costs 60 ms of
CPU at 1,000 devices, and in one process that time is taken from the
worker (one GIL).  So while the worker has a backlog the publisher waits
for it to drain, up to `max_age` after the first unwritten change: under a
burst of 1,000 VF adds the files are written when it is over, and under
load that never ends they are never older than `max_age`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from . import log, publish_facts
from .errors import FlavourdError
from .publish import HEARTBEAT, Targets, write_files
from .publish_files import write_atomic
from .publish_prom import DaemonMetrics


class Publisher:
    def __init__(self, targets: Targets, logger=None, interval: float = 1.0,
                 max_age: float = 5.0):
        self.targets = targets
        self.log = logger or logging.getLogger(log.LOGGER)
        self.interval = interval
        self.max_age = max(max_age, interval)
        self.metrics = DaemonMetrics()
        self.writes = 0              # rounds of writing, for bench/ and tests
        self._cache = publish_facts.FactsCache()
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._thread = None
        self._daemon = None
        self._last = float("-inf")
        self._failing = None

    def __repr__(self) -> str:
        return f"<Publisher {self.targets}>"

    # -- called from the daemon's threads: cheap, never blocking on I/O ----------------

    def outcome(self, out, seconds: float) -> None:
        self.metrics.outcome(out.result, out.action, seconds)

    def changed(self) -> None:
        self._dirty.set()

    def reloaded(self, ok: bool) -> None:
        self.metrics.policy_loaded(ok)
        self._dirty.set()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, daemon) -> None:
        """After coldplug: the policy in force was loaded at start-up."""
        self._daemon = daemon
        self.metrics.policy_loaded(True, reload=False)
        self.write_now()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Last write, so the files say what the devices are left on."""
        self._stopping.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join()
        if self._daemon is not None:
            self.write_now()
        if self.targets.health_file:
            # Not healthy once stopped: a restarted daemon is ready only
            # after its own coldplug.
            try:
                os.unlink(self.targets.health_file)
            except OSError:
                pass

    def _busy(self) -> bool:
        d = self._daemon
        return bool(d._pending) or d._busy     # racy reads, good enough for a hint

    def _run(self) -> None:
        while True:
            if not self._dirty.wait(HEARTBEAT):
                self.write_health()
                continue
            if self._stopping.is_set():
                return
            first = time.monotonic()
            delay = self._last + self.interval - first
            if delay > 0 and self._stopping.wait(delay):
                return
            while self._busy() and time.monotonic() - first < self.max_age:
                if self._stopping.wait(0.05):
                    return
            self._dirty.clear()
            self.write_now()

    def write_now(self) -> None:
        """One round.  A failure (full disk, directory gone) is logged once
        until it heals and never stops the daemon."""
        self._last = time.monotonic()
        d = self._daemon
        with d._ctx_lock:
            ctx = d.ctx
        try:
            facts = publish_facts.gather(ctx, self._cache)
            write_files(self.targets, facts, self.metrics.snapshot(), d.events_seen,
                        warn=self.log.warning)
        except FlavourdError as e:
            if str(e) != self._failing:
                self.log.error("publishing: %s", e)
                self._failing = str(e)
            return
        except Exception:       # a bug here must not take the daemon down
            self.log.exception("publishing failed")
            return
        if self._failing:
            self.log.info("publishing works again")
            self._failing = None
        self.writes += 1
        self.write_health()

    def write_health(self) -> None:
        """The health file: written while the daemon's threads run, so its
        age tells a probe whether the daemon is alive and past coldplug."""
        if not self.targets.health_file:
            return
        d = self._daemon
        if d is None or d._reader_done.is_set() or d._stop.is_set():
            return
        try:
            write_atomic(self.targets.health_file, json.dumps({
                "pid": os.getpid(), "time": round(time.time(), 3),
                "status": d.status_text()}) + "\n")
        except FlavourdError as e:
            if str(e) != self._failing:
                self.log.error("health file: %s", e)
                self._failing = str(e)
