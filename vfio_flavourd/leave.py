"""Leaving a one-shot process without the interpreter's teardown.

By the time a command returns, it has done its work and closed every file
it wrote.  What the interpreter does next, freeing every module and object
one by one and a last garbage collection, cost `plan` on the example host
3.7 ms of 25 and the udev callout 4 ms of 27 for each PCI add event, for
nothing.  atexit functions still run and the standard streams are flushed.
"""

from __future__ import annotations

import os
import sys


def leave(code) -> None:
    """Exit now with the status sys.exit(code) would give.  A flush into a
    closed pipe (`plan | head`) is not an error."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code & 0xFF)
