"""What happened to one device: the binder's, and every command's, report.

A plain class, not a dataclass: dataclasses (with inspect, ast and dis
behind it) cost a one-shot command such as `apply ADDRESS` more import
time than everything else it loads (see _record).
"""

from __future__ import annotations

import sys

OK_RESULTS = ("bound", "kept", "released", "dry-run", "skipped")

_FIELDS = ("address", "action", "result", "module", "driver", "previous_driver", "rule",
           "message", "steps")

# deadline.DEFAULT_TIMEOUT, without importing the writer machinery here.
DEFAULT_DEADLINE = 60.0


class Outcome:
    # Beside the compared fields: `deadline`, the seconds each unbind and
    # probe write may take (the rule's unbind_timeout), and `stuck`, the
    # abandoned write of a stuck outcome (the device's lock goes with it).
    __slots__ = _FIELDS + ("deadline", "stuck")

    def __init__(self, address: str, action: str, result: str, module: str | None = None,
                 driver: str | None = None, previous_driver: str | None = None,
                 rule: str | None = None, message: str = "", steps: list | None = None,
                 deadline: float = DEFAULT_DEADLINE, stuck: object = None):
        self.address = address
        self.action = action
        self.result = result
        self.module = module
        self.driver = driver
        self.previous_driver = previous_driver
        self.rule = rule
        self.message = message
        self.steps = [] if steps is None else steps
        self.deadline = deadline
        self.stuck = stuck

    def __repr__(self) -> str:
        return "Outcome(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in _FIELDS) + ")"

    def __eq__(self, other) -> bool:
        if type(other) is not Outcome:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _FIELDS)

    __hash__ = None

    @property
    def ok(self) -> bool:
        return self.result in OK_RESULTS

    def as_dict(self) -> dict:
        return {"address": self.address, "action": self.action, "result": self.result,
                "ok": self.ok, "module": self.module, "driver": self.driver,
                "previous_driver": self.previous_driver, "rule": self.rule,
                "message": self.message, "steps": list(self.steps)}


def summarise(outcomes) -> str:
    counts = {}
    for o in outcomes:
        counts[o.result] = counts.get(o.result, 0) + 1
    order = ("bound", "released", "kept", "skipped", "dry-run", "refused", "failed", "gone",
             "stuck")
    return ", ".join(f"{counts[r]} {r}" for r in order if r in counts) or "nothing to do"


def report_stuck(outcomes) -> None:
    """A stuck write keeps running in the kernel after this command ends."""
    for o in outcomes:
        if o.result == "stuck":
            print(f"vfio-flavourd: error: {o.address} is stuck: {o.message}; "
                  "see `vfio-flavourd status`", file=sys.stderr)
