"""Figures as records (value, unit, target, pass), the machine they were
measured on, the table and bench/results.json."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time

PY = "/usr/bin/python3"     # what the package's scripts run under


def metric(figure: int, key: str, what: str, value, unit: str, target=None, note=None) -> dict:
    """`target`: ("<", limit), ("<=", limit), (">", limit), ("==", value), or
    None for a figure reported without one."""
    ok = None
    if target is not None and value is not None:
        op, limit = target
        ok = {"<": value < limit, "<=": value <= limit, ">": value > limit,
              "==": value == limit}[op]
    m = {"figure": figure, "key": key, "what": what, "value": value, "unit": unit,
         "target": None if target is None else f"{target[0]} {target[1]}", "pass": ok}
    if note:
        m["note"] = note
    return m


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    sys_py = subprocess.run([PY, "-c", "import platform; print(platform.python_version())"],
                            capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": sys_py, "python_in_process": platform.python_version(),
            "memory_mb": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20}


def git_commit(repo: str) -> dict:
    def git(*args):
        return subprocess.run(["git", "-C", repo, *args], capture_output=True,
                              text=True).stdout.strip()
    dirty = git("status", "--porcelain", "--", "vfio_flavourd", "bench", ":!bench/results.json")
    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(dirty)}


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(metrics) -> str:
    rows = [("fig", "what", "value", "unit", "target", "")]
    for m in metrics:
        verdict = {True: "PASS", False: "FAIL", None: ""}[m["pass"]]
        rows.append((str(m["figure"]), m["what"], fmt(m["value"]), m["unit"],
                     m["target"] or "", verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [c.rjust(w) if i == 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


def write(path: str, metrics, info: dict) -> None:
    doc = dict(info)
    doc["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    doc["metrics"] = metrics
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
