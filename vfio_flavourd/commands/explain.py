"""`explain ADDRESS`: the reasoning behind one device's decision."""

from __future__ import annotations

from .. import engine, pci
from ..output import dump_json
from .plan import decision_json, device_label


def add_arguments(p) -> None:
    p.add_argument("address", help="PCI address, e.g. 0000:3b:00.2")
    p.add_argument("--json", action="store_true", help="print a JSON object")


def explain_json(ctx, d) -> dict:
    out = decision_json(ctx, d)
    out["modalias"] = d.device.modalias
    out["policy_files"] = [{"path": str(f.path), "layer": f.layer,
                            "masks": [str(m) for m in f.masks], "disabled": f.disabled}
                           for f in ctx.policy.files]
    out["rules_tried"] = [{"rule": t.rule.name, "origin": t.rule.origin,
                           "matched": t.matched, "checks": list(t.reasons)}
                          for t in d.trace]
    out["candidates"] = [{"module": c.alias.module, "pattern": c.alias.pattern,
                          "wildcards": c.alias.wildcards, "origin": c.alias.origin,
                          "verdict": c.verdict} for c in d.candidates]
    out["tie"] = list(d.tie)
    if d.action == engine.BIND:
        out["guards"] = guard_report(ctx, d.device)
    return out


def guard_report(ctx, dev) -> dict:
    """What the safety guards say before a bind, and how they decided."""
    from .. import guards, guards_storage
    return {"method": guards_storage.method(ctx.sysfs),
            "refusals": guards.refusals(ctx.sysfs, dev)}


def run(ctx, args) -> int:
    address = pci.normalise_address(args.address)
    dev = pci.read_device(ctx.sysfs, address)
    policy, index = ctx.policy, ctx.index
    d = engine.decide(dev, policy, index, owner=ctx.owner_of(dev))
    if args.json:
        dump_json(explain_json(ctx, d))
        return 0
    label = device_label(ctx, dev, 80)
    print(f"{dev.address}  {dev.id_text}" + (f"  {label}" if label else ""))
    facts = [f"driver: {dev.driver or '(none)'}",
             f"override: {dev.driver_override or '(none)'}",
             f"class: {dev.class_code:06x}",
             f"iommu group: {dev.iommu_group or '(none)'}"]
    if dev.physfn:
        facts.append(f"VF of {dev.physfn}")
    if dev.virtfns:
        facts.append(f"PF with {len(dev.virtfns)} VFs")
    print("  " + "   ".join(facts))
    print(f"  modalias: {dev.modalias}")
    if d.owner:
        print(f"  driver_override set by: {d.owner}")

    print("\npolicy files:")
    if not policy.files:
        print("  (none: no rule can claim any device)")
    for f in policy.files:
        extra = " (disabled)" if f.disabled else ""
        if f.masks:
            extra += " (masks " + ", ".join(str(m) for m in f.masks) + ")"
        print(f"  {f.path}{extra}")

    print("\nrules, in order (the first match wins):")
    if not d.trace:
        print("  (no rules)")
    for t in d.trace:
        print(f"  {t.rule.name}  [{t.rule.origin}]  "
              + ("MATCHED" if t.matched else "no match"))
        for r in t.reasons:
            print(f"      {r}")
    untried = len(policy.rules) - len(d.trace)
    if untried:
        print(f"  ({untried} later rule{'s' if untried != 1 else ''} not tried)")

    if d.rule is not None and d.rule.flavour == "vfio":
        print(f"\nvfio_pci aliases matching vfio_{dev.modalias} "
              f"(from {index.source}; fewest wildcard fields wins):")
        if not d.candidates:
            print("  (none)")
        for c in d.candidates:
            print(f"  {c.alias.module:<24} {c.alias.pattern:<40} "
                  f"{c.alias.wildcards} wildcards  {c.verdict:<12} [{c.alias.origin}]")
        for n in d.notes:
            print(f"  {n}")

    if d.action == engine.BIND:
        g = guard_report(ctx, dev)
        print(f"\nsafety guards (block devices checked by {g['method']}):")
        for r in g["refusals"] or ["nothing below this device is in use"]:
            print(f"  {r}")
        if g["refusals"]:
            print("  apply refuses this device unless forced (--force or 'force: true')")

    target = f" {d.module}" if d.module else ""
    print(f"\ndecision: {d.action}{target}: {d.reason}")
    return 0
