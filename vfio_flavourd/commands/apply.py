"""`apply [ADDRESS...]`: carry out the plan."""

from __future__ import annotations

import sys

from .. import actions, pci
from ..outcome import report_stuck, summarise
from ..output import dump_json
from . import add_timeout_argument


ACTED = ("bound", "released", "refused", "failed", "gone", "dry-run", "stuck")


def add_arguments(p) -> None:
    p.add_argument("addresses", nargs="*", metavar="ADDRESS",
                   help="devices to act on (default: every device)")
    p.add_argument("--dry-run", "-n", action="store_true",
                   help="say what would be done, change nothing")
    p.add_argument("--force", action="store_true",
                   help="bind even where a safety guard refuses (bridges are never bound)")
    p.add_argument("--json", action="store_true", help="print a JSON array of outcomes")
    add_timeout_argument(p)


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
