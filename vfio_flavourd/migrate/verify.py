"""Checking the migrated policy against the old configuration, device by
device: every device the old config claimed must be claimed the same way
(vfio, host, ignore) by the policy that will be in force, that is the
migrated file together with the policy files already installed.

Devices are judged as they will be once the old config is retired: without
the driver_override driverctl or anyone else set, so that ownership does not
hide what the rules say.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import engine, pci
from ..errors import PolicyError
from ..policy_load import PolicyFile, discover, load
from .sources import MIGRATED_FILE, Origin, Problem, shown

MIGRATED_NAME = MIGRATED_FILE.rsplit("/", 1)[1]


@dataclass
class DeviceCheck:
    address: str
    id_text: str
    old: Optional[str]          # what the old config did, or None
    old_flavour: Optional[str]
    old_origin: Optional[str]
    rule: Optional[str]
    flavour: Optional[str]
    module: Optional[str]
    action: str
    reason: str
    ok: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _policy_with(ctx, ours: PolicyFile):
    """The policy in force with `ours` added, and a note when the installed
    policy could not be read (then `ours` alone)."""
    if ctx.policy_paths:
        files = [PolicyFile(Path(p), "command line") for p in ctx.policy_paths] + [ours]
    else:
        files = [f for f in discover(ctx.root.policy_dirs()) if f.path.name != MIGRATED_NAME]
        files = sorted(files + [ours], key=lambda f: f.path.name)
    try:
        return load(files), None
    except PolicyError as e:
        return load([ours]), Problem(
            Origin(shown(MIGRATED_FILE.rsplit("/", 1)[0])),
            f"the installed policy has {len(e.problems)} problem(s) (see vfio-flavourd "
            "check-config); the migrated rules were checked on their own")


def check(ctx, text: str, claims: list, migrated: set):
    """([DeviceCheck], [Problem], note or None) for the devices the old
    config or a migrated rule claims."""
    with tempfile.TemporaryDirectory(prefix="vfio-flavourd-migrate.") as tmp:
        path = Path(tmp, MIGRATED_NAME)
        path.write_text(text)
        ours = PolicyFile(path, "migrated")
        try:
            load([ours])
        except PolicyError as e:
            # A bug in migrate, not in the user's files: say so plainly.
            raise PolicyError([f"internal error: the migrated policy does not validate: {p}"
                               for p in e.problems]) from None
        policy, note = _policy_with(ctx, ours)

    checks, problems = [], []
    for dev in pci.scan(ctx.sysfs, ctx.warn):
        claim = next((c for c in claims if c.matches(dev)), None)
        bare = dev._replace(driver_override=None)
        d = engine.decide(bare, policy, ctx.index)
        ours_decides = d.rule is not None and d.rule.name in migrated
        if claim is None and not ours_decides:
            continue
        if claim is None:
            ok = False
        elif claim.flavour == "vfio":
            ok = d.flavour == "vfio" and d.module is not None
        else:
            ok = d.flavour == claim.flavour
        checks.append(DeviceCheck(
            dev.address, dev.id_text, claim.what if claim else None,
            claim.flavour if claim else None, str(claim.origin) if claim else None,
            d.rule.name if d.rule else None, d.flavour, d.module, d.action, d.reason, ok))
        if not ok:
            problems.append(_mismatch(dev, claim, d, migrated))
    return checks, problems, note


def _mismatch(dev, claim, d, migrated) -> Problem:
    head = f"{dev.address} ({dev.id_text})"
    if claim is None:
        return Problem(Origin(shown(MIGRATED_FILE)),
                       f"{head}: rule {d.rule.name} claims it, but the old config did not")
    if d.rule is None:
        now = "no rule claims it"
    elif d.rule.name not in migrated:
        now = (f"rule {d.rule.name} ({d.rule.origin}) claims it first, with flavour "
               f"{d.rule.flavour}")
    else:
        now = f"rule {d.rule.name} decides: {d.reason}"
    return Problem(claim.origin, f"{head}: the old config {_past(claim)}, but under the new "
                   f"policy {now}")


def _past(claim) -> str:
    return {"vfio": "gave it to VFIO", "host": "kept it on a host driver",
            "ignore": "kept it away from any driver"}[claim.flavour] + f" ({claim.what})"
