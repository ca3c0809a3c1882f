"""`variants`: the vfio_pci aliases this kernel offers."""

from __future__ import annotations

from ..output import dump_json, table


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON array")


def run(ctx, args) -> int:
    index = ctx.index
    aliases = sorted(index.aliases, key=lambda a: (a.module, a.pattern))
    if args.json:
        dump_json([{"module": a.module, "pattern": "vfio_pci:" + a.pattern,
                    "wildcards": a.wildcards, "origin": a.origin} for a in aliases])
        return 0
    table(("MODULE", "PATTERN", "WILDCARDS"),
          [(a.module, "vfio_pci:" + a.pattern, a.wildcards) for a in aliases])
    print(f"\n{len(aliases)} aliases from {index.source}")
    return 0
