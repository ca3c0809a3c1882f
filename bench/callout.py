"""Figure 3: the udev callout as udev runs it (/usr/bin/python3 -I, the
installed copy), on an unbound VF whose variant module is loaded, with a
warm cache; against a bare `python3 -I -c pass` in the same run."""

from __future__ import annotations

import subprocess

from .report import PY, metric
from .stats import median, p95, run_timed

RUNS = 50


def run(b) -> list:
    root = b.host("callout")
    env = b.install.env(VFIO_FLAVOURD_ROOT=root)
    argv = [b.install.callout, b.callout_vf]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    if "VFIO_FLAVOURD_DRIVER=mlx5_vfio_pci" not in first.stdout or first.stderr:
        raise RuntimeError(f"callout: unexpected answer: {first.stdout!r} {first.stderr!r}")
    bare_argv = [PY, "-I", "-c", "pass"]
    callout, bare = [], []
    for _ in range(RUNS):        # interleaved, so both see the same load
        callout.append(run_timed(argv, env))
        bare.append(run_timed(bare_argv, env))
    ratio = median(callout) / median(bare)
    return [
        metric(3, "callout_median", f"udev callout, median of {RUNS}", median(callout) * 1e3,
               "ms", ("<", 50)),
        metric(3, "callout_p95", f"udev callout, p95 of {RUNS}", p95(callout) * 1e3, "ms"),
        metric(3, "bare_python_median", "python3 -I -c pass, median", median(bare) * 1e3, "ms"),
        metric(3, "callout_ratio", "callout / bare python (medians)", ratio, "x", ("<", 2.5)),
    ]
