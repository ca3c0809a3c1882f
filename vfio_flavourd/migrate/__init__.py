"""Migrating a machine's earlier VFIO setup (driverctl overrides,
vfio-pci.ids= on the kernel command line, vfio-pci options and softdeps in
modprobe.d) to a vfio-flavourd policy.

    m = migrate(ctx)      # reads, converts, checks; writes nothing
    m.text                # the policy file, with its story in comments
    write(ctx, m)         # etc/vfio-flavourd/policy.d/50-migrated.yaml, never overwriting
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from ..errors import FlavourdError, PolicyError
from ..safeio import write_new
from .convert import Drivers, convert
from .render import policy_text, source_text
from .sources import MIGRATED_FILE, Found, read_all
from .steps import retire_steps
from .verify import MIGRATED_NAME, check

__all__ = ["Migration", "migrate", "write", "MIGRATED_FILE"]


@dataclass
class Migration:
    root: str
    found: Found
    rules: list = field(default_factory=list)
    claims: list = field(default_factory=list)
    devices: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    text: str = ""
    written: Optional[str] = None

    def __repr__(self) -> str:
        return (f"<Migration {len(self.sources)} sources -> {len(self.rules)} rules, "
                f"{len(self.problems)} problems>")

    @property
    def sources(self) -> list:
        return self.found.sources

    @property
    def problems(self) -> list:
        return self.found.problems

    @property
    def notes(self) -> list:
        return self.found.notes

    @property
    def migrated(self) -> bool:
        """Did anything carry over?  A softdep needs no rule, only retiring."""
        return bool(self.rules) or any(s.kind == "softdep" for s in self.sources)

    @property
    def empty(self) -> bool:
        return not self.sources and not self.problems

    def as_json(self) -> dict:
        return {
            "root": self.root,
            "sources": [_source_json(s) for s in self.sources],
            "rules": [r.as_dict() for r in self.rules],
            "problems": [_problem_json(p) for p in self.problems],
            "notes": [_problem_json(n) for n in self.notes],
            "devices": [c.as_dict() for c in self.devices],
            "steps": list(self.steps),
            "policy": self.text if self.rules else None,
            "written": self.written,
        }


def _problem_json(p) -> dict:
    return {"origin": str(p.origin), "message": p.message, "text": str(p)}


def _source_json(s) -> dict:
    out = {"kind": s.kind, "origin": str(s.origin), "text": source_text(s)}
    if s.kind == "driverctl":
        out.update(address=s.address, driver=s.driver)
    elif s.kind == "softdep":
        out["module"] = s.module
    else:
        out.update(ids=[i.text for i in s.ids], other_options=list(s.other_options))
    return out


def _taken_names(ctx) -> set:
    """Rule names the installed policy uses, but for an earlier migrated
    file, which this migration would replace."""
    try:
        rules = ctx.policy.rules
    except PolicyError:
        return set()
    return {r.name for r in rules
            if os.path.basename(r.origin.rpartition(":")[0]) != MIGRATED_NAME}


def migrate(ctx, written: bool = False) -> Migration:
    found = read_all(ctx.root)
    drivers = Drivers(ctx.sysfs, ctx.root.modules_dir(), ctx.index)
    conv = convert(found, drivers, _taken_names(ctx))
    m = Migration(str(ctx.root.dir), found, conv.rules, conv.claims)
    m.steps = retire_steps(ctx.root, found.sources, m.rules, written)
    if m.rules:
        m.devices, problems, note = check(ctx, policy_text(m), m.claims,
                                          {r.name for r in m.rules})
        found.problems.extend(problems)
        if note:
            found.notes.append(note)
    m.text = policy_text(m)
    return m


def write(ctx, m: Migration) -> str:
    """Write the policy to MIGRATED_FILE under the root; never overwrite."""
    path = ctx.root.path(MIGRATED_FILE)
    if os.path.lexists(path):
        cmd = "vfio-flavourd" + ("" if ctx.root.is_host else f" --root {ctx.root.dir}")
        raise FlavourdError(f"{path} already exists; not overwriting it (move it away "
                            f"first, or compare: {cmd} migrate | diff -u {path} -)")
    ctx.root.ensure_dir(MIGRATED_FILE.rsplit("/", 1)[0])
    try:
        write_new(path, m.text.encode("utf-8"), exclusive=True)
    except FileExistsError:
        raise FlavourdError(f"{path} already exists; not overwriting it") from None
    except OSError as e:
        raise FlavourdError(f"{path}: cannot write: {e.strerror or e}") from None
    m.written = str(path)
    return str(path)
