"""One module per command.  Each has `NAME`, `HELP`, `add_arguments(parser)`
and `run(ctx, args) -> int`."""

from __future__ import annotations

import importlib

COMMANDS = ("plan", "explain", "apply", "release", "status", "daemon", "variants",
            "check_config", "migrate", "publish", "health", "generate_rules")


def load(name: str):
    return importlib.import_module(f"{__name__}.{name}")
