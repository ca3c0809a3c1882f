"""Figure 7: real-kernel figures from the QEMU tier's last benchmark run,
read from the JSON file $VFIO_FLAVOURD_VM_RESULTS names.  They are not
measured here: the guest takes minutes and root."""

from __future__ import annotations

import json
import os
import time

from .report import metric

ENV = "VFIO_FLAVOURD_VM_RESULTS"
# Keys looked for in that file: (key, what, unit).
KNOWN = (
    ("hotplug_to_bound_seconds", "real kernel: QMP device_add to bound", "s"),
    ("apply_vs_driverctl_ratio", "real kernel: apply / driverctl set-override", "x"),
)


def run(b) -> tuple:
    """(metrics, info for results.json)."""
    path = os.environ.get(ENV)
    if not path or not os.path.isfile(path):
        why = f"not measured in this run (set {ENV} to the real-kernel tier's results file)"
        return [metric(7, "vm", "real kernel (QEMU tier)", None, "", note=why)], \
            {"vm_results": None, "vm_note": why}
    with open(path) as f:
        data = json.load(f)
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(os.path.getmtime(path)))
    metrics = [metric(7, key, what, data[key], unit) for key, what, unit in KNOWN if key in data]
    if not metrics:
        metrics = [metric(7, "vm", "real kernel (QEMU tier)", None, "",
                          note=f"{path}: none of {', '.join(k for k, _, _ in KNOWN)}")]
    return metrics, {"vm_results": {"path": path, "modified": when, "data": data}}
