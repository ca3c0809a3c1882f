"""`publish`: write the fleet files once, from the state and sysfs as they
are now (for hosts that bind with `apply` or the udev rule alone)."""

from __future__ import annotations

from ..errors import UsageError


def add_arguments(p) -> None:
    from ..publish import add_options
    add_options(p, optional_paths=True)


def run(ctx, args) -> int:
    from .. import publish_facts
    from ..publish import targets_from, write_files
    targets = targets_from(args)
    if not (targets.prometheus_textfile or targets.nfd_features or targets.cdi_spec):
        raise UsageError("publish: nothing to write; give --prometheus-textfile FILE, "
                         "--nfd-features [FILE] or --cdi-spec [FILE]")
    facts = publish_facts.gather(ctx)
    write_files(targets, facts, warn=ctx.warn)
    return 0
