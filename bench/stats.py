"""Timing helpers."""

from __future__ import annotations

import statistics
import subprocess
import time


def median(xs) -> float:
    return statistics.median(xs)


def p95(xs) -> float:
    """Nearest-rank 95th percentile."""
    s = sorted(xs)
    return s[max(0, -(-95 * len(s) // 100) - 1)]


def timed(fn, repeat: int) -> list:
    """Seconds per call of fn(), `repeat` times."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run_timed(argv, env, stdout=subprocess.DEVNULL) -> float:
    """Wall seconds of one process, start to exit; raises when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=stdout, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]}... exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return dt
