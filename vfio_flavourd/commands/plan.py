"""`plan`: what the policy would do to every device."""

from __future__ import annotations

from .. import actions, pci
from ..output import dump_json, shorten, table


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON array")


def decision_json(ctx, d) -> dict:
    dev = d.device
    return {
        "address": dev.address,
        "vendor": f"{dev.vendor:04x}",
        "device": f"{dev.device:04x}",
        "subsystem_vendor": None if dev.subsystem_vendor is None else f"{dev.subsystem_vendor:04x}",
        "subsystem_device": None if dev.subsystem_device is None else f"{dev.subsystem_device:04x}",
        "class": f"{dev.class_code:06x}",
        "vendor_name": ctx.pciids.vendor(dev.vendor),
        "device_name": ctx.pciids.device(dev.vendor, dev.device),
        "current_driver": dev.driver,
        "driver_override": dev.driver_override,
        "iommu_group": dev.iommu_group,
        "physfn": dev.physfn,
        "numa_node": pci.numa_node(ctx.sysfs, dev.address),
        "override_owner": d.owner,
        "rule": d.rule.name if d.rule else None,
        "flavour": d.flavour,
        "module": d.module,
        "action": d.action,
        "reason": d.reason,
        "notes": list(d.notes),
    }


def device_label(ctx, dev, width=38):
    vendor = ctx.pciids.vendor(dev.vendor)
    name = ctx.pciids.device(dev.vendor, dev.device)
    if vendor is None and name is None:
        return None
    return shorten(" ".join(x for x in (vendor, name) if x), width)


def run(ctx, args) -> int:
    # The table shows no IOMMU group or SR-IOV field: reading them for 62
    # devices was a twentieth of plan's time (bench figure 8).
    decisions = actions.decisions_for(ctx, full=args.json)
    if args.json:
        dump_json([decision_json(ctx, d) for d in decisions])
        return 0
    rows = [(d.device.address, d.device.id_text, device_label(ctx, d.device),
             d.device.driver, d.rule.name if d.rule else None, d.module, d.action)
            for d in decisions]
    table(("ADDRESS", "ID", "NAME", "DRIVER", "RULE", "MODULE", "ACTION"), rows)
    counts = {}
    for d in decisions:
        counts[d.action] = counts.get(d.action, 0) + 1
    summary = ", ".join(f"{counts[a]} {a}" for a in ("bind", "keep", "release", "none") if a in counts)
    print(f"\n{len(decisions)} devices: {summary or 'none'}")
    return 0
