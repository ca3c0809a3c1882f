"""A small interpreter of udev rules files, for the tests: enough of udev's
rule language to run what generate-rules writes, with udev's matching
semantics, over a device's copied sysfs attributes.

- A line is a comma-separated list of KEY{attr}OP"value" tokens; it applies
  when every match token (== or !=) matches, and then its assignments run
  in order.  GOTO jumps forward to the next LABEL of that name.
- A match value is split on '|' into alternatives, each a glob with
  fnmatch(3) semantics (udev calls fnmatch with no flags).
- ATTR{x} match on an attribute the device lacks fails, whatever the
  operator (systemd's token_match_attr returns false when the read fails).
- ENV{x} match on an unset variable compares the empty string.
- TEST=="path" / TEST!="path": existence relative to the device directory.
- ATTR{x}="v" writes (recorded, not performed); IMPORT{program} is recorded
  as the callout running, and evaluation stops there.
"""

from __future__ import annotations

import fnmatch
import os
import re

TOKEN_RE = re.compile(r'\s*([A-Z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


class UdevDevice:
    """What a rule can see of one device: its name, its attributes, which
    paths exist below it, and its uevent environment."""

    def __init__(self, sysname, attrs, paths, env):
        self.sysname = sysname
        self.attrs = attrs              # {name: value}; a missing name: no attribute
        self.paths = set(paths)         # relative paths that exist (TEST)
        self.env = dict(env)

    @classmethod
    def from_sysfs(cls, devdir: str, action="add"):
        attrs = {}
        for name in ("vendor", "device", "subsystem_vendor", "subsystem_device", "class",
                     "driver_override", "boot_vga", "modalias"):
            try:
                with open(os.path.join(devdir, name)) as f:
                    attrs[name] = f.read().rstrip("\n")
            except OSError:
                pass
        paths = [p for p in ("driver", "physfn") if os.path.exists(os.path.join(devdir, p))]
        env = {"ACTION": action, "SUBSYSTEM": "pci", "MODALIAS": attrs.get("modalias", "")}
        return cls(os.path.basename(devdir), attrs, paths, env)

    @classmethod
    def from_pci(cls, dev, action="add"):
        """From a PciDevice snapshot, as sysfs would print it."""
        attrs = {"vendor": f"0x{dev.vendor:04x}", "device": f"0x{dev.device:04x}",
                 "class": f"0x{dev.class_code:06x}", "modalias": dev.modalias,
                 "driver_override": dev.driver_override or "(null)"}
        if dev.subsystem_vendor is not None:
            attrs["subsystem_vendor"] = f"0x{dev.subsystem_vendor:04x}"
        if dev.subsystem_device is not None:
            attrs["subsystem_device"] = f"0x{dev.subsystem_device:04x}"
        if dev.boot_vga is not None:
            attrs["boot_vga"] = "1" if dev.boot_vga else "0"
        paths = (["driver"] if dev.driver else []) + (["physfn"] if dev.physfn else [])
        env = {"ACTION": action, "SUBSYSTEM": "pci", "MODALIAS": dev.modalias}
        return cls(dev.address, attrs, paths, env)


class Result:
    def __init__(self):
        self.writes = {}        # attribute -> last value written
        self.run = []           # RUN{builtin} commands
        self.tags = []
        self.callout = None     # the IMPORT{program} command, when it ran

    @property
    def driver_override(self):
        return self.writes.get("driver_override")

    def __repr__(self):
        return f"<Result writes={self.writes} run={self.run} callout={self.callout}>"


def parse(text: str) -> list:
    """[(lineno, [(key, attr, op, value)])] and ("LABEL", name) entries."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens, pos = [], 0
        while pos < len(line):
            m = TOKEN_RE.match(line, pos)
            if m is None:
                raise ValueError(f"line {n}: cannot parse {line[pos:]!r}")
            tokens.append((m.group(1), m.group(2), m.group(3), m.group(4)))
            pos = m.end()
        out.append((n, tokens))
    return out


def glob_match(value: str, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(value, alt) for alt in pattern.split("|"))


def _subst(value: str, dev: UdevDevice) -> str:
    value = value.replace("%k", dev.sysname)
    return re.sub(r"\$env\{([^}]*)\}", lambda m: dev.env.get(m.group(1), ""), value)


def _matches(key, attr, op, value, dev) -> bool:
    if key == "TEST":
        found = value in dev.paths
        return found if op == "==" else not found
    if key == "ATTR":
        have = dev.attrs.get(attr)
        if have is None:
            return False
    elif key == "ENV":
        have = dev.env.get(attr, "")
    elif key == "KERNEL":
        have = dev.sysname
    elif key in ("ACTION", "SUBSYSTEM"):
        have = dev.env.get(key, "")
    else:
        raise ValueError(f"match key {key} not supported")
    hit = glob_match(have, value)
    return hit if op == "==" else not hit


def evaluate(rules, dev: UdevDevice) -> Result:
    """Run parsed `rules` (from parse()) for one event on `dev`."""
    res = Result()
    i, goto = 0, None
    while i < len(rules):
        n, tokens = rules[i]
        i += 1
        if goto is not None:
            if tokens[0][0] == "LABEL" and tokens[0][3] == goto:
                goto = None
            continue
        if tokens[0][0] == "LABEL":
            continue
        if not all(_matches(*t, dev) for t in tokens if t[2] in ("==", "!=")):
            continue
        for key, attr, op, value in tokens:
            if op in ("==", "!="):
                continue
            value = _subst(value, dev)
            if key == "GOTO":
                goto = value
            elif key == "ENV":
                if op == "+=" and dev.env.get(attr):
                    dev.env[attr] += " " + value
                elif value:
                    dev.env[attr] = value
                else:
                    dev.env.pop(attr, None)
            elif key == "ATTR":
                res.writes[attr] = value
                if attr == "driver_override":
                    dev.attrs[attr] = value
            elif key == "RUN" and attr == "builtin":
                res.run.append(value)
            elif key == "TAG":
                res.tags.append(value)
            elif key == "IMPORT" and attr == "program":
                res.callout = value
                return res
            else:
                raise ValueError(f"line {n}: assignment {key} not supported")
    res.env = dev.env
    return res
