"""Figure 7 as the real-kernel tier's summary prints it and bench/ records
it: the daemon, the raw sysfs sequence and the safety floor (the raw
sequence plus the device's lock, the end of the kernel's own probe, the
guards and the writer process), read on the host from a bench.json of the
shape the guest writes."""

from __future__ import annotations

import os

HERE = os.path.dirname(__file__)


def _section(floor=True):
    h = {"median_request_to_bound_s": 0.1152, "request_to_bound_s": [0.11, 0.12],
         "median_kernel_first_bound_to_unbind_s": 0.0234, "ratio_to_raw": 1.07,
         "raw": {"median_request_to_bound_s": 0.1078,
                 "median_kernel_first_bound_to_unbind_s": -0.0021}}
    if floor:
        h["floor"] = {"median_request_to_bound_s": 0.1271,
                      "median_kernel_first_bound_to_unbind_s": 0.0188}
        h["floor_ratio_to_raw"], h["ratio_to_floor"] = 1.18, 0.91
    return {"hotplug_kernel_events": h}


def test_the_summary_gives_the_floor_beside_the_raw_sequence(vm_runner):
    rows = vm_runner.bench_rows(_section())
    text = "\n".join(rows)
    assert "daemon / raw 1.07 (target <= 1.2)" in text
    (floor,) = [r for r in rows if "safety floor" in r]
    assert "median 0.127 s" in floor
    assert "floor / raw 1.18" in floor and "daemon / floor 0.91" in floor
    (clock,) = [r for r in rows if "kernel clock" in r]
    assert clock.endswith("daemon 23.4 ms, raw -2.1 ms, floor 18.8 ms"), clock


def test_a_run_from_before_the_floor_is_summed_up_without_it(vm_runner):
    rows = vm_runner.bench_rows(_section(floor=False))
    assert not [r for r in rows if "floor" in r], rows
    (clock,) = [r for r in rows if "kernel clock" in r]
    assert clock.endswith("daemon 23.4 ms, raw -2.1 ms"), clock


def test_bench_records_the_floor_and_both_ratios(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(HERE, ".."))
    from bench import vm
    data = _section()
    got = {key: vm._lookup(data, section, key) for section, key, *_ in vm.KNOWN
           if section == "hotplug_kernel_events" and "floor" in key}
    assert got == {"floor/median_request_to_bound_s": 0.1271, "floor_ratio_to_raw": 1.18,
                   "ratio_to_floor": 0.91,
                   "floor/median_kernel_first_bound_to_unbind_s": 0.0188}
