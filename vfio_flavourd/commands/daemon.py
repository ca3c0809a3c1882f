"""`daemon`: coldplug, then follow PCI uevents (run by systemd)."""

from __future__ import annotations

from ..errors import FlavourdError


def add_arguments(p) -> None:
    p.add_argument("--dry-run", "-n", action="store_true",
                   help="log what would be done, change nothing")
    p.add_argument("--source", choices=("udev", "kernel"), default=None,
                   help="uevents after udev's rules (default when udevd runs) or raw "
                        "kernel events")
    p.add_argument("--verbose", "-v", action="store_true", help="log kept/skipped devices too")
    from ..publish import add_options
    add_options(p, optional_paths=False)


def run(ctx, args) -> int:
    import gc
    gc.enable()         # cli.run() turns it off for one-shot commands
    from .. import log
    from ..daemon import Daemon
    from ..events import UdevSource
    from ..notify import Notifier

    logger = log.setup(verbose=args.verbose)
    kernel = getattr(ctx.sysfs, "kernel", None)
    if kernel is not None:
        # --simulate: the simulated kernel's uevents, not the host's.
        from ..events import FakeSource
        source = FakeSource()
        kernel.subscribe(source.push_uevent)
        source.name = "simulated kernel"
    else:
        source = None
    try:
        if source is None:
            from ..events import udevd_running
            which = args.source or ("udev" if udevd_running() else "kernel")
            if which == "kernel":
                # Raw kernel events, read without pyudev: see uevents_kernel.
                from .. import pci
                from ..uevents_kernel import KernelSource
                source = KernelSource(logger=logger,
                                      rescan=lambda: pci.addresses(ctx.sysfs))
            else:
                source = UdevSource(which, logger=logger)
    except ImportError:
        raise FlavourdError("the daemon needs pyudev, a dependency of vfio-flavourd: "
                            "pip install pyudev, or on Debian apt install python3-pyudev") \
            from None
    except OSError as e:
        raise FlavourdError(f"cannot listen for uevents: {e}") from None
    from ..publish import targets_from
    targets = targets_from(args)
    publisher = None
    if targets.any:
        from ..publish_daemon import Publisher
        publisher = Publisher(targets, logger)
    d = Daemon(ctx, source, Notifier(), dry_run=args.dry_run, logger=logger,
               publisher=publisher)
    d.install_signal_handlers()
    return d.run()
