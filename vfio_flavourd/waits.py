"""A thread says when it is about to wait on something outside itself.

The daemon's thread that reads an event and takes its device keeps the
reading of the event source while it works on that device, and reads
nothing meanwhile, so that the uevents that come then (the kernel's own
probe ends with a bind uevent) wake no other thread to contend with it for
the interpreter.  Before it waits on anything (a device lock someone else
holds, modprobe, an unbind or a probe, a block device's exclusive open) it
must give the reading up, or the events of every other device would wait
with it.  Those places call before_wait(); what it does is the daemon's
(hook), and nothing when no hook is set, as in every command.
"""

from __future__ import annotations

import _thread      # not threading: `apply` pays for every import

_local = _thread._local()


def before_wait() -> None:
    """Call this thread's hook, once: it is cleared first."""
    fn = getattr(_local, "fn", None)
    if fn is not None:
        _local.fn = None
        fn()


class hook:
    """Set `fn` as this thread's hook for the block; the one before is
    restored after it."""

    def __init__(self, fn):
        self.fn, self._prev = fn, None

    def __enter__(self):
        self._prev = getattr(_local, "fn", None)
        _local.fn = self.fn
        return self

    def __exit__(self, *exc):
        _local.fn = self._prev
        return False
