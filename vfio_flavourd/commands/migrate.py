"""`migrate [--write] [--json]`: turn driverctl overrides, vfio-pci.ids= and
modprobe.d settings into a policy, and say how to retire them.

Without --write the policy goes to stdout (a complete YAML file, its
comments holding what was read, what was not migrated, and the steps) and a
one-line summary to stderr.  Exit 0 when something was migrated or nothing
was found; 1 when old config was found but none of it could be migrated.
"""

from __future__ import annotations

from .. import migrate as mig
from ..output import dump_json


NOTHING = ("nothing to migrate: no driverctl overrides in /etc/driverctl.d, no "
           "vfio-pci.ids= in /proc/cmdline, no vfio-pci ids= or softdep in modprobe.d")


def add_arguments(p) -> None:
    p.add_argument("--write", action="store_true",
                   help=f"write the policy to /{mig.MIGRATED_FILE} (never overwrites)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON object: sources, rules, problems, notes, devices, steps")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def summary(m) -> str:
    if m.empty:
        return NOTHING
    text = (f"found {_plural(len(m.sources), 'old setting')}, made "
            f"{_plural(len(m.rules), 'rule')}")
    if not m.migrated:
        text = f"found {_plural(len(m.sources), 'old setting')}, migrated none of them"
    if m.problems:
        text += f"; {_plural(len(m.problems), 'problem')}"
    return text


def _exit_code(m) -> int:
    return 0 if m.migrated or m.empty else 1


def run(ctx, args) -> int:
    m = mig.migrate(ctx, written=args.write)
    if args.write and m.rules:
        mig.write(ctx, m)
    if args.json:
        dump_json(m.as_json())
        return _exit_code(m)
    if m.empty:
        print(NOTHING)
        # Notes still matter here: an `install vfio-pci` script is old
        # config that could not be read as settings.
        for n in m.notes:
            print(f"note: {n}")
        return 0
    if not args.write:
        print(m.text, end="")
        where = (f"; nothing written (--write puts it in /{mig.MIGRATED_FILE})"
                 if m.rules else "")
        print(f"vfio-flavourd: {summary(m)}{where}", file=ctx.stderr)
        return _exit_code(m)
    print(f"wrote {m.written}: {summary(m)}" if m.written else
          f"nothing written: {summary(m)}")
    for title, items in (("not migrated", m.problems), ("notes", m.notes)):
        if items:
            print(f"\n{title}:")
            for p in items:
                print(f"  {p}")
    if m.steps:
        print("\nto retire the old configuration:")
        for n, step in enumerate(m.steps, 1):
            print(f"  {n}. {step}")
    return _exit_code(m)
