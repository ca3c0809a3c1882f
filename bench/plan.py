"""Figure 1: `vfio-flavourd --root HOST plan --json` over the 4,096-VF host,
as a whole process (interpreter start included)."""

from __future__ import annotations

import json
import subprocess

from . import host
from .report import metric
from .stats import median, run_timed

RUNS = 5


def run(b) -> list:
    root = b.host("plan")
    argv = [b.install.cli, "--root", root, "plan", "--json"]
    env = b.install.env()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    plan = json.loads(out)      # also warms the page cache and checks the plan
    binds = sum(1 for d in plan if d["action"] == "bind" and d["module"] == "mlx5_vfio_pci")
    if binds != host.PFS * host.VFS_PER_PF:
        raise RuntimeError(f"plan binds {binds} VFs to mlx5_vfio_pci, "
                           f"expected {host.PFS * host.VFS_PER_PF}")
    times = [run_timed(argv, env) for _ in range(RUNS)]
    n = len(plan)
    return [
        metric(1, "plan_devices", "plan: devices on the simulated host", n, "devices"),
        metric(1, "plan_wall_best", f"plan --json wall time, best of {RUNS}", min(times), "s"),
        metric(1, "plan_wall_median", f"plan --json wall time, median of {RUNS}",
               median(times), "s", ("<", 1.0)),
        metric(1, "plan_devices_per_s", "plan throughput (median run)", n / median(times),
               "devices/s"),
    ]

