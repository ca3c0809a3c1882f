"""`health`: is the daemon alive and past coldplug?  For a container's
probes, where there is no systemd to watch it: the daemon's
--health-file is written after coldplug and every 10 s while it works."""

from __future__ import annotations

import json
import os
import time

from ..errors import FlavourdError, UsageError


def add_arguments(p) -> None:
    from ..publish import ENV
    p.add_argument("--file", metavar="FILE", default=None,
                   help=f"the daemon's --health-file (default: ${ENV['health_file']})")
    p.add_argument("--max-age", metavar="SECONDS", type=float, default=60.0,
                   help="older than this is unhealthy (default 60; the daemon rewrites it "
                        "every 10 s)")


def run(ctx, args) -> int:
    from ..publish import ENV
    path = args.file or os.environ.get(ENV["health_file"])
    if not path:
        raise UsageError(f"health: give --file FILE or set {ENV['health_file']}")
    try:
        with open(path) as f:
            text = f.read()
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        raise FlavourdError(f"{path}: no health file: the daemon is not running, or its "
                            "coldplug is not done") from None
    except OSError as e:
        raise FlavourdError(f"{path}: cannot read: {e.strerror}") from None
    try:
        status = json.loads(text).get("status", "")
    except (ValueError, AttributeError):
        raise FlavourdError(f"{path}: not a health file written by vfio-flavourd") from None
    if age > args.max_age:
        raise FlavourdError(f"{path}: last written {age:.0f} s ago (more than "
                            f"{args.max_age:.0f} s): the daemon is stuck or gone")
    print(f"healthy: {status} (written {age:.0f} s ago)")
    return 0
