"""`generate-rules`: the policy and the kernel's vfio_pci aliases, compiled
into one udev rules file that decides without running a program."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..rules_file import generate, staleness, write_atomic


def add_arguments(p) -> None:
    p.add_argument("--output", metavar="FILE",
                   help="write the rules to FILE, atomically (default: standard output)")
    p.add_argument("--check", metavar="FILE",
                   help="exit 1 and say what changed when FILE is stale for today's "
                        "policy and kernel; write nothing")
    p.add_argument("--initramfs", action="store_true",
                   help="rules for an initramfs: no callout and no systemd unit; what "
                        "udev cannot decide is left for the running system")


def run(ctx, args) -> int:
    if args.output and args.check:
        raise UsageError("--output and --check: give one of them")
    text, compiled = generate(ctx, initramfs=args.initramfs)
    if args.check:
        path = Path(args.check)
        try:
            old = path.read_text()
        except FileNotFoundError:
            print(f"{path}: stale: it does not exist")
            return 1
        except OSError as e:
            raise UsageError(f"{path}: cannot read: {e.strerror}") from None
        changes = staleness(old, text)
        if not changes:
            print(f"{path}: current")
            return 0
        print(f"{path}: stale:")
        for c in changes:
            print(f"  {c}")
        return 1
    if not args.output:
        print(text, end="")
        return 0
    path = Path(args.output)
    try:
        write_atomic(path, text)
    except OSError as e:
        raise UsageError(f"{path}: cannot write: {e.strerror}") from None
    left = len(compiled.deferred)
    print(f"{path}: {len(compiled.native)} rules compiled"
          + (f", {left} left to the {'running system' if args.initramfs else 'callout'}"
             if left else "")
          + (f"; loads {', '.join(compiled.modules)}" if compiled.modules else ""),
          file=ctx.stderr)
    return 0
