"""Figure 5: 1,000 VFs appear at once under a running daemon that publishes
the fleet files (Prometheus, NFD, CDI), as a fleet host runs it."""

from __future__ import annotations

import os
import time

from vfio_flavourd.daemon import wait_idle
from vfio_flavourd.publish import Targets
from vfio_flavourd.publish_daemon import Publisher

from .report import metric
from .simd import quiet_logger, start_daemon, stop_daemon

VFS = 1000
PF = "0000:01:00.0"


def publisher(b) -> Publisher:
    out = b.fresh_dir("publish")
    return Publisher(Targets(prometheus_textfile=os.path.join(out, "vfio-flavourd.prom"),
                             nfd_features=os.path.join(out, "vfio-flavourd"),
                             cdi_spec=os.path.join(out, "vfio-flavourd.json")),
                     quiet_logger())


def run(b, publish: bool = True) -> list:
    kernel = b.burst_kernel(VFS)
    pub = publisher(b) if publish else None
    d = start_daemon(kernel, pub)
    try:
        writes0 = pub.writes if pub else 0
        t0 = time.perf_counter()
        kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", str(VFS))
        t_enabled = time.perf_counter() - t0
        if not wait_idle(d, 600):
            raise RuntimeError("burst: the daemon did not go idle within 600 s")
        wall = time.perf_counter() - t0
        writes = (pub.writes - writes0) if pub else 0
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
        # Rounds of writing the three files while the burst ran: at most one a
        # second (publish_daemon.py), plus the one the first change starts.
        metric(5, "burst_publish_writes", "burst: fleet files written (rounds of 3)", writes,
               "rounds", ("<", int(wall) + 3)),
    ]
