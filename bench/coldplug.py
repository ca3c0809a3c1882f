"""Figure 4: coldplug apply of the whole host on the simulated kernel, in
process: our own time per device, the simulated kernel's time taken out."""

from __future__ import annotations

import collections
import time

from vfio_flavourd import actions

from . import host
from .report import metric
from .simd import context


def run(b) -> list:
    kernel = b.kernel("coldplug")
    ctx = context(kernel)
    ctx.policy, ctx.index       # loaded before the clock starts, as the daemon does
    t0 = time.perf_counter()
    decisions = actions.decisions_for(ctx)
    binder = ctx.binder(settle_timeout=0)
    results = collections.Counter(actions.carry_out(ctx, binder, d).result for d in decisions)
    wall = time.perf_counter() - t0
    want = host.PFS * host.VFS_PER_PF + 4
    if results["bound"] != want:
        raise RuntimeError(f"coldplug: {dict(results)}, expected {want} bound")
    n = len(decisions)
    return [
        metric(4, "coldplug_devices", "coldplug: devices (bound)", n, f"devices ({want})"),
        metric(4, "coldplug_wall", "coldplug apply wall time", wall, "s"),
        metric(4, "coldplug_kernel", "of which in the simulated kernel", kernel.time_spent, "s"),
        metric(4, "coldplug_own_per_device", "coldplug own overhead per device",
               (wall - kernel.time_spent) / n * 1e3, "ms", ("<", 1.0)),
    ]
