"""bench/run: measure every figure of issue 8, print the table, write
bench/results.json."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from . import burst, callout, coldplug, host, index, memory, oneshot, plan, report, vm
from .install import Install

FIGURES = {1: plan, 2: index, 3: callout, 4: coldplug, 5: burst, 6: memory, 8: oneshot}


class Bench:
    """The work directory (tmpfs: trees build 25x faster there) and the
    hosts and install the figures share."""

    def __init__(self, repo: str):
        self.repo = repo
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.mkdtemp(prefix="vfio-flavourd-bench.", dir=base)
        self.alias_text, self.alias_source = host.modules_alias()
        self.alias_file = os.path.join(self.dir, "modules.alias")
        with open(self.alias_file, "w") as f:
            f.write(self.alias_text)
        self.install = Install(repo, self.fresh_dir("install"))
        self._hosts = {}
        self.callout_vf = None

    def fresh_dir(self, name: str) -> str:
        return tempfile.mkdtemp(prefix=name + ".", dir=self.dir)

    def host(self, name: str) -> str:
        """A host tree shared by the figures that only read it."""
        if name not in self._hosts:
            root = self.fresh_dir(name)
            if name == "callout":
                self.callout_vf = host.build_callout_host(root, self.alias_text)
            else:
                host.build(root, self.alias_text)
            self._hosts[name] = root
        return self._hosts[name]

    def kernel(self, name: str):
        """A fresh full host and a simulated kernel over it."""
        return host.build(self.fresh_dir(name), self.alias_text).kernel()

    def burst_kernel(self, vfs: int):
        return host.build_burst_host(self.fresh_dir("burst"), self.alias_text, vfs).kernel()

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for_quiet(limit: float, patience: float) -> None:
    """Wait (up to `patience` seconds) until the 1-minute load is under `limit`."""
    deadline = time.monotonic() + patience
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        print(f"bench: load {os.getloadavg()[0]:.2f} >= {limit}; waiting", file=sys.stderr)
        time.sleep(20)


def main(argv) -> int:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--only", type=int, action="append", metavar="N",
                   help="run only figure N (repeatable; 7 is always read)")
    p.add_argument("--quiet-load", type=float, metavar="LOAD",
                   help="first wait until the 1-minute load average is under LOAD")
    p.add_argument("--patience", type=float, default=600, metavar="S",
                   help="seconds to wait for that (default 600)")
    p.add_argument("--output", default=None, help="default: bench/results.json")
    args = p.parse_args(argv)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    output = args.output or os.path.join(repo, "bench", "results.json")
    if args.quiet_load:
        wait_for_quiet(args.quiet_load, args.patience)

    info = {**report.git_commit(repo), "machine": report.machine(),
            "load_average_start": os.getloadavg()}
    b = Bench(repo)
    metrics = []
    try:
        info["modules_alias_source"] = b.alias_source
        for n, mod in FIGURES.items():
            if args.only and n not in args.only:
                continue
            t0 = time.monotonic()
            print(f"bench: figure {n} ({mod.__name__.split('.')[-1]})...", file=sys.stderr)
            metrics += mod.run(b)
            print(f"bench: figure {n} took {time.monotonic() - t0:.1f} s", file=sys.stderr)
        vm_metrics, vm_info = vm.run(b)
        metrics += vm_metrics
        info.update(vm_info)
    finally:
        b.close()
    info["load_average_end"] = os.getloadavg()
    print(report.table(metrics))
    m = info["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}; "
          f"load {info['load_average_start'][0]:.2f} -> {info['load_average_end'][0]:.2f}; "
          f"commit {info['commit'][:12]}{' (dirty)' if info['dirty'] else ''}")
    print(f"modules.alias: {b.alias_source}")
    vm_info = info.get("vm_results") or {}
    if vm_info.get("finished_at"):
        print(f"figure 7: read from {vm_info['path']} (QEMU/TCG guest, run finished "
              f"{vm_info['finished_at']}, commit {(vm_info.get('commit') or '?')[:12]})")
    else:
        print(f"figure 7: {vm_info.get('note')}")
    report.write(output, metrics, info)
    print(f"wrote {output}")
    return 0 if all(x["pass"] is not False for x in metrics) else 1
