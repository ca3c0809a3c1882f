"""Figure 8: `status` and `plan` on the bundled example host
(examples/hosts/virt-server, 62 devices) as whole processes, the
installed launcher, against a bare `python3 -I -c pass`, alternating so
that all three see the same load.  Each command's first run fills the
policy cache (as any second run of a user's finds it); it is not timed."""

from __future__ import annotations

import os
import subprocess

from .report import PY, metric
from .stats import median, run_timed

RUNS = 21
EXAMPLE = "examples/hosts/virt-server"


def run(b) -> list:
    root = os.path.join(b.repo, EXAMPLE)
    env = b.install.env(XDG_CACHE_HOME=b.fresh_dir("xdg-cache"))
    argvs = {"bare": [PY, "-I", "-c", "pass"],
             "status": [b.install.cli, "--root", root, "status"],
             "plan": [b.install.cli, "--root", root, "plan"]}
    out = subprocess.run(argvs["plan"], env=env, capture_output=True, text=True, check=True)
    if not out.stdout.rstrip().endswith("62 devices: 30 bind, 32 none") or out.stderr:
        raise RuntimeError(f"oneshot: unexpected plan: {out.stdout[-200:]!r} {out.stderr!r}")
    subprocess.run(argvs["status"], env=env, capture_output=True, check=True)
    times = {k: [] for k in argvs}
    for _ in range(RUNS):
        for k, argv in argvs.items():
            times[k].append(run_timed(argv, env))
    bare = median(times["bare"])
    rows = [metric(8, "oneshot_bare_median", f"python3 -I -c pass, median of {RUNS}", bare * 1e3,
                   "ms")]
    for k in ("status", "plan"):
        m = median(times[k])
        rows += [metric(8, f"oneshot_{k}_median", f"{k} on the example host (62 devices), median",
                        m * 1e3, "ms"),
                 metric(8, f"oneshot_{k}_ratio", f"{k} / bare python (medians)", m / bare, "x",
                        ("<=", 1.5))]
    return rows
