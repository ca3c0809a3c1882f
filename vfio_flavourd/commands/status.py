"""`status`: the devices this tool manages, checked against sysfs."""

from __future__ import annotations

from ..output import dump_json, table
from ..pci import fresh


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON array")


def collect(ctx) -> list:
    records = ctx.state.read()
    if not records:
        return []
    from ..iommu import group_status     # only for devices we manage
    rows = []
    vfio_modules = ctx.index.modules()
    for address, rec in sorted(records.items()):
        dev = fresh(ctx.sysfs, address)
        current = dev.driver if dev else None
        group = group_status(ctx.sysfs, dev.iommu_group if dev else None, vfio_modules)
        expected = rec.get("driver")
        rows.append({
            "address": address,
            "present": dev is not None,
            "rule": rec.get("rule"),
            "module": rec.get("module"),
            "driver": expected,
            "current_driver": current,
            "in_sync": dev is not None and (expected is None or current == expected),
            "outcome": rec.get("outcome"),
            # A write past its deadline, still in the kernel (deadline.py).
            "stuck": rec.get("outcome") == "stuck",
            "stuck_write": rec.get("stuck_write"),
            "message": rec.get("message"),
            "since": rec.get("since"),
            "previous_driver": rec.get("previous_driver"),
            "iommu_group": int(group.group) if (group.group or "").isdigit() else group.group,
            "group_viable": group.viable,
            "group_blockers": [{"address": a, "driver": d} for a, d in group.blockers],
        })
    return rows


def run(ctx, args) -> int:
    from ..initramfs_record import warnings
    for w in warnings(ctx):
        ctx.warn(w)
    rows = collect(ctx)
    if args.json:
        dump_json(rows)
        return 0
    if not rows:
        print("vfio-flavourd manages no devices")
        return 0

    def group_text(r):
        if r["iommu_group"] is None:
            return "none"
        if r["group_viable"]:
            return f"{r['iommu_group']} viable"
        return f"{r['iommu_group']} blocked by " + ", ".join(
            f"{b['address']} ({b['driver']})" for b in r["group_blockers"])

    table(("ADDRESS", "RULE", "MODULE", "DRIVER", "NOW", "OUTCOME", "SINCE", "IOMMU GROUP"),
          [(r["address"], r["rule"], r["module"], r["driver"],
            (r["current_driver"] or "none") + ("" if r["in_sync"] else " (!)"),
            r["outcome"], r["since"], group_text(r)) for r in rows])
    for r in rows:
        if r["stuck"]:
            print(f"\n{r['address']} is stuck: {r['message']}")
    return 0
