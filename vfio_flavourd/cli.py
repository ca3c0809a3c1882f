"""Command line: global options, then a command.

User mistakes end as "vfio-flavourd: error: ..." lines and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import sys

from . import __version__, commands
from .errors import FlavourdError, PolicyError, UsageError
from .root import ENV_ROOT, Root

PROG = "vfio-flavourd"


# Global options, before the command: (flags, add_argument keywords).
GLOBAL_OPTIONS = (
    (("--root",), dict(metavar="DIR", default=None,
                       help=f"treat DIR as / (default: ${ENV_ROOT} or /)")),
    (("--kernel-release",), dict(
        metavar="REL", default=None,
        help="kernel release whose modules.alias to read (default: uname -r, or the "
             "root's proc/sys/kernel/osrelease)")),
    (("--policy",), dict(metavar="FILE", action="append", default=[],
                         help="read this policy file instead of the policy.d search path "
                              "(repeatable)")),
    (("--simulate",), dict(action="store_true",
                           help="act on a scratch copy of --root through the simulated "
                                "kernel (nothing is written to the root or to real devices)")),
)


def build_parser(only: str | None = None):
    """The argparse parser; with `only`, every command is listed but only
    that one's module is imported and its arguments set up."""
    import argparse
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Give each PCI device the most specific VFIO driver its flavour "
                    "policy asks for.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for flags, kw in GLOBAL_OPTIONS:
        p.add_argument(*flags, **kw)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, text in commands.COMMANDS.items():
        sp = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if only is None or name == only:
            mod = commands.load(name)
            mod.add_arguments(sp)
            sp.set_defaults(_module=mod)
    return p


class Args:
    """The parsed command line, as attributes (what argparse's Namespace gives)."""

    def __init__(self, values: dict):
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Args({self.__dict__!r})"


def command_in(argv) -> str | None:
    """The command named in argv, when the words before it are global
    options spelt out in full; else None (argparse sorts it out)."""
    flags = {f[0] for f, kw in GLOBAL_OPTIONS if kw.get("action") == "store_true"}
    takes_value = {f[0] for f, kw in GLOBAL_OPTIONS} - flags
    words = iter(argv)
    for w in words:
        if w in takes_value:
            next(words, None)
        elif w in flags or w.split("=", 1)[0] in takes_value:
            continue
        else:
            return w if w in commands.COMMANDS else None
    return None


def parse_args(argv):
    """Plain command lines without argparse (see fastargs); argparse for
    the rest, with only the named command's module imported."""
    from . import fastargs
    command = command_in(argv)
    if command is not None:
        mod = commands.load(command)
        rec = fastargs.Recorder()
        mod.add_arguments(rec)
        if rec.supported:
            glob = [fastargs.Spec(flags, kw) for flags, kw in GLOBAL_OPTIONS]
            values = fastargs.parse(glob, command, rec.specs, argv)
            if values is not None:
                return Args(dict(values, _module=mod))
    return build_parser(command).parse_args(argv)


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
    if argv is None:
        argv = sys.argv[1:]
    args = parse_args(argv)
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


def run() -> None:
    """The installed command's entry point: main(), then out without the
    interpreter's teardown (see leave)."""
    from .leave import leave
    import gc
    # A one-shot command makes few reference cycles and is gone in
    # milliseconds: the collector's passes over what imports create cost
    # `plan` 1.2 ms of 25 here, for nothing.  The daemon turns it back on.
    gc.disable()
    try:
        code = main()
    except SystemExit as e:
        code = e.code
    leave(code)


if __name__ == "__main__":
    run()
