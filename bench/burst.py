"""Figure 5: 1,000 VFs appear at once under a running daemon."""

from __future__ import annotations

import time

from vfio_flavourd.daemon import wait_idle

from .report import metric
from .simd import start_daemon, stop_daemon

VFS = 1000
PF = "0000:01:00.0"


def run(b) -> list:
    kernel = b.burst_kernel(VFS)
    d = start_daemon(kernel)
    try:
        t0 = time.perf_counter()
        kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", str(VFS))
        t_enabled = time.perf_counter() - t0
        if not wait_idle(d, 600):
            raise RuntimeError("burst: the daemon did not go idle within 600 s")
        wall = time.perf_counter() - t0
    finally:
        stop_daemon(d)
    bound = sum(1 for a, dev in kernel.devices.items()
                if dev.physfn == PF and dev.driver == "mlx5_vfio_pci")
    return [
        metric(5, "burst_enable", f"burst: sriov_numvfs={VFS} write (kernel adds the VFs)",
               t_enabled, "s"),
        metric(5, "burst_to_all_bound", f"burst: write to all {VFS} VFs bound", wall, "s"),
        metric(5, "burst_per_vf", "burst: per VF", wall / VFS * 1e3, "ms"),
        metric(5, "burst_events_seen", "burst: uevents the daemon read", d.events_seen, "events"),
        metric(5, "burst_lost", "burst: VFs not bound (events lost)", VFS - bound, "VFs",
               ("==", 0)),
    ]
