"""Figure 6: the daemon's memory after coldplug of the whole host.

Measured in a child process (`python -m bench.memory ROOT ALIAS_FILE`): it
builds the host and loads the simulated kernel, reads its RSS, then starts
the daemon, lets it coldplug every device, and reads RSS and peak RSS again.
The difference is the daemon's share: its imports, policy, index, state and
whatever it keeps per device."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

from .report import metric


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def child(root: str, alias_file: str) -> dict:
    from . import host
    with open(alias_file) as f:
        b = host.build(root, f.read())
    kernel = b.kernel()
    gc.collect()
    before = {"rss": status_kb("VmRSS"), "hwm": status_kb("VmHWM")}
    from .simd import start_daemon, stop_daemon   # the daemon's imports count as its own
    d = start_daemon(kernel)
    gc.collect()
    after = {"rss": status_kb("VmRSS"), "hwm": status_kb("VmHWM"), "bound": d.counts["bound"]}
    stop_daemon(d)
    return {"before": before, "after": after}


def run(b) -> list:
    root = b.fresh_dir("memory")
    out = subprocess.run([sys.executable, "-m", "bench.memory", root, b.alias_file],
                         cwd=b.repo, capture_output=True, text=True, check=True,
                         env={**os.environ, **b.install.env()}).stdout
    r = json.loads(out)
    mb = 1 / 1024
    share = (r["after"]["rss"] - r["before"]["rss"]) * mb
    return [
        metric(6, "memory_rss_model", "RSS with the kernel model loaded, before the daemon",
               r["before"]["rss"] * mb, "MB"),
        metric(6, "memory_rss_after", f"RSS after coldplug ({r['after']['bound']} bound)",
               r["after"]["rss"] * mb, "MB"),
        metric(6, "memory_hwm_after", "peak RSS (VmHWM) after coldplug",
               r["after"]["hwm"] * mb, "MB"),
        metric(6, "memory_daemon_share", "daemon's share (RSS after - before)", share, "MB",
               ("<", 60)),
    ]


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], sys.argv[2])))
