"""Turning old VFIO configuration into policy rules.

- A driverctl override naming a vfio driver becomes a `flavour: vfio` rule
  for that address.  `vfio-pci` means "for VFIO", so the rule picks the best
  variant and keeps vfio_pci as the fallback; a variant named explicitly
  (mlx5_vfio_pci) goes into `prefer`, with vfio_pci as the fallback.
- A driverctl override naming a host driver (ixgbe) becomes a `flavour: host`
  rule, and driverctl keeps its override: vfio-flavourd does not choose among
  host drivers, but the rule keeps vfio-flavourd's own rules off the device,
  as driverctl's pin kept vfio-pci's ids off it.
- `none` (no driver at all) and `pci-stub` become `flavour: ignore`, and
  driverctl keeps them: vfio-flavourd has nothing equivalent.
- Each `ids=` entry becomes one vfio rule; the same entry from several places
  becomes one rule that cites them all.
- `softdep X pre: vfio-pci` becomes no rule: it only let vfio-pci's ids win
  the race against X, and driver_override, which vfio-flavourd writes, is
  not a race.
Driverctl's rules come first: it applied its overrides after vfio-pci had
claimed its ids, so a per-device override won over an id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ..modprobe import normalise_module
from ..safeio import read_text
from .ids import IdSpec
from .sources import VFIO_PCI, DriverctlOverride, Found, IdsSetting, Origin

FALLBACK = VFIO_PCI
PCI_STUB = "pci_stub"


class Drivers:
    """What this machine knows about driver and module names: the PCI
    drivers registered now, the modules loaded, the modules its kernel
    ships, and the vfio_pci aliases."""

    def __init__(self, sysfs, modules_dir, index):
        self.sysfs = sysfs
        self.modules_dir = modules_dir
        self.index = index
        self._shipped: Optional[set] = None

    def __repr__(self) -> str:
        return f"<Drivers {self.sysfs!r} {self.modules_dir}>"

    def shipped(self) -> set:
        """Module names in modules.dep and modules.builtin."""
        if self._shipped is None:
            names = set()
            for f in ("modules.dep", "modules.builtin"):
                try:
                    text = read_text(self.modules_dir / f, "ascii", "replace")
                except OSError:
                    continue
                for line in text.splitlines():
                    path = line.partition(":")[0].strip()
                    if ".ko" in path:
                        names.add(normalise_module(os.path.basename(path).partition(".ko")[0]))
            self._shipped = names
        return self._shipped

    def module_of(self, driver: str) -> Optional[str]:
        """The module behind a driver name, or None when nothing on this
        machine has that name."""
        link = self.sysfs.link(f"sys/bus/pci/drivers/{driver}/module")
        if link:
            return normalise_module(link)
        mod = normalise_module(driver)
        if (mod == VFIO_PCI or mod in self.index.modules() or mod in self.shipped()
                or self.sysfs.exists(f"sys/module/{mod}")
                or self.sysfs.exists(f"sys/bus/pci/drivers/{driver}")):
            return mod
        return None

    def is_vfio(self, driver: str, module: str) -> bool:
        return module == VFIO_PCI or module in self.index.modules() or "vfio" in driver


@dataclass
class MigratedRule:
    name: str
    flavour: str
    match: dict                 # policy match keys, as YAML-ready text
    origins: list               # Origin of each source line it stands for
    summary: str                # what the old config said
    now: str                    # what the rule does
    prefer: tuple = ()
    fallback: Optional[str] = None

    def as_dict(self) -> dict:
        return {"name": self.name, "flavour": self.flavour, "match": dict(self.match),
                "prefer": list(self.prefer), "fallback": self.fallback,
                "sources": [str(o) for o in self.origins], "summary": self.summary,
                "now": self.now}


@dataclass(frozen=True)
class OldClaim:
    """A device the old config claimed, for checking the new policy
    against: by address (driverctl) or by id (ids=)."""
    flavour: str                # vfio | host | ignore
    what: str
    origin: Origin
    address: Optional[str] = None
    spec: Optional[IdSpec] = None

    def matches(self, dev) -> bool:
        if self.address is not None:
            return dev.address == self.address
        return self.spec.matches(dev)


@dataclass
class Converted:
    rules: list
    claims: list


def _unique(name: str, used: set) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}-{n}"
    used.add(candidate)
    return candidate


def _driverctl(src: DriverctlOverride, drivers: Drivers, found: Found, used: set):
    """(rule, claim) for one override, or (None, None) with a problem."""
    addr, drv, where = src.address, src.driver, src.origin
    summary = f"driverctl: {addr} -> {drv}"
    if drv == "none":
        now = "vfio-flavourd never touches it; driverctl keeps it without a driver"
        found.note(where, f"driverctl keeps {addr} without any driver ('none'); vfio-flavourd "
                   "has no such flavour, so keep driverctl's override; the rule says "
                   "'ignore' so vfio-flavourd never touches the device")
        flavour = "ignore"
    else:
        module = drivers.module_of(drv)
        if module is None:
            found.problem(where, f"unknown driver {drv!r}: no PCI driver or kernel module of "
                          "that name on this machine; skipped")
            return None, None
        if module == PCI_STUB:
            flavour = "ignore"
            now = "vfio-flavourd never touches it; driverctl keeps it on pci-stub"
            found.note(where, f"driverctl parks {addr} on pci-stub; keep driverctl's "
                       "override (the rule says 'ignore'); if the device is meant for a VM, "
                       "make the rule 'flavour: vfio' and retire the override")
        elif drivers.is_vfio(drv, module):
            rule = _vfio_rule(f"driverctl-{addr}", {"address": addr}, [where], summary,
                              module, used)
            if module == VFIO_PCI and drv != "vfio-pci":
                found.note(where, f"the override names {drv!r}, but the driver is called "
                           "'vfio-pci': the kernel binds no driver to an override naming "
                           f"another, so {addr} has been left without one; the rule gives it "
                           "to VFIO as intended")
            return rule, OldClaim("vfio", f"driverctl bound it to {drv}", where, address=addr)
        else:
            flavour = "host"
            now = (f"vfio-flavourd keeps its vfio rules off it; driverctl still pins it "
                   f"to {drv}")
            found.note(where, f"keep driverctl's override of {addr} to {drv}: vfio-flavourd "
                       "does not choose among host drivers; its 'host' rule keeps vfio "
                       "rules off the device")
    rule = MigratedRule(_unique(f"driverctl-{addr}", used), flavour, {"address": addr},
                        [where], summary, now)
    return rule, OldClaim(flavour, f"driverctl pinned it to {drv}", where, address=addr)


def _vfio_rule(name, match, origins, summary, module, used) -> MigratedRule:
    if module == VFIO_PCI:
        return MigratedRule(_unique(name, used), "vfio", match, origins, summary,
                            "its best VFIO variant driver, else vfio_pci",
                            fallback=FALLBACK)
    return MigratedRule(_unique(name, used), "vfio", match, origins, summary,
                        f"{module} as before while its alias matches the device, else the "
                        "best other variant, else vfio_pci",
                        prefer=(module,), fallback=FALLBACK)


def convert(found: Found, drivers: Drivers, taken=()) -> Converted:
    """Rules for the sources in `found`, recording notes and problems in it.
    `taken`: rule names the policy already uses."""
    used = set(taken)
    rules, claims = [], []
    for src in sorted((s for s in found.sources if isinstance(s, DriverctlOverride)),
                      key=lambda s: s.address):
        rule, claim = _driverctl(src, drivers, found, used)
        if rule is not None:
            rules.append(rule)
            claims.append(claim)

    settings = [s for s in found.sources if isinstance(s, IdsSetting)]
    by_match: dict = {}
    for s in settings:
        param = "vfio-pci.ids=" if s.kind == "cmdline" else "options vfio-pci ids="
        for spec in s.ids:
            key = tuple(spec.match_keys().items())
            what = f"{param} entry {spec.text}"
            claims.append(OldClaim("vfio", f"vfio-pci claimed it by id ({what})", s.origin,
                                   spec=spec))
            if key in by_match:
                if s.origin not in by_match[key].origins:
                    by_match[key].origins.append(s.origin)
                continue
            rule = _vfio_rule(f"vfio-pci-ids-{spec.short}", dict(key), [s.origin],
                              what, VFIO_PCI, used)
            by_match[key] = rule
            rules.append(rule)

    with_ids = [s for s in settings if s.ids]
    if len(with_ids) > 1:
        found.note(with_ids[-1].origin, "vfio-pci takes one ids= value; with several ("
                   + ", ".join(str(s.origin) for s in with_ids) + ") the kernel used only "
                   "the last one it was given, so the old config may not have claimed all "
                   "of these devices; the migrated policy claims them all")
    softdeps = [s for s in found.sources if s.kind == "softdep"]
    if softdeps and not with_ids:
        found.note(softdeps[0].origin, "softdep ... pre: vfio-pci only orders module "
                   "loading; with no vfio-pci ids= anywhere it claimed no device")
    return Converted(rules, claims)
