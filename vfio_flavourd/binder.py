"""Moving a device to the chosen driver, proving it, and never stranding it.

The sequence (kernel-facts.md): modprobe the module; find the *driver* name
it registered; write that to driver_override; unbind from the current driver;
write the address to drivers_probe; read the driver link back, because
drivers_probe reports success even when the probe failed.  On failure, try
the rule's fallback, else restore the previous override and reprobe so the
host driver gets the device back.

Invariant: afterwards the device is on the chosen driver, the fallback's, or
the driver it had before, or on one the kernel's own probe or another tool
bound meanwhile, which a rollback never unbinds (the guards may have
refused to); no override is left naming a driver that does not hold it.
"""

from __future__ import annotations


import time

from . import pci
from .deadline import DEFAULT_TIMEOUT, Stuck, before_wait
from .errors import (DeviceGone, FlavourdError, ModprobeError, ProbeRunning, SysfsError,
                     UnknownDevice)
from .modprobe import driver_names, module_of_driver, normalise_module
from .owners import OURS, override_owner
from .outcome import OK_RESULTS, Outcome  # noqa: F401  (re-exported)
from .pci import fresh, is_vfio_driver  # noqa: F401  (fresh: re-exported)
from .root import PCI_BUS, PCI_DEVICES, PCI_DRIVERS


class _StepFailed(Exception):
    pass


class Binder:
    def __init__(self, sysfs, loader, vfio_modules: frozenset, state, *,
                 settle_timeout: float = 1.0, unbind_timeout=None, on_slow=None,
                 await_probe=None, drivers=None):
        self.sysfs = sysfs
        self.loader = loader
        # All the binder needs of the variant index: the modules with
        # vfio_pci aliases, to tell a vfio driver from a host driver.
        self.vfio_modules = vfio_modules
        self.state = state
        self.settle_timeout = settle_timeout
        # --unbind-timeout: overrides every rule's unbind_timeout when set.
        self.unbind_timeout = unbind_timeout
        # Called with the address once a timed write has taken deadline.PATIENCE.
        self.on_slow = on_slow
        # await_probe(address) -> bool, asked before the guards: whether the
        # kernel's own probe of a device just added has ended (waiting a
        # while for it).  The daemon's, which knows the add and bind
        # uevents; None: the guards are asked at once.
        self.await_probe = await_probe
        # {module: the PCI driver it registered when last loaded}, kept by
        # the caller across binders (the daemon's, per policy); see load().
        self.drivers = {} if drivers is None else drivers
        self._dirs: dict = {}      # address -> its sysfs directory (guards.device_dir)
        self._registered: dict = {}    # module -> its driver, seen registered (_look_ahead)

    def __repr__(self) -> str:
        return f"<Binder {self.sysfs!r} {self.loader!r}>"

    # -- small kernel operations ------------------------------------------------

    def _dev(self, address: str, attr: str) -> str:
        return f"{PCI_DEVICES}/{address}/{attr}"

    def _gone(self, address: str) -> bool:
        return not self.sysfs.exists(f"{PCI_DEVICES}/{address}")

    def _write(self, out: Outcome, rel: str, value: str, what: str, attempts: int = 1,
               timed: bool = False, then=()) -> None:
        """One write; `timed` for those the kernel may hold: those that run
        a driver's remove() or probe() (unbind, drivers_probe, bind, new_id)
        and driver_override, which some kernels set under the device's
        lock; they get the deadline and raise deadline.Stuck past it.
        then=[(rel, value), ...]: the timed writes that come next, in turn,
        if this one succeeds, without anything between them
        (Sysfs.write_timed)."""
        out.steps.append(f"{what}: write {value.strip() or repr(value)} to {rel}")
        for attempt in range(attempts):
            try:
                if timed:
                    slow = (lambda: self.on_slow(out.address)) if self.on_slow else None
                    self.sysfs.write_timed(rel, value, out.deadline, slow,
                                           then=then if attempt == 0 else ())
                else:
                    self.sysfs.write(rel, value)
                return
            except SysfsError as e:
                if self._gone(out.address):
                    raise DeviceGone(out.address) from None
                if attempt + 1 == attempts:
                    raise _StepFailed(f"{what} failed: {e}") from None
                out.steps.append(f"retrying after: {e}")

    # Writes on the way back are retried: giving up there is what strands a
    # device, and a transient error (ENOMEM, EBUSY) must not do that.
    ROLLBACK_ATTEMPTS = 3

    def current_driver(self, address: str) -> str | None:
        return self.sysfs.link(self._dev(address, "driver"))

    def settle(self, address: str, want: str | None) -> str | None:
        """Read the driver link until it names `want` or the bounded wait
        ends; PCI probing is synchronous for these drivers, so this normally
        returns at the first read."""
        deadline = time.monotonic() + self.settle_timeout
        delay = 0.002
        while True:
            have = self.current_driver(address)
            if have == want or time.monotonic() >= deadline:
                return have
            if want is not None and have is not None and self.await_probe is not None \
                    and self.await_probe(address):
                # Another driver, and the kernel's own probe of a device
                # just added is over (or there was none): that driver stays
                # until someone unbinds it, so waiting out the settle time
                # changes nothing.  The kernel's probe had matched the host
                # driver before our override and bound it after our
                # drivers_probe returned; our caller takes it back.  Waited
                # out, it cost a second in 4 hotplugs of 360 (benchmark
                # figure 7).  Read again: a link that went meanwhile (the
                # host driver's probe rejecting its match on seeing the
                # override) is waited for as before.
                now = self.current_driver(address)
                if now is not None and now != want:
                    return now
                continue
            before_wait()
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def resolve_driver(self, module: str, names=None) -> str:
        """The PCI driver name a loaded module registered (`names`: its
        driver_names(), when just read)."""
        names = names or driver_names(self.sysfs, module)
        if names:
            return sorted(names)[0]
        # Built-in drivers may lack sys/module/*/drivers: try the two usual
        # spellings of the module name.
        for guess in (module, module.replace("_", "-")):
            if self.sysfs.exists(f"{PCI_DRIVERS}/{guess}"):
                return guess
        raise _StepFailed(f"module {module} is loaded but registers no PCI driver "
                          f"(no sys/module/{module}/drivers/pci:*)")

    def load(self, out: Outcome, module: str) -> str:
        # A module whose PCI driver is registered is loaded: no modprobe
        # process for it (under QEMU/TCG that process was a third of
        # `apply`).  Otherwise kmod decides, as before.
        known = self._registered.pop(module, None) or self._registered_now(module)
        if known is not None:
            # The driver it registered last time is registered now, and by
            # it: one readlink instead of listing sys/module/M/drivers
            # (five system calls, each of a hotplug's).
            out.steps.append(f"module {module} registers driver {known}")
            return known
        names = driver_names(self.sysfs, module)
        if not names:
            out.steps.append(f"modprobe {module}")
            before_wait()
            try:
                self.loader.load(module)
            except ModprobeError as e:
                raise _StepFailed(str(e)) from None
        driver = self.resolve_driver(module, names)
        out.steps.append(f"module {module} registers driver {driver}")
        self.drivers[module] = driver
        return driver

    def _registered_now(self, module: str) -> str | None:
        """The driver `module` registered when last loaded, if that driver
        is registered now, and by it; else None."""
        known = self.drivers.get(module)
        if known is not None and module_of_driver(self.sysfs, known) == normalise_module(module):
            return known
        return None

    def _look_ahead(self, module: str) -> None:
        """While the kernel probes: _registered_now(), for load() to take as
        its answer once."""
        known = self._registered_now(module)
        if known is not None:
            self._registered[module] = known

    # -- ownership ----------------------------------------------------------------

    def override_owner(self, dev: pci.PciDevice) -> str | None:
        return override_owner(self.sysfs, self.state, dev)

    # -- bind -----------------------------------------------------------------------

    def bind(self, dev: pci.PciDevice, module: str, rule=None, *, force=False,
             dry_run=False) -> Outcome:
        # The guards, asked now and again should the kernel bind a driver
        # behind our back (_override_sequence); None when forced.
        check = None if force or (rule and rule.force) else self._refusals
        has_override = self.sysfs.exists(self._dev(dev.address, "driver_override"))
        if check is not None and not dev.is_bridge:
            # Asked while the kernel may still probe the device, as nothing
            # it does there changes them: whether driver_override is there
            # (above), the device's own directory, where the guards begin,
            # and whether the module's driver is registered.  Under
            # QEMU/TCG each step after that probe delays the unbind (bench
            # figure 7).
            from .guards import device_dir
            self._dirs[dev.address] = device_dir(self.sysfs, dev.address)
            if not dry_run:
                self._look_ahead(module)
            dev = self._probe_ended(dev)
        out = Outcome(dev.address, "bind", "failed", module=module, driver=dev.driver,
                      previous_driver=dev.driver, rule=rule.name if rule else None,
                      deadline=self.unbind_timeout or (rule and rule.unbind_timeout)
                      or DEFAULT_TIMEOUT)
        if dev.is_bridge:
            out.result, out.message = "refused", "bridges are never bound to vfio"
            return out
        owner = self.override_owner(dev)
        if owner not in (None, OURS) and not (rule and rule.takeover):
            out.result = "refused"
            out.message = (f"driver_override is {dev.driver_override!r}, set by {owner}; "
                           "leaving it alone (a rule with 'takeover: true' may take it)")
            return out
        if check is not None:
            reasons = check(dev)
            if reasons:
                out.result = "refused"
                out.message = ("refusing to unbind: " + "; ".join(reasons)
                               + " (--force or 'force: true' overrides)")
                return out
        if is_vfio_driver(dev, self.vfio_modules):
            # An upgrade from vfio-pci to a variant: never under a user.
            from .iommu import open_holders     # only for an upgrade
            before_wait()       # it reads every process's descriptors
            holders = open_holders(self.sysfs, dev.address, dev.iommu_group)
            if holders:
                out.result = "refused"
                out.message = "in use: " + ", ".join(
                    f"{path} is open in pid {pid} ({comm})" for pid, comm, path in holders)
                return out
        if not has_override and self._gone(dev.address):
            out.result, out.message = "gone", "device disappeared (hot-unplug) during binding"
            self.state.update(dev.address, None)
            return out
        if not has_override and not (rule and rule.allow_new_id):
            out.message = ("this kernel has no driver_override attribute for "
                           f"{dev.address} (added in Linux 3.16); a rule with "
                           "'allow_new_id: true' may use new_id instead")
            return out
        if dry_run:
            out.result = "dry-run"
            unbind = f", unbind from {dev.driver}" if dev.driver else ""
            out.message = f"would modprobe {module}, set driver_override{unbind}, probe"
            return out

        candidates = [module]
        if rule is not None and rule.fallback and rule.fallback != module \
                and rule.fallback not in rule.deny:
            candidates.append(rule.fallback)
        failures = []
        target = (module, None)
        ours = set()        # the drivers this move tried to bind
        try:
            for m in candidates:
                try:
                    driver = self.load(out, m)
                    target = (m, driver)
                    ours.add(driver)
                    if has_override:
                        self._override_sequence(out, dev, driver, check=check)
                    else:
                        self._new_id_sequence(out, dev, driver)
                    out.result, out.module, out.driver = "bound", m, driver
                    out.message = f"bound to {driver}" + (
                        f" (fallback after: {'; '.join(failures)})" if failures else "")
                    self.state.update(dev.address, {
                        "module": m, "driver": driver, "rule": out.rule,
                        "override": driver if has_override else None,
                        "previous_driver": dev.driver, "previous_module": dev.driver_module,
                        "previous_override": dev.driver_override, "outcome": "bound",
                        "message": out.message})
                    return out
                except _StepFailed as e:
                    failures.append(str(e))
                    out.steps.append(f"failed: {e}")
            self._restore(out, dev, ours)
            out.message = "; ".join(failures) + f"; {self._restored_text(out, dev, ours)}"
            self.state.update(dev.address, {
                "module": module, "driver": None, "rule": out.rule, "override": None,
                "previous_driver": dev.driver, "previous_module": dev.driver_module,
                "previous_override": dev.driver_override, "outcome": "failed",
                "message": out.message})
        except DeviceGone:
            out.result, out.message = "gone", "device disappeared (hot-unplug) during binding"
            self.state.update(dev.address, None)
        except Stuck as e:
            self._mark_stuck(out, dev, e, *target)
        return out

    def _mark_stuck(self, out: Outcome, dev: pci.PciDevice, e: Stuck, module, driver,
                    record=None) -> None:
        """Past the deadline: never recorded as bound.  The record keeps the
        target and the override (ours), so that the daemon, on the uevent
        the kernel sends when it finally finishes, completes or rolls back."""
        out.result, out.stuck, out.driver = "stuck", e.helper, None
        out.message = (f"{e}; {dev.address} stays locked until it returns, and the daemon "
                       "completes or rolls back the move when the kernel finishes")
        out.steps.append(f"stuck: {e}")
        base = record if record is not None else {
            "module": module, "rule": out.rule, "override": driver,
            "previous_driver": dev.driver, "previous_module": dev.driver_module,
            "previous_override": dev.driver_override}
        self.state.update(dev.address, dict(
            base, driver=None, target_driver=driver, action=out.action, outcome="stuck",
            stuck_write=e.rel, message=out.message))

    def _override_sequence(self, out: Outcome, dev: pci.PciDevice, driver: str,
                           check=None) -> None:
        """`check(dev)`: the guards' reasons not to unbind, for a host driver
        bound behind our back; None when forced."""
        a = dev.address
        # The override, the unbind from the driver the guards were asked
        # about, and the probe: one request to the writer, which makes each
        # as soon as the one before returns (under QEMU/TCG each round trip
        # to it cost about 3 ms of a hotplug, bench figure 7).
        moves = []
        if dev.driver != driver:
            moves = [(f"{PCI_BUS}/drivers_probe", a)]
            if dev.driver is not None:
                moves.insert(0, (f"{PCI_DRIVERS}/{dev.driver}/unbind", a))
        # Timed like the unbind: where the kernel sets the override under the
        # device's lock (driver_set_override in mainline's source since 5.19),
        # a probe or a remove that holds it (another tool's stuck unbind)
        # holds this write with it.  Debian's 6.12 in the guest did not make
        # it wait (vmtest_guards, scenario c); the deadline is for those that do.
        self._write(out, self._dev(a, "driver_override"), driver, "set override", timed=True,
                    then=moves)
        current = dev.driver if moves else self.current_driver(a)
        self._move(out, dev, driver, current, check, announced=bool(moves))

    def _move(self, out: Outcome, dev: pci.PciDevice, driver: str, current, check,
              announced: bool) -> None:
        """From `current` to `driver`, the override set.  `announced`: the
        unbind from dev.driver (`current`) and the probe were asked for
        with the override, and are collected here."""
        a = dev.address
        probe = (f"{PCI_BUS}/drivers_probe", a)
        if current == driver:
            return
        if current is not None and current != dev.driver:
            # Bound since the read the guards were asked on: a device just
            # hot-added, which the kernel's own probe took after device_add.
            # Ask them again about what is there now, or the unbind below
            # would go unguarded.
            out.steps.append(f"the kernel's own probe bound {current} meanwhile")
            self._ask_guards(check, a)
        if current is not None:
            try:
                self._write(out, f"{PCI_DRIVERS}/{current}/unbind", a,
                            f"unbind from {current}", timed=True, then=[probe])
            except _StepFailed:
                now = self.current_driver(a) if announced else current
                if now == current:
                    raise
                # The kernel's answer to the unbind asked for with the
                # override (ENODEV: not on that driver): its own probe moved
                # the device since the guards' read, and the writer made
                # nothing after it.  From where the device is now.
                out.steps.append(f"not on {current} any more, but on {now or 'no driver'}")
                return self._move(out, dev, driver, now, check, announced=False)
        self._write(out, *probe, "probe", timed=True)
        got = self.settle(a, driver)
        if got is not None and got != driver and current is None:
            # A device just hot-added: the kernel's own probe after
            # device_add ran between our read and our probe, before it saw
            # the override, and bound the host driver (kernel-facts: the
            # host driver binds first; seen on the real-kernel tier).  The
            # override is in place now: take it back once, guards first.
            out.steps.append(f"the kernel's own probe bound {got} meanwhile; taking it back")
            self._ask_guards(check, a)
            self._write(out, f"{PCI_DRIVERS}/{got}/unbind", a, f"unbind from {got}", timed=True)
            self._write(out, *probe, "probe", timed=True)
            got = self.settle(a, driver)
        if got != driver:
            if self._gone(a):
                raise DeviceGone(a)
            raise _StepFailed(f"probe by {driver} failed: the device is "
                              f"{'on ' + got if got else 'unbound'} afterwards "
                              "(drivers_probe reports success regardless; see dmesg)")

    def _refusals(self, dev: pci.PciDevice) -> list:
        from . import guards        # bind only: release needs none
        return guards.refusals(self.sysfs, dev, self._dirs.get(dev.address))

    def _probe_ended(self, dev: pci.PciDevice) -> pci.PciDevice:
        """`dev` once the kernel's own probe of it (a device just added) has
        ended, read again if that probe changed its driver meanwhile; raises
        ProbeRunning, before anything is done, if it has not ended."""
        if self.await_probe is None:
            return dev
        if not self.await_probe(dev.address):
            raise ProbeRunning(dev.address)
        driver = self.current_driver(dev.address)
        if driver != dev.driver:
            # What that probe changed: the driver, and with it its module.
            # driver_override was read with the rest (no probe writes it):
            # not read again, three system calls of each hotplug's way to
            # the unbind (bench figure 7).
            return pci.rebound(self.sysfs, dev, driver)
        return dev

    def _ask_guards(self, check, address: str) -> None:
        """`check` (None when forced) on a fresh read of the device."""
        if check is None:
            return
        if self.await_probe is not None and not self.await_probe(address):
            raise _StepFailed("the kernel's own probe of the device has not ended, so "
                              "its guards cannot be asked yet")
        now = pci.fresh(self.sysfs, address)
        reasons = check(now) if now is not None else []
        if reasons:
            raise _StepFailed("refusing to unbind: " + "; ".join(reasons))

    def _new_id_sequence(self, out: Outcome, dev: pci.PciDevice, driver: str) -> None:
        """For kernels without driver_override: a dynamic id on the driver,
        removed again straight away so later devices with the same id are
        not captured too."""
        a = dev.address
        ids = f"{dev.vendor:04x} {dev.device:04x}"
        current = self.current_driver(a)
        if current == driver:
            return
        if current is not None:
            self._write(out, f"{PCI_DRIVERS}/{current}/unbind", a, f"unbind from {current}",
                        timed=True)
        try:
            self._write(out, f"{PCI_DRIVERS}/{driver}/new_id", ids, "add dynamic id", timed=True)
            got = self.settle(a, driver)
        finally:
            try:
                self._write(out, f"{PCI_DRIVERS}/{driver}/remove_id", ids, "remove dynamic id")
            except _StepFailed as e:
                out.steps.append(f"warning: {e}")
        if got != driver:
            raise _StepFailed(f"probe by {driver} through new_id failed")

    def _best_effort(self, out: Outcome, rel: str, value: str, what: str,
                     timed: bool = False) -> None:
        """A write on the way back: retried, and a failure is noted, not raised,
        so the remaining steps still run."""
        try:
            self._write(out, rel, value, what, attempts=self.ROLLBACK_ATTEMPTS, timed=timed)
        except _StepFailed as e:
            out.steps.append(f"warning: {e}")

    def _restore(self, out: Outcome, dev: pci.PciDevice, ours: set) -> None:
        """Put the device back as it was: the previous override, and its
        previous driver (by reprobe, then by an explicit bind).  A driver
        not in `ours` (those this move tried to bind) that holds it now was
        bound by the kernel's own probe or another tool, and the guards may
        have refused to unbind it: the device is left on it."""
        a = dev.address
        out.steps.append("rolling back")
        if self.sysfs.exists(self._dev(a, "driver_override")):
            self._best_effort(out, self._dev(a, "driver_override"), dev.driver_override or "\n",
                              "restore override", timed=True)
        current = self.current_driver(a)
        if current is not None and current != dev.driver:
            if current not in ours:
                out.steps.append(f"leaving it on {current}, which this move did not bind")
                out.driver = current
                return
            self._best_effort(out, f"{PCI_DRIVERS}/{current}/unbind", a, f"unbind from {current}",
                              timed=True)
        if self.current_driver(a) is None:
            self._best_effort(out, f"{PCI_BUS}/drivers_probe", a, "reprobe", timed=True)
            if self.settle(a, dev.driver) is None and dev.driver is not None:
                self._best_effort(out, f"{PCI_DRIVERS}/{dev.driver}/bind", a,
                                  f"bind back to {dev.driver}", timed=True)
        out.driver = self.current_driver(a)

    def _restored_text(self, out: Outcome, dev: pci.PciDevice, ours: set) -> str:
        if out.driver == dev.driver:
            return (f"returned to {dev.driver}" if dev.driver
                    else "left unbound, as it was")
        if out.driver is not None and out.driver not in ours:
            return (f"left on {out.driver}, which the kernel's own probe or another tool "
                    f"bound meanwhile (it was {'on ' + dev.driver if dev.driver else 'unbound'})")
        return (f"WARNING: could not return it to {dev.driver}; it is now on "
                f"{out.driver or 'no driver'}")

    # -- release ------------------------------------------------------------------------

    def release(self, dev: pci.PciDevice, *, force=False, dry_run=False) -> Outcome:
        a = dev.address
        out = Outcome(a, "release", "failed", driver=dev.driver, previous_driver=dev.driver,
                      deadline=self.unbind_timeout or DEFAULT_TIMEOUT)
        rec = self.state.get(a) or {}
        out.rule = rec.get("rule")
        # The record just read answers whose override it is: no second read.
        owner = override_owner(self.sysfs, {a: rec}, dev)
        if owner not in (None, OURS) and not force:
            out.result = "refused"
            out.message = (f"driver_override is {dev.driver_override!r}, set by {owner}; "
                           "not ours to clear (--force clears it)")
            return out
        on_vfio = is_vfio_driver(dev, self.vfio_modules)
        if dry_run:
            out.result = "dry-run"
            out.message = ("would clear driver_override" if dev.driver_override else
                           "no override to clear") + (
                f", unbind from {dev.driver} and reprobe" if on_vfio else "")
            return out
        try:
            if dev.driver_override is not None:
                self._write(out, self._dev(a, "driver_override"), "\n", "clear override",
                            timed=True)
            if on_vfio:
                self._write(out, f"{PCI_DRIVERS}/{dev.driver}/unbind", a,
                            f"unbind from {dev.driver}", timed=True)
            if self.current_driver(a) is None:
                self._write(out, f"{PCI_BUS}/drivers_probe", a, "reprobe", timed=True)
                host_module = rec.get("previous_module") or (
                    normalise_module(rec["previous_driver"]) if rec.get("previous_driver") else None)
                if self.settle(a, rec.get("previous_driver")) is None and host_module:
                    try:
                        self.loader.load(host_module)
                        out.steps.append(f"modprobe {host_module}")
                    except ModprobeError as e:
                        out.steps.append(f"warning: {e}")
                    if self.current_driver(a) is None:
                        self._write(out, f"{PCI_BUS}/drivers_probe", a, "reprobe", timed=True)
            out.driver = self.settle(a, rec.get("previous_driver"))
        except _StepFailed as e:
            out.message = str(e)
            out.driver = self.current_driver(a)
            return out
        except DeviceGone:
            out.result, out.message = "gone", "device disappeared (hot-unplug) during release"
            self.state.update(a, None)
            return out
        except Stuck as e:
            self._mark_stuck(out, dev, e, rec.get("previous_module"), rec.get("previous_driver"),
                             record=dict(rec, override=None))
            return out
        out.result = "released"
        out.message = (f"on host driver {out.driver}" if out.driver
                       else "unbound: no host driver claimed it")
        self.state.update(a, None)
        return out

    # -- sriov ------------------------------------------------------------------------------

    def set_sriov_autoprobe(self, dev: pci.PciDevice, value: bool, out: Outcome) -> None:
        if dev.sriov_drivers_autoprobe is None or dev.sriov_drivers_autoprobe == value:
            return
        try:
            self._write(out, self._dev(dev.address, "sriov_drivers_autoprobe"),
                        "1" if value else "0", "set sriov_drivers_autoprobe")
        except _StepFailed as e:
            out.steps.append(f"warning: {e}")
