"""The daemon's publisher: rewrites the fleet files after each change, at
most once per interval, from a thread of its own.

The binder worker only sets an event (changed()) and adds to counters
(outcome()): it never waits on a file.  Under a burst of 1,000 VF adds the
files are written once when it starts, then at most once a second, then
once when it is over, with whatever state the devices are in by then.
"""

from __future__ import annotations

import logging
import threading
import time

from . import log, publish_facts
from .errors import FlavourdError
from .publish import Targets, write_files
from .publish_prom import DaemonMetrics


class Publisher:
    def __init__(self, targets: Targets, logger=None, interval: float = 1.0):
        self.targets = targets
        self.log = logger or logging.getLogger(log.LOGGER)
        self.interval = interval
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

    def _run(self) -> None:
        while True:
            self._dirty.wait()
            if self._stopping.is_set():
                return
            delay = self._last + self.interval - time.monotonic()
            if delay > 0 and self._stopping.wait(delay):
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
