"""`release ADDRESS...`: give devices back to their host drivers."""

from __future__ import annotations

from .. import pci
from ..outcome import Outcome, report_stuck, summarise
from ..pci import fresh
from ..state import device_locked
from . import add_timeout_argument


def add_arguments(p) -> None:
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p.add_argument("--dry-run", "-n", action="store_true", help="change nothing")
    p.add_argument("--force", action="store_true",
                   help="clear an override another tool set")
    p.add_argument("--json", action="store_true", help="print a JSON array of outcomes")
    add_timeout_argument(p)


def run(ctx, args) -> int:
    addresses = [pci.normalise_address(a) for a in args.addresses]
    binder = ctx.binder(unbind_timeout=args.unbind_timeout)
    outcomes = []
    for a in addresses:
        with device_locked(ctx.root, a, dry_run=args.dry_run) as lock:
            dev = fresh(ctx.sysfs, a)
            if dev is None:
                ctx.state.update(a, None)
                outcomes.append(Outcome(a, "release", "gone", message="no such device"))
                continue
            o = binder.release(dev, force=args.force, dry_run=args.dry_run)
            if o.stuck is not None:
                lock.hand_over(o.stuck)
            outcomes.append(o)
    if args.json:
        from ..output import dump_json
        dump_json([o.as_dict() for o in outcomes])
    else:
        for o in outcomes:
            print(f"{o.address}  {o.result:<8} {o.driver or '-':<20} {o.message}")
        print(f"{len(outcomes)} devices: {summarise(outcomes)}")
    report_stuck(outcomes)
    return 0 if all(o.ok for o in outcomes) else 1
