"""Binder.await_probe: the guards of a device just added are asked only once
the kernel's own probe of it has ended, and on what that probe left.  The
daemon reads and decides on the device meanwhile (daemon._probe_over)."""

from __future__ import annotations

import pytest

from vfio_flavourd import actions, guards
from vfio_flavourd.errors import ProbeRunning

from simhost import VIRTIO, driver_of, override_of
from test_binder import VIRTIO_POLICY, bound_at_the_override, host_ctx


def _just_added(kernel):
    """VIRTIO as the kernel has just added it: no driver yet."""
    kernel.sysfs.write("sys/bus/pci/drivers/virtio-pci/unbind", VIRTIO)


def _asked(monkeypatch, refuse=False) -> list:
    """Guards that record the driver they were asked about."""
    asked = []

    def refusals(sysfs, dev, top=None):
        asked.append(dev.driver)
        return ["network interface eth1 is up and has routes"] if refuse and dev.driver else []
    monkeypatch.setattr(guards, "refusals", refusals)
    return asked


def _probe_ending(kernel, answers):
    """An await_probe whose first call ends the kernel's probe (virtio-pci
    bound) and which answers `answers` in turn; returns (await_probe, calls)."""
    calls = []

    def await_probe(address):
        calls.append(address)
        if len(calls) == 1 and driver_of(kernel, address) is None:
            kernel.sysfs.write("sys/bus/pci/drivers/virtio-pci/bind", address)
        return answers[len(calls) - 1]
    return await_probe, calls


def test_the_guards_see_the_driver_the_kernels_probe_bound_meanwhile(tmp_path, monkeypatch):
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    _just_added(kernel)
    asked = _asked(monkeypatch)
    await_probe, calls = _probe_ending(kernel, [True])
    _, o = actions.decide_and_carry_out(ctx, ctx.binder(0, await_probe=await_probe), VIRTIO)
    assert calls == [VIRTIO]
    assert asked == ["virtio-pci"]      # not the driverless read made before the wait
    assert (o.result, o.driver, o.previous_driver) == ("bound", "virtio_vfio_pci", "virtio-pci")
    assert "unbind from virtio-pci: write 0000:05:00.0 to sys/bus/pci/drivers/virtio-pci/unbind" \
        in o.steps


def test_after_the_probe_only_the_driver_and_its_module_are_read_again(tmp_path, monkeypatch):
    # driver_override was read with the rest, and no probe writes it.
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    _just_added(kernel)
    seen = []

    def refusals(sysfs, dev, top=None):
        seen.append((dev.driver, dev.driver_module, dev.driver_override))
        return []
    monkeypatch.setattr(guards, "refusals", refusals)
    await_probe, calls = _probe_ending(kernel, [True])
    reads = []
    real_read = ctx.sysfs.read

    def read(rel):
        if calls:
            reads.append(rel)
        return real_read(rel)
    monkeypatch.setattr(ctx.sysfs, "read", read)
    _, o = actions.decide_and_carry_out(ctx, ctx.binder(0, await_probe=await_probe), VIRTIO)
    assert seen == [("virtio-pci", "virtio_pci", None)]
    assert not [r for r in reads if r.endswith("/driver_override")], reads
    assert o.result == "bound", o.steps


def test_a_probe_that_has_not_ended_leaves_everything_as_it_was(tmp_path, monkeypatch):
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    asked = _asked(monkeypatch)
    with pytest.raises(ProbeRunning):
        actions.decide_and_carry_out(ctx, ctx.binder(0, await_probe=lambda a: False), VIRTIO)
    assert asked == []
    assert driver_of(kernel, VIRTIO) == "virtio-pci"
    assert override_of(kernel, VIRTIO) == "(null)"
    assert ctx.state.get(VIRTIO) is None
    assert actions.lock_is_free(ctx.root, VIRTIO)


@pytest.mark.parametrize("over", [True, False])
def test_a_driver_turning_up_after_the_guards_is_waited_for_before_they_are_asked_again(
        tmp_path, monkeypatch, over):
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY.replace("flavour: vfio", "flavour: vfio, "
                                                           "fallback: none"))
    _just_added(kernel)
    bound_at_the_override(kernel, monkeypatch)
    asked = _asked(monkeypatch)
    answers = [True, over]
    calls = []

    def await_probe(address):
        calls.append(address)
        return answers[len(calls) - 1]
    _, o = actions.decide_and_carry_out(ctx, ctx.binder(0, await_probe=await_probe), VIRTIO)
    assert calls == [VIRTIO, VIRTIO]
    if over:
        assert asked == [None, "virtio-pci"]
        assert (o.result, o.driver) == ("bound", "virtio_vfio_pci"), o.steps
    else:
        assert asked == [None]          # never asked while the probe may still run
        assert o.result == "failed" and "has not ended" in o.message, o.message
        assert driver_of(kernel, VIRTIO) == "virtio-pci"
        assert override_of(kernel, VIRTIO) == "(null)"


def test_a_forced_bind_does_not_wait(tmp_path, monkeypatch):
    # No guards, nothing to wait for: its unbind waits in the kernel.
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY.replace("flavour: vfio",
                                                           "flavour: vfio, force: true"))
    calls = []
    _, o = actions.decide_and_carry_out(
        ctx, ctx.binder(0, await_probe=lambda a: calls.append(a) or False), VIRTIO)
    assert calls == []
    assert (o.result, o.driver) == ("bound", "virtio_vfio_pci"), o.steps


def test_the_device_directory_is_resolved_before_the_wait_and_given_to_the_guards(
        tmp_path, monkeypatch):
    # What the kernel's probe does not change is asked while it may still
    # run, off the way from its end to the unbind.
    import os
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    _just_added(kernel)
    resolved, tops = [], []
    real = guards.device_dir

    def device_dir(sysfs, address):
        resolved.append(address)
        return real(sysfs, address)

    def refusals(sysfs, dev, top=None):
        tops.append(top)
        return []
    monkeypatch.setattr(guards, "device_dir", device_dir)
    monkeypatch.setattr(guards, "refusals", refusals)
    ending, calls = _probe_ending(kernel, [True])

    def await_probe(address):
        assert resolved == [address], "the directory was not resolved before the wait"
        return ending(address)
    _, o = actions.decide_and_carry_out(ctx, ctx.binder(0, await_probe=await_probe), VIRTIO)
    assert calls == [VIRTIO] and o.result == "bound", o
    want = os.path.realpath(ctx.root.fspath(f"sys/bus/pci/devices/{VIRTIO}"))
    assert tops == [want] and resolved == [VIRTIO], (tops, resolved)


def _rebind_ready(kernel, ctx):
    """VIRTIO bound once (the context learns virtio_vfio_pci's driver),
    released, and just added again."""
    assert actions.decide_and_carry_out(ctx, ctx.binder(0), VIRTIO)[1].result == "bound"
    assert ctx.binder(0).release(actions.fresh(ctx.sysfs, VIRTIO)).result == "released"
    _just_added(kernel)


def test_the_modules_driver_is_looked_at_before_the_wait_not_after(tmp_path, monkeypatch):
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    _asked(monkeypatch)
    _rebind_ready(kernel, ctx)
    looks, ended = [], []
    link = kernel.sysfs.link

    def watched(rel):
        if rel == "sys/bus/pci/drivers/virtio_vfio_pci/module":
            looks.append(bool(ended))
        return link(rel)
    kernel.sysfs.link = watched
    ending, _ = _probe_ending(kernel, [True])
    _, o = actions.decide_and_carry_out(
        ctx, ctx.binder(0, await_probe=lambda a: (ended.append(a), ending(a))[1]), VIRTIO)
    assert (o.result, o.driver) == ("bound", "virtio_vfio_pci"), o
    assert looks == [False], looks      # once, while the kernel probed
    assert "module virtio_vfio_pci registers driver virtio_vfio_pci" in o.steps


def test_a_module_unloaded_during_the_wait_strands_nothing(tmp_path, monkeypatch):
    # The answer looked at before the wait is taken once: a module removed
    # meanwhile fails the probe by its driver, which the binder sees, and
    # the device ends on a driver (here the rule's fallback), not on none.
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    _asked(monkeypatch)
    _rebind_ready(kernel, ctx)
    ending, _ = _probe_ending(kernel, [True])

    def await_probe(address):
        ctx.loader.unload("virtio_vfio_pci")
        return ending(address)
    _, o = actions.decide_and_carry_out(ctx, ctx.binder(0, await_probe=await_probe), VIRTIO)
    assert driver_of(kernel, VIRTIO) is not None, o
    assert o.result == "bound" and driver_of(kernel, VIRTIO) == o.driver, o
    assert "probe by virtio_vfio_pci failed" in o.message, o
