"""`apply [ADDRESS...]`: carry out the plan."""

from __future__ import annotations

import sys

from .. import actions, pci
from ..output import dump_json


ACTED = ("bound", "released", "refused", "failed", "gone", "dry-run", "stuck")


def add_timeout_argument(p) -> None:
    p.add_argument("--unbind-timeout", metavar="SECONDS", type=_seconds, default=None,
                   help="how long an unbind or probe may take before the device is "
                        "reported stuck; overrides the rules' unbind_timeout (default: "
                        "the rule's, else 60)")


def _seconds(text: str) -> float:
    import argparse
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"expected seconds (more than 0, at most 86400), "
                                         f"found {text!r}")
    return value


def add_arguments(p) -> None:
    p.add_argument("addresses", nargs="*", metavar="ADDRESS",
                   help="devices to act on (default: every device)")
    p.add_argument("--dry-run", "-n", action="store_true",
                   help="say what would be done, change nothing")
    p.add_argument("--force", action="store_true",
                   help="bind even where a safety guard refuses (bridges are never bound)")
    p.add_argument("--json", action="store_true", help="print a JSON array of outcomes")
    add_timeout_argument(p)


def summarise(outcomes) -> str:
    counts = {}
    for o in outcomes:
        counts[o.result] = counts.get(o.result, 0) + 1
    order = ("bound", "released", "kept", "skipped", "dry-run", "refused", "failed", "gone",
             "stuck")
    return ", ".join(f"{counts[r]} {r}" for r in order if r in counts) or "nothing to do"


def run(ctx, args) -> int:
    addresses = [pci.normalise_address(a) for a in args.addresses] or None
    decisions = actions.expand_groups(ctx, actions.decisions_for(ctx, addresses))
    binder = ctx.binder(unbind_timeout=args.unbind_timeout)
    outcomes = []
    show_progress = not args.json and sys.stderr.isatty() and len(decisions) > 50
    for n, d in enumerate(decisions, 1):
        o = actions.carry_out(ctx, binder, d, force=args.force, dry_run=args.dry_run)
        outcomes.append(o)
        if args.json:
            continue
        if o.result in ACTED:
            target = o.driver or o.module or "-"
            print(f"{o.address}  {o.result:<8} {target:<20} {o.message}")
        if show_progress and n % 100 == 0:
            print(f"  ... {n}/{len(decisions)} devices", file=sys.stderr)
    ok = all(o.ok for o in outcomes)
    if args.json:
        dump_json([o.as_dict() for o in outcomes])
    else:
        print(f"{len(outcomes)} devices: {summarise(outcomes)}")
    report_stuck(outcomes)
    return 0 if ok else 1


def report_stuck(outcomes) -> None:
    """A stuck write keeps running in the kernel after this command ends."""
    for o in outcomes:
        if o.result == "stuck":
            print(f"vfio-flavourd: error: {o.address} is stuck: {o.message}; "
                  "see `vfio-flavourd status`", file=sys.stderr)
