"""Deciding, for one device, which module should drive it and why.

Pure: takes a device snapshot, the policy and the variant index, returns a
Decision that carries its own reasoning.  Nothing here reads or writes files.
"""

from __future__ import annotations

from ._record import REQUIRED, record
from .modprobe import CATCH_ALL
from .pci import current_module, is_vfio_driver
from .owners import OURS

# Annotations only (never evaluated): `release` decides nothing and needs
# no policy module; pci comes with the callers anyway.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .aliases import VariantIndex
    from .pci import PciDevice
    from .policy import Policy, Rule

BIND, KEEP, RELEASE, NONE = "bind", "keep", "release", "none"

class RuleTrace(record("RuleTrace", (
        ("rule", REQUIRED),
        ("matched", REQUIRED),
        ("reasons", REQUIRED)))):     # one line per match key
    __slots__ = ()


class Candidate(record("Candidate", (
        ("alias", REQUIRED),
        ("verdict", REQUIRED)))):     # chosen | preferred | denied | variants-off | outranked | tie
    __slots__ = ()


class Decision:
    """What the engine decided for one device, and why; filled in as it
    goes (a plain class: see _record for why not a dataclass)."""

    __slots__ = ("device", "rule", "module", "action", "reason", "candidates", "notes",
                 "tie", "owner", "_tried", "_trace")

    def __init__(self, device: PciDevice, rule: Rule | None = None, owner: str | None = None):
        self.device = device
        self.rule = rule
        self.module: str | None = None      # module name, as modules.alias spells it
        self.action = NONE
        self.reason = ""
        self.candidates: list = []
        self.notes: list = []
        self.tie: tuple = ()
        self.owner = owner                  # who set driver_override, if anyone
        self._tried: tuple = ()             # the rules tried, in order
        self._trace: list | None = None

    @property
    def trace(self) -> list:
        """A RuleTrace for each rule tried, up to the one that matched.  Made
        when asked for (by `explain`): every other command needs only the
        verdict, and the reasons' text was a third of `plan`'s own time."""
        if self._trace is None:
            self._trace = []
            for rule in self._tried:
                checks = rule.match.check(self.device)
                matched = all(ok for _, ok, _ in checks)
                self._trace.append(RuleTrace(rule, matched, tuple(r for _, _, r in checks)))
                if matched:
                    break
        return self._trace

    def __repr__(self) -> str:
        return (f"<Decision {self.device.address}: {self.action} {self.module} "
                f"({self.reason})>")

    @property
    def flavour(self) -> str | None:
        return self.rule.flavour if self.rule else None


def choose_module(rule: Rule, dev: PciDevice, index: VariantIndex, decision: Decision) -> str | None:
    """Rank the vfio_pci aliases matching the device, apply prefer / deny /
    variants / fallback, and record every candidate's verdict."""
    matches = index.matching(dev.modalias)
    deny = set(rule.deny)
    verdicts: dict = {}
    usable = []
    for a in matches:
        if a.is_catch_all:
            continue
        if a.module in deny:
            verdicts[a] = "denied"
        elif not rule.variants:
            verdicts[a] = "variants-off"
        else:
            usable.append(a)

    chosen: str | None = None
    for pref in rule.prefer:
        hit = [a for a in usable if a.module == pref]
        if hit:
            chosen = pref
            verdicts[hit[0]] = "preferred"
            decision.notes.append(f"prefer: {pref} matches the device and wins outright")
            break
    if chosen is None and rule.prefer:
        decision.notes.append("prefer: none of " + ", ".join(rule.prefer)
                              + " has an allowed alias matching the device")

    if chosen is None and usable:
        best = usable[0].wildcards
        top = sorted({a.module for a in usable if a.wildcards == best})
        chosen = top[0]
        if len(top) > 1:
            decision.tie = tuple(top)
            decision.notes.append(
                f"tie: {', '.join(top)} match with {best} wildcard fields each; "
                f"{chosen} wins by name (add 'prefer' to choose)")

    for a in usable:
        if a not in verdicts:
            if a.module == chosen:
                verdicts[a] = "chosen"
            elif chosen in decision.tie and a.module in decision.tie:
                verdicts[a] = "tie"
            else:
                verdicts[a] = "outranked"

    if deny & {a.module for a in matches}:
        decision.notes.append("deny: removed " + ", ".join(
            sorted(deny & {a.module for a in matches})))
    if not rule.variants:
        decision.notes.append("variants: false, only the fallback may be used")

    if chosen is None:
        fb = rule.fallback
        if fb is None:
            decision.notes.append("no allowed variant matches and fallback is none: "
                                  "leaving the device alone")
        elif fb in deny:
            decision.notes.append(f"fallback {fb} is denied: leaving the device alone")
            fb = None
        else:
            decision.notes.append(f"no allowed variant matches: using fallback {fb}")
        chosen = fb
    for a in matches:
        if a.is_catch_all:
            verdicts[a] = "chosen" if chosen == a.module else "catch-all"
    decision.candidates = [Candidate(a, verdicts[a]) for a in matches]
    return chosen


def decide(dev: PciDevice, policy: Policy, index: VariantIndex,
           owner: str | None = None) -> Decision:
    """`owner`: who set the device's driver_override, when it has one
    ("vfio-flavourd", "driverctl", ...); another tool's override is left
    alone unless the rule says takeover."""
    # Who set the override is a fact about the device, worth showing
    # whether or not a rule claims it.
    d = Decision(device=dev, owner=owner)
    d._tried = policy.rules
    for rule in policy.rules:
        if rule.match.matches(dev):
            d.rule = rule
            break
    if d.rule is None:
        d.reason = "no rule claims this device"
        return d
    return _apply_rule(d, d.rule, index, owner)


def decide_with_rule(dev: PciDevice, rule: Rule, index: VariantIndex,
                     owner: str | None = None) -> Decision:
    """The decision `rule` gives for `dev`, whether or not it matches (for
    IOMMU group members claimed through another device's rule)."""
    d = Decision(device=dev, rule=rule)
    return _apply_rule(d, rule, index, owner)


def _apply_rule(d: Decision, rule: Rule, index: VariantIndex, owner: str | None) -> Decision:
    dev = d.device
    d.owner = owner
    if owner not in (None, OURS) and rule.flavour != "ignore" and not rule.takeover:
        d.reason = (f"driver_override {dev.driver_override!r} was set by {owner}; "
                    "leaving it alone ('takeover: true' takes it)")
        return d
    if rule.flavour == "ignore":
        d.reason = f"rule {rule.name} says ignore"
        return d
    if rule.flavour == "host":
        if is_vfio_driver(dev, index.modules()):
            d.action = RELEASE
            d.reason = f"rule {rule.name} gives it to its host driver; it is on {dev.driver}"
        else:
            d.reason = f"rule {rule.name} gives it to its host driver"
        return d
    # flavour: vfio
    if dev.is_bridge:
        d.reason = "bridges are never bound to vfio"
        return d
    d.module = choose_module(rule, dev, index, d)
    if d.module is None:
        d.reason = d.notes[-1] if d.notes else "nothing to bind"
        return d
    cur = current_module(dev)
    if cur == d.module:
        d.action, d.reason = KEEP, f"already on {dev.driver}"
    elif cur is not None and is_vfio_driver(dev, index.modules()) and \
            not (rule.upgrade and cur == CATCH_ALL):
        d.action = KEEP
        if cur == CATCH_ALL:
            d.reason = (f"already on vfio driver {dev.driver}; 'upgrade: true' would move it "
                        f"to {d.module}")
        else:
            d.reason = f"already on vfio variant {dev.driver}; only vfio-pci is upgraded"
    else:
        d.action = BIND
        d.reason = f"rule {rule.name} wants {d.module}"
    return d

