"""Figure 7: real-kernel figures from the QEMU tier's last complete
benchmark run (tests/vm/README.md, "Benchmark").  They are read, not
measured here: the guest takes minutes and root (`make vm-test`)."""

from __future__ import annotations

import json
import os

from .report import metric

ENV = "VFIO_FLAVOURD_VM_RESULTS"


def results_path() -> str:
    """Where tests/vm/run puts it: $VFIO_FLAVOURD_VM_RESULTS, by default
    $VFIO_FLAVOURD_VM_CACHE/results/last-bench.json."""
    cache = os.environ.get("VFIO_FLAVOURD_VM_CACHE", "/var/cache/vfio-flavourd-vm")
    return os.environ.get(ENV) or os.path.join(cache, "results", "last-bench.json")


# (section, key, what, unit, target); a key under "raw" is the section's
# sub-dictionary of that name.
KNOWN = (
    ("hotplug_kernel_events", "median_request_to_bound_s",
     "real kernel: device_add to bound (daemon, kernel events)", "s", None),
    ("hotplug_kernel_events", "raw/median_request_to_bound_s",
     "real kernel: device_add to bound (raw sysfs sequence, no daemon)", "s", None),
    ("hotplug_kernel_events", "median_sysfs_to_bound_s",
     "real kernel: add uevent to bound (daemon, kernel events)", "s", None),
    ("hotplug_kernel_events", "raw/median_sysfs_to_bound_s",
     "real kernel: add uevent to bound (raw sysfs sequence)", "s", None),
    ("hotplug_kernel_events", "ratio_to_raw",
     "real kernel: hotplug, daemon / raw sequence (medians)", "x", ("<=", 1.2)),
    # The raw sequence plus what the safety rules ask before an unbind
    # (the device's lock, the end of the kernel's own probe, the guards,
    # the writes in the writer process), by this project's own code.
    ("hotplug_kernel_events", "floor/median_request_to_bound_s",
     "real kernel: device_add to bound (safety floor, no daemon)", "s", None),
    ("hotplug_kernel_events", "floor_ratio_to_raw",
     "real kernel: hotplug, safety floor / raw sequence (medians)", "x", None),
    ("hotplug_kernel_events", "ratio_to_floor",
     "real kernel: hotplug, daemon / safety floor (medians)", "x", None),
    # By the kernel's clock (the function tracer): from the kernel's own
    # probe binding the host driver to the unbind entering the kernel.
    # Below 0: written during that probe, and waited for it.
    ("hotplug_kernel_events", "median_kernel_first_bound_to_unbind_s",
     "real kernel: host driver bound to unbind entered (daemon, kernel clock)", "s", None),
    ("hotplug_kernel_events", "raw/median_kernel_first_bound_to_unbind_s",
     "real kernel: host driver bound to unbind entered (raw sequence, kernel clock)", "s",
     None),
    ("hotplug_kernel_events", "floor/median_kernel_first_bound_to_unbind_s",
     "real kernel: host driver bound to unbind entered (safety floor, kernel clock)", "s",
     None),
    ("hotplug_udev_events", "median_request_to_bound_s",
     "real kernel: device_add to bound (udevd + rule + callout + daemon)", "s", None),
    ("apply_vs_driverctl", "median_apply_s", "real kernel: vfio-flavourd apply, median", "s",
     None),
    ("apply_vs_driverctl", "median_driverctl_s",
     "real kernel: driverctl --nosave set-override, median", "s", None),
    ("apply_vs_driverctl", "ratio_apply_to_driverctl", "real kernel: apply / driverctl (medians)",
     "x", ("<", 1.0)),
    ("apply_vs_driverctl", "median_release_s", "real kernel: vfio-flavourd release, median",
     "s", None),
    ("apply_vs_driverctl", "median_driverctl_unset_s",
     "real kernel: driverctl --nosave unset-override, median", "s", None),
    ("apply_vs_driverctl", "ratio_release_to_driverctl_unset",
     "real kernel: release / unset-override (medians)", "x", ("<", 1.0)),
    ("apply_vs_driverctl", "median_python3_c_pass_s", "real kernel: python3 -c pass (scale)", "s",
     None),
)


# Figure 9 (issue 12): the udev path's cost per device, udevd in the guest:
# CPU time of udevd and its workers (the target), and wall time.
# (key, what, unit, target)
UDEV_PATH = (
    ("native_extra_ms_per_device",
     "real kernel: udev path per device, generated rules over no rule", "ms", ("<", 1.0)),
    ("callout_extra_ms_per_device",
     "real kernel: udev path per device, callout rule over no rule", "ms", None),
    ("callout_over_native_extra", "real kernel: udev path, callout / generated rules", "x",
     (">", 20)),
    ("wall_native_extra_ms_per_device",
     "real kernel: udev path per device, generated rules over no rule (wall)", "ms", None),
    ("wall_callout_extra_ms_per_device",
     "real kernel: udev path per device, callout rule over no rule (wall)", "ms", None),
)


def _lookup(data: dict, section: str, key: str):
    d = data.get(section) or {}
    for part in key.split("/")[:-1]:
        d = d.get(part) or {}
    return d.get(key.split("/")[-1])


def run(b) -> tuple:
    """(metrics, info for results.json)."""
    path = results_path()
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        why = f"not measured in this run ({path}: {getattr(e, 'strerror', None) or e}; " \
              f"make vm-test writes it)"
        return [metric(7, "vm", "real kernel (QEMU tier)", None, "", note=why)], \
            {"vm_results": {"path": path, "note": why}}
    metrics = [metric(7, f"vm_{section}_{key.replace('/', '_')}", what,
                      _lookup(data, section, key), unit, target)
               for section, key, what, unit, target in KNOWN
               if _lookup(data, section, key) is not None]
    udev = data.get("udev_path", {})
    metrics += [metric(9, f"vm_udev_path_{key}", what, udev[key], unit, target)
                for key, what, unit, target in UDEV_PATH if key in udev]
    host = data.get("host", {})
    info = {"path": path, "complete": data.get("complete"), "finished_at": host.get("finished_at"),
            "commit": host.get("commit"), "dirty": host.get("dirty"),
            "load_average": [host.get("loadavg_before"), host.get("loadavg_after")],
            "guest": data.get("guest"), "note": "read from the QEMU tier's last run, TCG guest"}
    return metrics, {"vm_results": info}
