"""The hotplug benchmark's harness (tests/vm/guest/vmtest_bench.py), on the
host with the guest's sysfs and QMP calls stood in for: the CI run of
f935f59 failed in it, not in vfio-flavourd.  A raw run's unbind met the
kernel's own probe rejecting its match (ENODEV), and the run left its
device in the hotplug port, which then failed every later test that
hot-adds there."""

from __future__ import annotations

import errno
import os

import pytest


@pytest.fixture
def bench(guest_module):
    return guest_module("vmtest_bench")


def stand_in_sysfs(bench, monkeypatch, unbind_error):
    calls = []
    g = bench.g

    def unbind(addr):
        calls.append(("unbind", addr))
        if unbind_error:
            raise OSError(unbind_error, os.strerror(unbind_error))

    monkeypatch.setattr(g, "set_override", lambda a, n: calls.append(("override", a, n)))
    monkeypatch.setattr(g, "unbind", unbind)
    monkeypatch.setattr(g, "drivers_probe", lambda a: calls.append(("drivers_probe", a)))
    monkeypatch.setattr(g, "driver", lambda a: "virtio_vfio_pci")
    return calls


@pytest.mark.parametrize("err", [errno.ENODEV, errno.ENOENT])
def test_a_raw_unbind_that_finds_the_device_off_its_driver_goes_on(bench, monkeypatch, err):
    calls = stand_in_sysfs(bench, monkeypatch, err)
    assert bench.raw_bind("0000:04:00.0") == "virtio_vfio_pci"
    assert calls == [("override", "0000:04:00.0", "virtio_vfio_pci"),
                     ("unbind", "0000:04:00.0"), ("drivers_probe", "0000:04:00.0")]


def test_any_other_unbind_error_still_fails_the_run(bench, monkeypatch):
    calls = stand_in_sysfs(bench, monkeypatch, errno.EIO)
    with pytest.raises(OSError) as e:
        bench.raw_bind("0000:04:00.0")
    assert e.value.errno == errno.EIO
    assert ("drivers_probe", "0000:04:00.0") not in calls


def stand_in_port(bench, monkeypatch, unplug_error=None):
    g = bench.g
    unplugged = []

    def unplug(qdev_id):
        unplugged.append(qdev_id)
        if unplug_error:
            raise unplug_error

    monkeypatch.setattr(g, "port_address", lambda port: "0000:00:13.0")
    monkeypatch.setattr(bench, "unplug", unplug)
    monkeypatch.setattr(g, "device_behind", lambda port: None if unplugged else "0000:04:00.0")
    return unplugged


def test_a_failed_hotplug_run_takes_its_device_out_again(bench, monkeypatch):
    unplugged = stand_in_port(bench, monkeypatch)

    def fails(*a):
        raise OSError(errno.ENODEV, "No such device")
    monkeypatch.setattr(bench, "_hotplug_once", fails)
    with pytest.raises(OSError) as e:
        bench.hotplug_once("benchr7", bind=bench.raw_bind)
    assert e.value.errno == errno.ENODEV      # the run's own error, not the cleanup's
    assert unplugged == ["benchr7"]


def test_a_cleanup_that_fails_too_is_told_with_the_error(bench, monkeypatch):
    stand_in_port(bench, monkeypatch, unplug_error=TimeoutError("no DEVICE_DELETED"))

    def fails(*a):
        raise AssertionError("benchr7 not on virtio_vfio_pci")
    monkeypatch.setattr(bench, "_hotplug_once", fails)
    with pytest.raises(AssertionError) as e:
        bench.hotplug_once("benchr7", bind=bench.raw_bind)
    assert "benchr7 not on virtio_vfio_pci" in str(e.value)
    assert any("unplugging benchr7 after that failed as well" in n
               and "no DEVICE_DELETED" in n for n in e.value.__notes__)


def test_a_run_that_succeeds_is_not_unplugged_twice(bench, monkeypatch):
    unplugged = stand_in_port(bench, monkeypatch)
    monkeypatch.setattr(bench, "_hotplug_once", lambda *a: {"request_to_bound": 0.07})
    assert bench.hotplug_once("benchk3") == {"request_to_bound": 0.07}
    assert unplugged == []
