"""The real-kernel tier's reading of the function tracer (figure 7's kernel
clock): lines as the 6.12 guest's tracer wrote them, parsed here on the
host, where the tier's own helpers cannot run."""

from __future__ import annotations

import importlib.util
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "vm", "guest", "vmguest.py")


@pytest.fixture(scope="module")
def vmguest():
    spec = importlib.util.spec_from_file_location("vmguest_for_host_test", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# One daemon run and one raw run, as the tracer printed them (task names
# with dashes and slashes; the irq-flags column).  The raw unbind enters
# while the kernel's own probe still runs.
DAEMON = """\
# tracer: function
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
    kworker/u8:0-57      [001] ..... 120.0065: pci_bus_add_device <-pci_bus_add_devices
    kworker/u8:0-57      [001] ..... 120.0066: really_probe <-__driver_probe_device
    kworker/u8:0-57      [001] ..... 120.0162: driver_bound <-really_probe
    vfio-flavour-812     [000] ..... 120.0327: unbind_store <-kernfs_fop_write_iter
    vfio-flavour-812     [000] ..... 120.0418: drivers_probe_store <-kernfs_fop_write_iter
    vfio-flavour-812     [000] ..... 120.0420: really_probe <-__driver_probe_device
    vfio-flavour-812     [000] ..... 120.0460: driver_bound <-really_probe
    kworker/u8:0-57      [001] ..... 120.0836: driver_bound <-really_probe
"""
RAW = """\
    kworker/u8:0-57      [001] ..... 200.0066: pci_bus_add_device <-pci_bus_add_devices
    kworker/u8:0-57      [001] ..... 200.0069: really_probe <-__driver_probe_device
          python-901     [000] ..... 200.0163: unbind_store <-kernfs_fop_write_iter
    kworker/u8:0-57      [001] ..... 200.0205: driver_bound <-really_probe
          python-901     [000] ..... 200.0322: drivers_probe_store <-kernfs_fop_write_iter
          python-901     [000] ..... 200.0346: driver_bound <-really_probe
"""


def test_parse_reads_time_function_and_task(vmguest):
    calls = vmguest.KernelTrace.parse(DAEMON)
    assert [fn for _, fn, _ in calls] == [
        "pci_bus_add_device", "really_probe", "driver_bound", "unbind_store",
        "drivers_probe_store", "really_probe", "driver_bound", "driver_bound"]
    assert calls[0] == (120.0065, "pci_bus_add_device", "kworker/u8:0")
    assert calls[3][2] == "vfio-flavour"


def test_steps_of_a_daemon_run_stop_at_the_variants_bind(vmguest):
    calls = vmguest.KernelTrace.parse(DAEMON)
    # The add uevent reached the test at 120.0050; the variant's bind
    # uevent at 120.0470: the driver_bound after it (the unplug's doing,
    # or anything later) is not this hotplug's.
    steps = vmguest.kernel_steps(calls, 120.0050, 120.0470)
    assert steps["kernel_probe_start"] == pytest.approx(0.0015)
    assert steps["kernel_first_bound"] == pytest.approx(0.0112)
    assert steps["kernel_unbind_entered"] == pytest.approx(0.0277)
    assert steps["kernel_bound"] == pytest.approx(0.0410)
    assert steps["kernel_first_bound_to_unbind"] == pytest.approx(0.0165)


def test_a_raw_unbind_written_during_the_probe_comes_out_negative(vmguest):
    steps = vmguest.kernel_steps(vmguest.KernelTrace.parse(RAW), 200.0050, 200.0350)
    assert steps["kernel_first_bound_to_unbind"] == pytest.approx(-0.0042)
    assert steps["kernel_bound"] == pytest.approx(0.0296)


def test_no_unbind_when_the_override_came_before_the_probe(vmguest):
    text = """\
    kworker/u8:0-57      [001] ..... 300.0066: pci_bus_add_device <-pci_bus_add_devices
    kworker/u8:0-57      [001] ..... 300.0069: really_probe <-__driver_probe_device
    kworker/u8:0-57      [001] ..... 300.0110: driver_bound <-really_probe
"""
    steps = vmguest.kernel_steps(vmguest.KernelTrace.parse(text), 300.0050, 300.0120)
    assert steps["kernel_unbind_entered"] is None
    assert steps["kernel_first_bound_to_unbind"] is None
    assert steps["kernel_first_bound"] == steps["kernel_bound"]


def test_an_empty_or_foreign_trace_gives_no_steps(vmguest):
    assert vmguest.kernel_steps([], 1.0, 2.0) == {}
    assert vmguest.kernel_steps(vmguest.KernelTrace.parse("# tracer: nop\n"), 1.0, 2.0) == {}
    # An unbind from before this device's probe (another device's) is not its.
    text = """\
          python-901     [000] ..... 400.0010: unbind_store <-kernfs_fop_write_iter
    kworker/u8:0-57      [001] ..... 400.0066: pci_bus_add_device <-pci_bus_add_devices
    kworker/u8:0-57      [001] ..... 400.0110: driver_bound <-really_probe
"""
    steps = vmguest.kernel_steps(vmguest.KernelTrace.parse(text), 400.0050, 400.0120)
    assert steps["kernel_unbind_entered"] is None


def _tracefs(tmp_path, vmguest, monkeypatch, tracer, filt):
    for name, value in (("current_tracer", tracer), ("set_ftrace_filter", filt),
                        ("tracing_on", "1\n")):
        (tmp_path / name).write_text(value)
    monkeypatch.setattr(vmguest.KernelTrace, "TRACEFS", str(tmp_path))
    return object.__new__(vmguest.KernelTrace)      # __init__ refuses outside the guest


def test_closing_the_trace_leaves_the_call_sites_as_they_are(tmp_path, vmguest, monkeypatch):
    # Every change of the tracer patches code with int3, which oopsed the
    # 6.12 guest under multi-threaded TCG once: close() only stops recording.
    names = "\n".join(vmguest.KernelTrace.FUNCTIONS) + "\n"
    trace = _tracefs(tmp_path, vmguest, monkeypatch, "function\n", names)
    trace.close()
    assert (tmp_path / "tracing_on").read_text() == "0"
    assert (tmp_path / "current_tracer").read_text() == "function\n"
    assert (tmp_path / "set_ftrace_filter").read_text() == names
    assert trace._installed()


@pytest.mark.parametrize("tracer, filt", [("nop\n", ""), ("function\n", "really_probe\n"),
                                          ("function_graph\n", "really_probe\n")])
def test_a_tracer_set_otherwise_is_set_again(tmp_path, vmguest, monkeypatch, tracer, filt):
    trace = _tracefs(tmp_path, vmguest, monkeypatch, tracer, filt)
    assert not trace._installed()
