"""Prometheus metrics in the text exposition format (version 0.0.4), for
node_exporter's textfile collector: HELP and TYPE for every family, no
timestamps (the collector reports the file's mtime itself).

Gauges come from the facts (publish_facts.py); counters and the histogram
exist only in a running daemon, which keeps them in a DaemonMetrics."""

from __future__ import annotations

import collections
import threading
import time
from typing import Optional

PREFIX = "vfio_flavourd_"
# Results a bind can end in.  Always written, at 0 too, so that a query for
# a result the host has not seen yet returns 0 rather than nothing.
# ("stuck": a bind or unbind that did not return in time, binder.py.)
RESULTS = ("bound", "kept", "failed", "refused", "rolled_back", "stuck")
# Nothing to do is not a bind outcome.
NOT_COUNTED = ("skipped",)
# Seconds.  Most binds take milliseconds; a GPU unbind has been seen to take
# minutes (system76-power #71), hence the long tail.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(v) -> str:
    if isinstance(v, float):
        if v == float("inf"):
            return "+Inf"
        return repr(v)
    return str(v)


class _Family:
    def __init__(self, name: str, kind: str, help_text: str):
        self.name, self.kind, self.help = PREFIX + name, kind, help_text
        self.samples = []

    def add(self, value, labels: Optional[dict] = None, suffix: str = "") -> None:
        self.samples.append((suffix, labels or {}, value))

    def lines(self) -> list:
        out = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for suffix, labels, value in self.samples:
            text = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items())
            out.append(f"{self.name}{suffix}{{{text}}} {_number(value)}" if text
                       else f"{self.name}{suffix} {_number(value)}")
        return out


class DaemonMetrics:
    """Counters a running daemon accumulates.  The worker thread adds; the
    publisher thread reads a snapshot under the lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self.results = collections.Counter()
        self.bucket_counts = [0] * len(BUCKETS)
        self.duration_sum = 0.0
        self.duration_count = 0
        self.reloads = collections.Counter()
        self.policy_loaded_at: Optional[float] = None

    def outcome(self, result: str, action: str, seconds: float) -> None:
        if result in NOT_COUNTED:
            return
        with self._lock:
            self.results[result.replace("-", "_")] += 1
            if action == "bind":
                self.duration_sum += seconds
                self.duration_count += 1
                for i, bound in enumerate(BUCKETS):
                    if seconds <= bound:
                        self.bucket_counts[i] += 1
                        break

    def policy_loaded(self, ok: bool, reload: bool = True) -> None:
        with self._lock:
            if reload:
                self.reloads["ok" if ok else "failed"] += 1
            if ok:
                self.policy_loaded_at = time.time()

    def snapshot(self) -> dict:
        with self._lock:
            return {"results": dict(self.results), "buckets": list(self.bucket_counts),
                    "sum": self.duration_sum, "count": self.duration_count,
                    "reloads": dict(self.reloads), "policy_loaded_at": self.policy_loaded_at}


def render(facts, daemon: Optional[dict] = None, uevents: Optional[int] = None) -> str:
    """The whole file.  `daemon` is a DaemonMetrics.snapshot(); without it
    (the one-shot `publish` command) only the gauges are written, since a
    counter that restarts at every run would mean nothing."""
    fams = []
    info = _Family("info", "gauge", "Version of vfio-flavourd and the kernel release it runs on")
    info.add(1, {"version": facts.version, "kernel_release": facts.kernel_release})
    fams.append(info)

    managed = _Family("managed_devices", "gauge",
                      "Devices vfio-flavourd bound and that are still on that driver, by "
                      "driver, module and policy rule")
    by_key = collections.Counter((d.driver, d.module or "", d.rule or "") for d in facts.devices)
    for (driver, module, rule), n in sorted(by_key.items()):
        managed.add(n, {"driver": driver, "module": module, "rule": rule})
    fams.append(managed)

    groups = _Family("iommu_groups_not_viable", "gauge",
                     "IOMMU groups of devices vfio-flavourd holds that a VM cannot open, "
                     "because another member is on a host driver")
    groups.add(facts.groups_not_viable)
    fams.append(groups)

    variants = _Family("variant_drivers_available", "gauge",
                       "vfio_pci variant driver modules this kernel's modules.alias offers")
    variants.add(len(facts.variant_modules))
    fams.append(variants)

    if daemon is not None:
        outcomes = _Family("bind_outcomes_total", "counter",
                           "Devices the daemon acted on, by result")
        results = dict.fromkeys(RESULTS, 0)
        results.update(daemon["results"])
        for result in sorted(results):
            outcomes.add(results[result], {"result": result})
        fams.append(outcomes)

        hist = _Family("bind_duration_seconds", "histogram",
                       "Time to move one device to its driver, proof and rollback included")
        running = 0
        for bound, n in zip(BUCKETS, daemon["buckets"]):
            running += n
            hist.add(running, {"le": format(bound, "g")}, "_bucket")   # as Go writes it
        hist.add(daemon["count"], {"le": "+Inf"}, "_bucket")
        hist.add(float(daemon["sum"]), None, "_sum")
        hist.add(daemon["count"], None, "_count")
        fams.append(hist)

        events = _Family("uevents_handled_total", "counter",
                         "PCI uevents the daemon read and acted on (several for one device "
                         "may be merged into one action)")
        events.add(uevents or 0)
        fams.append(events)

        reloads = _Family("policy_reloads_total", "counter",
                          "Policy reloads (SIGHUP), by result; a failed one keeps the old policy")
        for result in ("failed", "ok"):
            reloads.add(daemon["reloads"].get(result, 0), {"result": result})
        fams.append(reloads)

        if daemon["policy_loaded_at"] is not None:
            loaded = _Family("policy_last_load_timestamp_seconds", "gauge",
                             "When the policy in force was loaded, in seconds since the epoch")
            loaded.add(round(daemon["policy_loaded_at"], 3))
            fams.append(loaded)
    return "\n".join(line for f in fams for line in f.lines()) + "\n"
