"""Compiling the policy and one kernel's vfio_pci aliases into native udev
rules: a file that decides at a PCI `add` event without running a program.

The layout of the generated file:

1. One line per policy rule, in policy order, made of udev's own match keys
   (ATTR{vendor}, ATTR{class}, KERNEL, TEST=="physfn", ...), which jumps to
   the rule's section.  udev reads lines in order and GOTO only jumps
   forward, so the first rule whose keys match decides, as in the engine.
2. One section per `vfio` rule.  The engine's variant choice (prefer, deny,
   variants, the fewest-wildcards ranking, fallback) is made here, at compile
   time: the rule's usable aliases in the order the engine would rank them,
   each tried against the device's MODALIAS with the very glob kmod uses, so
   the first that matches is the engine's answer.
3. The callout, only for the rules udev cannot express (see `_unexpressible`).

Native rules write driver_override only to a device that no driver holds and
that no one has overridden yet, and never to the boot VGA device: a device
with no driver carries no mounted disk, no routed interface and no console,
so the guards (guards.py) would have nothing to refuse.  Every other device
a compiled rule claims is handed to the daemon, which binds it under its
guards.  docs/man/vfio-flavourd.8 says the same for users.
"""

from __future__ import annotations

from ._record import REQUIRED, record
from .aliases import alias_fields
from .modprobe import expected_driver_name

PREFIX = "vfio_flavourd"
END = f"{PREFIX}_end"
CALLOUT_LABEL = f"{PREFIX}_callout"
DAEMON_LABEL = f"{PREFIX}_daemon"
PROBE_LABEL = f"{PREFIX}_probe"
CALLOUT = "/usr/libexec/vfio-flavourd/vfio-flavourd-udev"
ENV_KEYS = ("VFIO_FLAVOURD_RULE", "VFIO_FLAVOURD_MODULE", "VFIO_FLAVOURD_DRIVER")
# Characters udev reads specially in a match value: '|' separates
# alternatives, '$' and '%' start substitutions, '"' ends the value.
_UDEV_SPECIAL = set('|$%"\\')
BRIDGE_CLASSES = ("0x0600*", "0x0604*")      # engine: bridges are never bound


class Deferred(record("Deferred", (("rule", REQUIRED), ("reasons", REQUIRED)))):
    """A policy rule left to the callout, and why."""
    __slots__ = ()


class Compiled(record("Compiled", (
        ("lines", REQUIRED),            # the body, without the header
        ("deferred", REQUIRED),         # Deferred records, in policy order
        ("modules", REQUIRED),          # modules the rules may load, sorted
        ("native", REQUIRED)))):        # names of the rules compiled natively
    __slots__ = ()


def _ids(values) -> str:
    return "|".join(f"0x{v:04x}" for v in values)


def match_keys(match) -> list:
    """The udev match keys for what `match` says that udev can test on the
    device itself.  Each key is one string; a device matches the policy's
    keys when every string matches (udev ANDs the keys of a line)."""
    keys = []
    for name in ("vendor", "device", "subsystem_vendor", "subsystem_device"):
        want = getattr(match, name)
        if want is not None:
            keys.append(f'ATTR{{{name}}}=="{_ids(want)}"')
    if match.class_ is not None:
        # sysfs prints the class as 0x%06x; a prefix of it is a glob.
        globs = "|".join(f"0x{c}" + ("*" if c.digits < 6 else "") for c in match.class_)
        keys.append(f'ATTR{{class}}=="{globs}"')
    if match.address is not None:
        keys.append(f'KERNEL=="{"|".join(match.address)}"')
    if match.virtfn is not None:
        keys.append('TEST=="physfn"' if match.virtfn else 'TEST!="physfn"')
    return keys


def _unexpressible(rule) -> list:
    """Why udev alone cannot carry out `rule` (empty: it can)."""
    why = []
    m = rule.match
    if m.physfn is not None:
        why.append("'physfn' is a glob on the PF's address, which udev cannot "
                   "test on a VF")
    if m.driver is not None:
        why.append("'driver' depends on the driver bound when the event is handled")
    if rule.takeover:
        why.append("'takeover' needs to know who set an existing driver_override")
    if rule.group == "all":
        why.append("'group: all' claims the other devices of the IOMMU group too")
    for glob in m.address or ():
        if set(glob) & _UDEV_SPECIAL:
            why.append(f"address glob {glob!r} has a character udev reads specially")
    return why


def ranked_aliases(rule, index) -> list:
    """The aliases the engine may choose for `rule`, in the order it ranks
    them (engine.choose_module): each preferred module's aliases, in the
    order of `prefer`, then every usable alias by fewest wildcards, then
    module name.  The engine's choice is the first of them that matches."""
    if not rule.variants:
        return []
    deny = set(rule.deny)
    usable = sorted((a for a in index.aliases if not a.is_catch_all and a.module not in deny),
                    key=lambda a: (a.wildcards, a.module, a.pattern))
    first = [a for pref in rule.prefer for a in usable if a.module == pref]
    rest = [a for a in usable if a.module not in rule.prefer]
    return [a for a in first + rest if _may_meet(a, rule.match)]


def _may_meet(alias, match) -> bool:
    """False when the alias's exact vendor or device id is not one the rule
    matches: such an alias can never match the rule's devices, so leaving
    it out changes no answer and keeps the file short."""
    fields = alias_fields(alias.pattern)
    if fields is None:
        return True
    for field, key in (("v", "vendor"), ("d", "device"), ("sv", "subsystem_vendor"),
                       ("sd", "subsystem_device")):
        want = getattr(match, key)
        text = fields[field]
        if want is None or len(text) != 8 or not all(c in "0123456789ABCDEF" for c in text):
            continue
        if int(text, 16) not in want:
            return False
    return True


def _variant_lines(rule, aliases) -> tuple:
    """(lines, modules, problems): one line per run of aliases naming the
    same module, in rank order, then the fallback."""
    lines, modules, problems = [], set(), []
    runs: list = []
    for a in aliases:
        if set(a.pattern) & _UDEV_SPECIAL:
            problems.append(f"alias {a.pattern!r} of {a.module} ({a.origin}) has a "
                            "character udev reads specially")
        elif runs and runs[-1][0] == a.module:
            runs[-1][1].append(a)
        else:
            runs.append((a.module, [a]))
    for module, run in runs:
        globs = "|".join(f"pci:{a.pattern}" for a in run)
        lines.append(f'ENV{{MODALIAS}}=="{globs}", {_claim(rule, module)}')
        modules.add(module)
    fallback = rule.fallback if rule.fallback not in rule.deny else None
    if fallback is not None:
        lines.append(_claim(rule, fallback))
        modules.add(fallback)
    return lines, modules, problems


def _claim(rule, module: str) -> str:
    return (f'ENV{{VFIO_FLAVOURD_RULE}}="{rule.name}", ENV{{VFIO_FLAVOURD_MODULE}}="{module}", '
            f'ATTR{{driver_override}}="{expected_driver_name(module)}", '
            f'RUN{{builtin}}+="kmod load {module}", GOTO="{PROBE_LABEL}"')


def compile_rules(policy, index, *, callout: bool = True, daemon: bool = True,
                  shown=str) -> Compiled:
    """`callout`: hand the rules udev cannot express to the Python callout
    (False in the initramfs, where there is no Python: those devices are left
    for the running system).  `daemon`: pull vfio-flavourd.service in for
    the devices the native rules claim (False in the initramfs).  `shown`:
    how a rule's origin is written in the file's comments."""
    dispatch, sections, deferred, native, modules = [], [], [], [], set()
    handoff = DAEMON_LABEL if daemon else END
    for i, rule in enumerate(policy.rules, 1):
        keys = match_keys(rule.match)
        why = _unexpressible(rule)
        head = f"# {rule.name} ({shown(rule.origin)}): {rule.flavour}"
        body = []
        if not why and rule.flavour == "vfio":
            body, mods, problems = _variant_lines(rule, ranked_aliases(rule, index))
            why += problems
            modules |= mods
        if why:
            deferred.append(Deferred(rule, tuple(why)))
            target = CALLOUT_LABEL if callout else END
            dispatch += [head + ", left to the " + ("callout" if callout else "running system")]
            dispatch += [f"#   {w}" for w in why]
            dispatch.append(", ".join(keys + [f'GOTO="{target}"']))
            continue
        native.append(rule.name)
        if rule.flavour != "vfio":
            dispatch += [head + ": no override", ", ".join(keys + [f'GOTO="{END}"'])]
            continue
        label = f"{PREFIX}_rule{i}"
        dispatch += [head, ", ".join(keys + [f'GOTO="{label}"'])]
        sections += [
            "", f'LABEL="{label}"',
            f"# {rule.name}: bridges are never bound; a device a driver holds, that "
            "someone\n# else overrode, or that is the boot VGA device goes to the "
            "daemon and its guards.",
            f'ATTR{{class}}=="{"|".join(BRIDGE_CLASSES)}", GOTO="{END}"',
            f'TEST=="driver", GOTO="{handoff}"',
            f'ATTR{{driver_override}}!="(null)", GOTO="{handoff}"',
            f'ATTR{{boot_vga}}=="1", GOTO="{handoff}"',
            *body,
            f'GOTO="{END}"',
        ]
    lines = [f'ACTION!="add", GOTO="{END}"', f'SUBSYSTEM!="pci", GOTO="{END}"',
             # udev carries a device's properties over from its last event.
             ", ".join(f'ENV{{{k}}}=""' for k in ENV_KEYS), ""]
    lines += dispatch + [f'GOTO="{END}"'] + sections
    if sections:
        lines += [
            "", f'LABEL="{PROBE_LABEL}"',
            "# driver_override alone binds nothing: a driver already loaded needs a probe,",
            "# one loaded by the kmod builtin above binds the device as it registers.",
            f'ATTR{{[subsystem/pci]drivers_probe}}="%k"',
        ]
        if daemon:
            lines += ["", f'LABEL="{DAEMON_LABEL}"',
                      'TAG+="systemd", ENV{SYSTEMD_WANTS}+="vfio-flavourd.service"']
        lines.append(f'GOTO="{END}"')
    if deferred and callout:
        lines += [
            "", f'LABEL="{CALLOUT_LABEL}"',
            f'IMPORT{{program}}="{CALLOUT} %k"',
            'ENV{VFIO_FLAVOURD_DRIVER}=="?*", ATTR{driver_override}="$env{VFIO_FLAVOURD_DRIVER}"',
            'ENV{VFIO_FLAVOURD_MODULE}=="?*", TAG+="systemd", '
            'ENV{SYSTEMD_WANTS}+="vfio-flavourd.service"',
        ]
    lines += ["", f'LABEL="{END}"']
    return Compiled(lines, tuple(deferred), tuple(sorted(modules)), tuple(native))

