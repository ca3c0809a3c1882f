"""Command line: global options, then a command.

User mistakes end as "vfio-flavourd: error: ..." lines and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__, commands
from .errors import FlavourdError, PolicyError, UsageError
from .root import ENV_ROOT, Root

PROG = "vfio-flavourd"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Give each PCI device the most specific VFIO driver its flavour "
                    "policy asks for.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--root", metavar="DIR", default=None,
                   help=f"treat DIR as / (default: ${ENV_ROOT} or /)")
    p.add_argument("--kernel-release", metavar="REL", default=None,
                   help="kernel release whose modules.alias to read (default: uname -r, "
                        "or the root's proc/sys/kernel/osrelease)")
    p.add_argument("--policy", metavar="FILE", action="append", default=[],
                   help="read this policy file instead of the policy.d search path "
                        "(repeatable)")
    p.add_argument("--simulate", action="store_true",
                   help="act on a scratch copy of --root through the simulated kernel "
                        "(nothing is written to the root or to real devices)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in commands.COMMANDS:
        mod = commands.load(name)
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP[0].upper() + mod.HELP[1:] + ".")
        mod.add_arguments(sp)
        sp.set_defaults(_module=mod)
    return p


def make_context(args):
    from .context import Context
    root = Root(args.root, kernel_release=args.kernel_release)
    if not args.simulate:
        return Context(root, policy_paths=args.policy)
    if root.is_host:
        raise UsageError("--simulate needs --root DIR: a copy of a machine, such as "
                         "examples/hosts/virt-server")
    import atexit
    import shutil
    import tempfile
    from .sim import SimKernel
    scratch = tempfile.mkdtemp(prefix="vfio-flavourd-sim-")
    atexit.register(shutil.rmtree, scratch, True)
    from .sim.scratch import copy_tree
    copy_tree(root.dir, scratch)
    kernel = SimKernel(scratch)
    ctx = Context(Root(scratch, kernel_release=args.kernel_release), policy_paths=args.policy)
    ctx.sysfs = kernel.sysfs
    ctx.loader = kernel.loader
    print(f"{PROG}: simulating on a scratch copy of {root.dir} ({scratch}); nothing real "
          "is touched", file=sys.stderr)
    return ctx


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .output import Escaping
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Escaping(sys.stdout), Escaping(sys.stderr)
    try:
        return _run(args)
    finally:
        sys.stdout, sys.stderr = saved


def _run(args) -> int:
    try:
        ctx = make_context(args)
        return args._module.run(ctx, args)
    except PolicyError as e:
        for problem in e.problems:
            print(f"{PROG}: error: {problem}", file=sys.stderr)
        print(f"{PROG}: error: the policy has {e.total} problem"
              f"{'s' if e.total != 1 else ''}; nothing was done", file=sys.stderr)
        return 1
    except FlavourdError as e:
        for line in str(e).splitlines():
            print(f"{PROG}: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `vfio-flavourd plan | head` is not an error.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
