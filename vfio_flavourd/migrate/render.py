"""The migrated policy as YAML text, with its story in comments.

The text is a complete policy file: what was read, what was not migrated
and why, one commented rule per source, how the devices on this machine
come out, and the steps to retire the old config.  So the file keeps its
own history once installed, and `migrate > file.yaml` works too.
"""

from __future__ import annotations

import json

KIND_LABEL = {"driverctl": "driverctl", "cmdline": "kernel command line",
              "modprobe": "modprobe.d options", "softdep": "modprobe.d softdep"}

_QUOTED = ("address", "class")          # YAML would read these as numbers


def _scalar(key: str, value: str) -> str:
    return json.dumps(value) if key in _QUOTED else value


def source_text(src) -> str:
    if src.kind == "driverctl":
        return src.text
    if src.kind == "cmdline":
        return src.option
    return src.text


def _comment(text: str, indent: str = "") -> str:
    return f"{indent}#" + (f" {text}" if text else "")


def rule_lines(rule) -> list:
    out = [_comment(rule.summary, "  ")]
    out += [_comment(f"  from {o}", "  ") for o in rule.origins]
    out.append(_comment(f"now: {rule.now}", "  "))
    out.append(f"  - name: {json.dumps(rule.name)}")
    out.append("    description: " + json.dumps(
        "migrated from " + ", ".join(str(o) for o in rule.origins)))
    out.append("    match:")
    out += [f"      {k}: {_scalar(k, v)}" for k, v in rule.match.items()]
    out.append(f"    flavour: {rule.flavour}")
    if rule.prefer:
        out.append(f"    prefer: [{', '.join(rule.prefer)}]")
    if rule.fallback:
        out.append(f"    fallback: {rule.fallback}")
    return out


def device_lines(checks) -> list:
    if not checks:
        return []
    out = ["", "# The devices on this machine, once the old config is retired:"]
    for c in checks:
        new = f"{c.rule} -> {c.module or c.flavour}" if c.rule else "no rule"
        mark = "ok" if c.ok else "MISMATCH"
        out.append(_comment(f"  {c.address}  {c.id_text}  {mark}: {c.old or 'not claimed'}; "
                            f"now {new}"))
    return out


def policy_text(m) -> str:
    """`m`: a Migration."""
    out = ["# vfio-flavourd policy migrated by `vfio-flavourd migrate` from this machine's",
           "# earlier VFIO configuration."]
    if m.root != "/":
        out.append(f"# (read under the root {m.root})")
    if m.sources:
        out += ["#", "# Read:"]
        out += [_comment(f"  {KIND_LABEL[s.kind]}: {source_text(s)}   [{s.origin}]")
                for s in m.sources]
    if m.problems:
        out += ["#", "# Not migrated (fix these and run migrate again, or write rules by hand):"]
        out += [_comment(f"  {p}") for p in m.problems]
    if m.notes:
        out += ["#", "# Notes:"]
        out += [_comment(f"  {n}") for n in m.notes]
    out += ["#", "# Rules are tried in order and the first match wins.  driverctl's",
            "# per-device overrides come first: driverctl applied them after vfio-pci",
            "# had claimed its ids, so they won."]
    out.append("version: 1")
    if not m.rules:
        out.append("rules: []")
    else:
        out.append("rules:")
        for n, rule in enumerate(m.rules):
            if n:
                out.append("")
            out += rule_lines(rule)
    out += device_lines(m.devices)
    if m.steps:
        out += ["", "# To retire the old configuration:"]
        out += [_comment(f"  {n}. {s}") for n, s in enumerate(m.steps, 1)]
    return "\n".join(out) + "\n"
