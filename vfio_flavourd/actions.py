"""Carrying out a plan: the decisions for the devices asked for, with IOMMU
group expansion, each under its device lock.  Shared by `apply`, the daemon
and the udev path."""

from __future__ import annotations

from . import engine, pci
from .binder import Binder, Outcome, fresh
from .errors import DeviceGone, FlavourdError, UnknownDevice
from .state import DeviceLock


def expand_groups(ctx, decisions: list) -> list:
    """For rules with 'group: all', add every other endpoint of the device's
    IOMMU group, each with its own best module under the same rule."""
    by_addr = {d.device.address: d for d in decisions}
    out = list(decisions)
    for d in decisions:
        if d.action != engine.BIND or d.rule is None or d.rule.group != "all":
            continue
        for member in pci.iommu_group_members(ctx.sysfs, d.device.iommu_group or ""):
            if member in by_addr and by_addr[member].action != engine.NONE:
                continue
            dev = fresh(ctx.sysfs, member)
            if dev is None or dev.is_bridge:
                continue
            own = engine.decide(dev, ctx.policy, ctx.index, owner=ctx.owner_of(dev))
            if own.rule is not None and own.rule.flavour != "vfio":
                # A rule that names this device wins over a group sweep.
                own.reason = (f"rule {own.rule.name} says {own.rule.flavour}, so 'group: all' "
                              f"of rule {d.rule.name} leaves it; IOMMU group "
                              f"{d.device.iommu_group} stays blocked by it")
                by_addr[member] = own
                out.append(own)
                continue
            md = engine.decide_with_rule(dev, d.rule, ctx.index, owner=ctx.owner_of(dev))
            md.reason = f"in IOMMU group {d.device.iommu_group} with {d.device.address} " \
                        f"(rule {d.rule.name} has group: all)"
            by_addr[member] = md
            out.append(md)
    return out


def carry_out(ctx, binder: Binder, decision, *, force=False, dry_run=False,
              lock_timeout: float = 30.0) -> Outcome:
    """One decision, under the device's lock, on a fresh read of the device
    (the decision may be older than the device's current state)."""
    address = decision.device.address
    rule = decision.rule
    try:
        with DeviceLock(ctx.root, address, timeout=lock_timeout):
            dev = fresh(ctx.sysfs, address)
            if dev is None:
                binder.state.update(address, None)
                return Outcome(address, decision.action, "gone", module=decision.module,
                               message="device is gone (removed or hot-unplugged)")
            out = _dispatch(ctx, binder, decision, dev, force=force, dry_run=dry_run)
            if rule is not None and rule.sriov_drivers_autoprobe is not None and not dry_run:
                binder.set_sriov_autoprobe(dev, rule.sriov_drivers_autoprobe, out)
            return out
    except (DeviceGone, UnknownDevice):
        return Outcome(address, decision.action, "gone", module=decision.module,
                       message="device is gone (removed or hot-unplugged)")
    except FlavourdError as e:
        return Outcome(address, decision.action, "failed", module=decision.module,
                       message=str(e))


def _dispatch(ctx, binder, decision, dev, *, force, dry_run) -> Outcome:
    rule = decision.rule
    # Decide again on the fresh read, ownership included, so that apply
    # skips what plan leaves alone instead of reporting it as refused.
    fresh_decision = (engine.decide_with_rule(dev, rule, ctx.index, owner=ctx.owner_of(dev))
                      if rule else decision)
    action, module = fresh_decision.action, fresh_decision.module
    if action == engine.BIND:
        return binder.bind(dev, module, rule, force=force, dry_run=dry_run)
    if action == engine.RELEASE:
        return binder.release(dev, force=force, dry_run=dry_run)
    if action == engine.KEEP:
        return Outcome(dev.address, action, "kept", module=module, driver=dev.driver,
                       previous_driver=dev.driver, rule=rule.name if rule else None,
                       message=fresh_decision.reason)
    # The planner's reason can say more (why a group sweep left the device).
    reason = decision.reason if decision.action == action else fresh_decision.reason
    return Outcome(dev.address, action, "skipped", rule=rule.name if rule else None,
                   driver=dev.driver, previous_driver=dev.driver, message=reason)


def decisions_for(ctx, addresses=None) -> list:
    """Decisions for the given addresses (all devices when None)."""
    if addresses is None:
        devices = list(pci.scan(ctx.sysfs))
    else:
        devices = []
        for a in addresses:
            dev = fresh(ctx.sysfs, a)
            if dev is None:
                raise UnknownDevice(a)
            devices.append(dev)
    return [engine.decide(dev, ctx.policy, ctx.index, owner=ctx.owner_of(dev))
            for dev in devices]


