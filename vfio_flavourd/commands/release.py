"""`release ADDRESS...`: give devices back to their host drivers."""

from __future__ import annotations

from .. import pci
from ..output import dump_json
from ..outcome import Outcome
from ..pci import fresh
from ..state import DeviceLock
from .apply import summarise


def add_arguments(p) -> None:
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p.add_argument("--dry-run", "-n", action="store_true", help="change nothing")
    p.add_argument("--force", action="store_true",
                   help="clear an override another tool set")
    p.add_argument("--json", action="store_true", help="print a JSON array of outcomes")


def run(ctx, args) -> int:
    addresses = [pci.normalise_address(a) for a in args.addresses]
    binder = ctx.binder()
    outcomes = []
    for a in addresses:
        with DeviceLock(ctx.root, a):
            dev = fresh(ctx.sysfs, a)
            if dev is None:
                ctx.state.update(a, None)
                outcomes.append(Outcome(a, "release", "gone", message="no such device"))
                continue
            outcomes.append(binder.release(dev, force=args.force, dry_run=args.dry_run))
    if args.json:
        dump_json([o.as_dict() for o in outcomes])
    else:
        for o in outcomes:
            print(f"{o.address}  {o.result:<8} {o.driver or '-':<20} {o.message}")
        print(f"{len(outcomes)} devices: {summarise(outcomes)}")
    return 0 if all(o.ok for o in outcomes) else 1
