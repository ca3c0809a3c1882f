"""`check-config [FILE...]`: validate policy files without touching devices."""

from __future__ import annotations

from pathlib import Path

from ..errors import PolicyError
from ..policy_load import PolicyFile, discover, load


def add_arguments(p) -> None:
    p.add_argument("files", nargs="*", metavar="FILE", help="policy files to check")


def run(ctx, args) -> int:
    if args.files:
        files = [PolicyFile(Path(f), "command line") for f in args.files]
    elif ctx.policy_paths:
        files = [PolicyFile(Path(f), "command line") for f in ctx.policy_paths]
    else:
        files = discover(ctx.root.policy_dirs())
    try:
        policy = load(files)
    except PolicyError as e:
        for p in e.problems:
            print(f"vfio-flavourd: error: {p}", file=ctx.stderr)
        n = e.total
        print(f"{n} problem{'s' if n != 1 else ''} found", file=ctx.stderr)
        return 1
    active = [f for f in files if not f.disabled]
    print(f"ok: {len(policy.rules)} rules in {len(active)} file"
          f"{'s' if len(active) != 1 else ''}")
    for f in files:
        state = "disabled" if f.disabled else "ok"
        print(f"  {f.path}: {state}")
    if not args.files and not ctx.policy_paths:
        from ..initramfs_record import warnings
        for w in warnings(ctx):
            ctx.warn(w)
    return 0
