"""Carrying out a plan: the decisions for the devices asked for, with IOMMU
group expansion, each under its device lock.  Shared by `apply`, the daemon
and the udev path."""

from __future__ import annotations

from . import engine, pci
from .pci import fresh
from .errors import DeviceGone, FlavourdError, UnknownDevice


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


def carry_out(ctx, binder: "Binder", decision, *, force=False, dry_run=False,
              lock_timeout: float = 30.0) -> Outcome:
    """One decision, under the device's lock, on a fresh read of the device
    (the decision may be older than the device's current state)."""
    return _locked(ctx, binder, decision.device.address, decision, force=force,
                   dry_run=dry_run, lock_timeout=lock_timeout)[1]


def decide_and_carry_out(ctx, binder: "Binder", address: str, *, dry_run=False,
                         lock_timeout: float = 30.0):
    """The daemon's way with a device an event names: read once, under the
    device's lock, decided and carried out on that one read.  (Deciding
    first and reading again under the lock read every hot-added device
    twice.)  Returns (decision, outcome); (None, None) when the device is
    already gone.  Members of its IOMMU group that its rule takes as well
    ('group: all') are the caller's, through expand_groups and carry_out."""
    return _locked(ctx, binder, address, None, force=False, dry_run=dry_run,
                   lock_timeout=lock_timeout)


def _locked(ctx, binder, address: str, decision, *, force, dry_run, lock_timeout):
    from .outcome import Outcome
    action = decision.action if decision is not None else engine.NONE
    module = decision.module if decision is not None else None
    try:
        from .state import device_locked   # not for plan, which locks nothing
        with device_locked(ctx.root, address, lock_timeout, dry_run=dry_run) as lock:
            if decision is None:
                dev, current = _read_and_decide(ctx, address)
            else:
                dev, current = fresh(ctx.sysfs, address), None
            if dev is None:
                binder.state.update(address, None)
                if decision is None:
                    return None, None
                return decision, Outcome(address, action, "gone", module=module,
                                         message="device is gone (removed or hot-unplugged)")
            decision = decision or current
            action, module, rule = decision.action, decision.module, decision.rule
            out = _dispatch(ctx, binder, decision, dev, force=force, dry_run=dry_run,
                            current=current)
            if out.stuck is not None:
                lock.hand_over(out.stuck)
                return decision, out
            if rule is not None and rule.sriov_drivers_autoprobe is not None and not dry_run:
                binder.set_sriov_autoprobe(dev, rule.sriov_drivers_autoprobe, out)
            return decision, out
    except (DeviceGone, UnknownDevice):
        return decision, Outcome(address, action, "gone", module=module,
                                 message="device is gone (removed or hot-unplugged)")
    except FlavourdError as e:
        return decision, Outcome(address, action, "failed", module=module, message=str(e))


def _read_and_decide(ctx, address: str):
    """(device, decision) for an event's device; (None, None) when gone.
    The kernel may still be probing it (a hot-added device is probed right
    after device_add), and on kernels where reading driver_override waits
    for that probe the engine decides on a read without it meanwhile, and
    decides again only if the completed read (pci.settled) differs.  Under
    QEMU/TCG this took the decision, 1 to 3 ms, off each hotplug's way to
    the unbind."""
    early = fresh(ctx.sysfs, address, override=False)
    if early is None:
        return None, None
    guess = engine.decide(early, ctx.policy, ctx.index)
    dev = pci.settled(ctx.sysfs, early)
    if dev == early:
        return dev, guess
    return dev, engine.decide(dev, ctx.policy, ctx.index, owner=ctx.owner_of(dev))


def _dispatch(ctx, binder, decision, dev, *, force, dry_run, current=None) -> Outcome:
    """`current`: the decision already made on this very read, if any."""
    from .outcome import Outcome
    rule = decision.rule
    # Decide again on the fresh read, ownership included, so that apply
    # skips what plan leaves alone instead of reporting it as refused.
    fresh_decision = current or (
        engine.decide_with_rule(dev, rule, ctx.index, owner=ctx.owner_of(dev))
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


def decisions_for(ctx, addresses=None, full: bool = True) -> list:
    """Decisions for the given addresses (all devices when None).
    full=False: the devices as pci.read_device reads them for a table
    (no IOMMU group, SR-IOV or boot_vga fields); never to carry out."""
    if addresses is None:
        devices = list(pci.scan(ctx.sysfs, ctx.warn, full))
    else:
        devices = []
        for a in addresses:
            dev = fresh(ctx.sysfs, a)
            if dev is None:
                raise UnknownDevice(a)
            devices.append(dev)
    return [engine.decide(dev, ctx.policy, ctx.index, owner=ctx.owner_of(dev))
            for dev in devices]




def lock_is_free(root, address: str) -> bool:
    """Whether nobody (an abandoned write included) holds the device's lock."""
    from .state import DeviceLock
    try:
        with DeviceLock(root, address, timeout=0):
            return True
    except FlavourdError:
        return False


def resume_stuck(ctx, binder: "Binder", address: str, rec: dict) -> "Outcome | None":
    """A device recorded `stuck` whose write the kernel has finished: finish
    a release, or record a bind the kernel completed late, after checking
    the driver link.  None: carry on with the policy's decision, which
    completes the move (the override is ours) or rolls it back."""
    from .outcome import Outcome
    from .state import device_locked
    with device_locked(ctx.root, address) as lock:
        dev = fresh(ctx.sysfs, address)
        if dev is None:
            binder.state.update(address, None)
            return Outcome(address, rec.get("action", "bind"), "gone",
                           message="device is gone (removed or hot-unplugged)")
        if rec.get("action") == "release":
            out = binder.release(dev, force=True)
        elif dev.driver is not None and dev.driver == rec.get("target_driver"):
            message = f"bound to {dev.driver} (the kernel finished the stuck write late)"
            rest = {k: v for k, v in rec.items() if k not in ("stuck_write", "target_driver")}
            binder.state.update(address, dict(rest, driver=dev.driver, outcome="bound",
                                              message=message))
            return Outcome(address, "bind", "bound", module=rec.get("module"),
                           driver=dev.driver, previous_driver=rec.get("previous_driver"),
                           rule=rec.get("rule"), message=message)
        elif dev.driver is None:
            # The unbind went through: carry on with the policy's choice, and
            # on failure roll back to the driver the device had before.
            d = engine.decide(dev, ctx.policy, ctx.index, owner=ctx.owner_of(dev))
            if d.action != engine.BIND:
                return None
            before = dev._replace(driver=rec.get("previous_driver"),
                                  driver_module=rec.get("previous_module"),
                                  driver_override=rec.get("previous_override"))
            out = binder.bind(before, d.module, d.rule)
        else:
            return None
        if out.stuck is not None:
            lock.hand_over(out.stuck)
        return out
