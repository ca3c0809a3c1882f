import errno

import pytest

from vfio_flavourd import actions
from vfio_flavourd import binder as binder_module
from vfio_flavourd.binder import Binder
from vfio_flavourd.sim import (ModprobeFails, OverrideLocked, OverrideMissing, ProbeFails,
                               UnbindBusy, Vanish, WriteFails)

from simhost import (BOOT_DISK, E1000E, MGMT, PF, VF0, VF1, VGA, VIRTIO, build_host, driver_of,
                     make_ctx, override_of, write_policy)


def host_ctx(tmp_path, policy, **kw):
    kernel = build_host(tmp_path, **kw).kernel()
    write_policy(tmp_path, policy)
    ctx = make_ctx(kernel)
    return kernel, ctx


def apply(ctx, addresses=None, **kw):
    binder = ctx.binder(0)
    out = {}
    for d in actions.expand_groups(ctx, actions.decisions_for(ctx, addresses)):
        o = actions.carry_out(ctx, binder, d, **kw)
        out[o.address] = o
    return out


VFS = """\
version: 1
rules:
  - name: vfs
    match: {vendor: 0x15b3, virtfn: true}
    flavour: vfio
    %s
"""


def test_variant_bound_with_driver_name_and_state(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    out = apply(ctx, [VF0])
    o = out[VF0]
    assert (o.result, o.module, o.driver, o.previous_driver) == (
        "bound", "mlx5_vfio_pci", "mlx5_vfio_pci", "mlx5_core")
    assert driver_of(kernel, VF0) == "mlx5_vfio_pci"
    assert override_of(kernel, VF0) == "mlx5_vfio_pci"
    assert driver_of(kernel, VF1) == "mlx5_core"   # not asked for
    rec = ctx.state.get(VF0)
    assert rec["override"] == "mlx5_vfio_pci" and rec["previous_driver"] == "mlx5_core"


def test_catch_all_uses_driver_name_not_module_name(tmp_path):
    kernel, ctx = host_ctx(tmp_path, """\
        version: 1
        rules:
          - {name: nic, match: {address: "0000:04:00.0"}, flavour: vfio}
        """)
    o = apply(ctx)[E1000E]
    assert (o.result, o.module, o.driver) == ("bound", "vfio_pci", "vfio-pci")
    assert override_of(kernel, E1000E) == "vfio-pci"
    assert o.steps[:3] == ["modprobe vfio_pci", "module vfio_pci registers driver vfio-pci",
                           "set override: write vfio-pci to "
                           "sys/bus/pci/devices/0000:04:00.0/driver_override"]


def test_a_module_whose_driver_is_registered_is_not_modprobed_again(tmp_path):
    kernel, ctx = host_ctx(tmp_path, """\
        version: 1
        rules:
          - {name: nic, match: {address: "0000:04:00.0"}, flavour: vfio}
        """)
    ctx.loader.load("vfio_pci")
    n = len(kernel.ops)
    o = apply(ctx)[E1000E]
    assert (o.result, o.driver) == ("bound", "vfio-pci")
    assert o.steps[0] == "module vfio_pci registers driver vfio-pci"
    assert "modprobe" not in [op.kind for op in kernel.ops[n:]]


def test_a_driver_known_from_the_last_load_is_checked_with_one_link(tmp_path):
    # The binders of one context remember which driver a module registered,
    # and ask the kernel only whether that driver is registered by it still.
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    listed = []
    entries = kernel.sysfs.entries
    kernel.sysfs.entries = lambda rel: (listed.append(rel), entries(rel))[1]
    assert apply(ctx, [VF0])[VF0].result == "bound"
    assert "sys/module/mlx5_vfio_pci/drivers" in listed
    del listed[:]
    o = apply(ctx, [VF1])[VF1]
    assert (o.result, o.driver) == ("bound", "mlx5_vfio_pci")
    assert o.steps[0] == "module mlx5_vfio_pci registers driver mlx5_vfio_pci"
    assert not [r for r in listed if r.startswith("sys/module/")], listed
    # Unloaded since (its devices released first): loaded again, not taken
    # for loaded on the strength of what was remembered.
    for a in (VF0, VF1):
        assert ctx.binder(0).release(actions.fresh(ctx.sysfs, a)).result == "released"
    ctx.loader.unload("mlx5_vfio_pci")
    n = len(kernel.ops)
    o = apply(ctx, [VF0])[VF0]
    assert (o.result, o.driver) == ("bound", "mlx5_vfio_pci")
    assert "modprobe" in [op.kind for op in kernel.ops[n:]]


def test_silent_probe_failure_is_caught_and_fallback_used(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    kernel.inject(ProbeFails("mlx5_vfio_pci", address=VF0))
    o = apply(ctx, [VF0])[VF0]
    assert (o.result, o.module, o.driver) == ("bound", "vfio_pci", "vfio-pci")
    assert o.message == ("bound to vfio-pci (fallback after: probe by mlx5_vfio_pci failed: the "
                         "device is unbound afterwards (drivers_probe reports success regardless; "
                         "see dmesg))")
    assert override_of(kernel, VF0) == "vfio-pci"


def test_probe_failure_without_fallback_returns_device(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "fallback: none")
    kernel.inject(ProbeFails("mlx5_vfio_pci"))
    o = apply(ctx, [VF0])[VF0]
    assert o.result == "failed"
    assert o.message.endswith("; returned to mlx5_core")
    assert driver_of(kernel, VF0) == "mlx5_core"
    assert override_of(kernel, VF0) == "(null)"
    assert ctx.state.get(VF0)["outcome"] == "failed"
    assert ctx.state.get(VF0)["override"] is None


def test_modprobe_failure_uses_fallback(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    kernel.inject(ModprobeFails("mlx5_vfio_pci"))
    o = apply(ctx, [VF0])[VF0]
    assert (o.result, o.driver) == ("bound", "vfio-pci")
    assert "modprobe mlx5_vfio_pci: modprobe: ERROR: could not insert 'mlx5_vfio_pci'" in o.message


def test_unbind_busy_restores(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    kernel.inject(UnbindBusy(driver="mlx5_core"))
    o = apply(ctx, [VF0])[VF0]
    assert o.result == "failed"
    assert driver_of(kernel, VF0) == "mlx5_core"
    assert override_of(kernel, VF0) == "(null)"
    assert "unbind from mlx5_core failed" in o.message


def test_device_vanishing_mid_sequence(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    kernel.inject(Vanish(VF0, at_write=2, when="before"))
    o = apply(ctx, [VF0])[VF0]
    assert (o.result, o.message) == ("gone", "device disappeared (hot-unplug) during binding")
    assert ctx.state.get(VF0) is None


def test_kernel_without_driver_override(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    kernel.inject(OverrideMissing())
    o = apply(ctx, [VF0])[VF0]
    assert o.result == "failed"
    assert o.message == ("this kernel has no driver_override attribute for 0000:3b:00.2 (added "
                         "in Linux 3.16); a rule with 'allow_new_id: true' may use new_id instead")
    assert driver_of(kernel, VF0) == "mlx5_core"


def test_new_id_path_is_undone_so_other_devices_are_not_captured(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "allow_new_id: true")
    kernel.inject(OverrideMissing())
    o = apply(ctx, [VF0])[VF0]
    assert (o.result, o.driver) == ("bound", "mlx5_vfio_pci")
    assert "remove dynamic id: write 15b3 101e to sys/bus/pci/drivers/mlx5_vfio_pci/remove_id" \
        in o.steps
    # The sibling VF, unbound later, must not be grabbed by the variant.
    kernel.sysfs.write("sys/bus/pci/drivers/mlx5_core/unbind", VF1)
    kernel.sysfs.write("sys/bus/pci/drivers_probe", VF1)
    assert driver_of(kernel, VF1) == "mlx5_core"


def test_locked_driver_override(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    kernel.inject(OverrideLocked())
    o = apply(ctx, [VF0])[VF0]
    assert o.result == "failed"
    assert "set override failed" in o.message and "Permission denied" in o.message
    assert driver_of(kernel, VF0) == "mlx5_core"


@pytest.mark.parametrize("address,reason", [
    (MGMT, "refusing to unbind: network interface eno1 is up and has routes (--force or "
           "'force: true' overrides)"),
    (BOOT_DISK, "refusing to unbind: /dev/nvme0n1p1 carries vfat mounted on /boot/efi (copied "
                "root: kernel tables); /dev/nvme0n1p2 carries ext4 mounted on / (copied root: "
                "kernel tables) (--force or 'force: true' overrides)"),
    (VGA, "refusing to unbind: it is the boot VGA device and framebuffer fb0 is on it (--force "
          "or 'force: true' overrides)"),
])
def test_guards_refuse_and_force_overrides(tmp_path, address, reason):
    kernel, ctx = host_ctx(tmp_path, f"""\
        version: 1
        rules:
          - {{name: x, match: {{address: "{address}"}}, flavour: vfio}}
        """)
    before = driver_of(kernel, address)
    o = apply(ctx)[address]
    assert (o.result, o.message) == ("refused", reason)
    assert driver_of(kernel, address) == before
    assert override_of(kernel, address) == "(null)"
    o = apply(ctx, force=True)[address]
    assert (o.result, o.driver) == ("bound", "vfio-pci")


def test_bridges_are_refused_even_forced(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    dev = __import__("vfio_flavourd.pci", fromlist=["x"]).read_device(ctx.sysfs, "0000:00:01.0")
    o = ctx.binder(0).bind(dev, "vfio_pci", None, force=True)
    assert (o.result, o.message) == ("refused", "bridges are never bound to vfio")


def test_override_of_another_tool_is_left_alone(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    kernel.sysfs.write(f"sys/bus/pci/devices/{VF0}/driver_override", "pci-stub")
    d = actions.decisions_for(ctx, [VF0])[0]
    assert (d.action, d.owner) == ("none", "another tool (libvirt?)")
    (tmp_path / "etc/driverctl.d").mkdir(parents=True)
    (tmp_path / f"etc/driverctl.d/pci-{VF0}").write_text("pci-stub\n")
    d = actions.decisions_for(ctx, [VF0])[0]
    assert d.owner == "driverctl"
    assert d.reason == ("driver_override 'pci-stub' was set by driverctl; leaving it alone "
                        "('takeover: true' takes it)")
    kernel2, ctx2 = host_ctx(tmp_path / "t", VFS % "takeover: true")
    kernel2.sysfs.write(f"sys/bus/pci/devices/{VF0}/driver_override", "pci-stub")
    assert apply(ctx2, [VF0])[VF0].driver == "mlx5_vfio_pci"


def test_release_returns_to_host_driver_and_forgets(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    apply(ctx, [VF0])
    dev = __import__("vfio_flavourd.pci", fromlist=["x"]).read_device(ctx.sysfs, VF0)
    o = ctx.binder(0).release(dev)
    assert (o.result, o.driver, o.message) == ("released", "mlx5_core", "on host driver mlx5_core")
    assert override_of(kernel, VF0) == "(null)"
    assert ctx.state.get(VF0) is None


def test_release_reloads_an_unloaded_host_module(tmp_path):
    kernel, ctx = host_ctx(tmp_path, """\
        version: 1
        rules:
          - {name: nic, match: {address: "0000:04:00.0"}, flavour: vfio}
        """)
    apply(ctx)
    kernel.rmmod("e1000e")
    dev = __import__("vfio_flavourd.pci", fromlist=["x"]).read_device(ctx.sysfs, E1000E)
    o = ctx.binder(0).release(dev)
    assert (o.result, o.driver) == ("released", "e1000e")
    assert "modprobe e1000e" in o.steps


def test_keep_is_idempotent(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    apply(ctx, [VF0])
    n_ops = len(kernel.ops)
    o = apply(ctx, [VF0])[VF0]
    assert (o.result, o.message) == ("kept", "already on mlx5_vfio_pci")
    assert [op for op in kernel.ops[n_ops:] if op.kind == "write"] == []


def test_dry_run_changes_nothing(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "")
    n_ops = len(kernel.ops)
    out = apply(ctx, dry_run=True)
    assert out[VF0].result == "dry-run"
    assert out[VF0].message == ("would modprobe mlx5_vfio_pci, set driver_override, unbind from "
                                "mlx5_core, probe")
    assert kernel.ops[n_ops:] == [] and ctx.state.read() == {}


def group_ctx(tmp_path, policy, second=(0x10D3, 0x020000, "e1000e")):
    """The standard host plus two functions sharing IOMMU group 77."""
    b = build_host(tmp_path)
    b.bridge("0000:00:07.0", secondary=0x07)
    b.device("0000:07:00.0", 0x8086, 0x10D3, 0x020000, driver="e1000e", iommu_group=77)
    device, class_, driver = second
    b.device("0000:07:00.1", 0x8086, device, class_, driver=driver, iommu_group=77)
    kernel = b.kernel()
    write_policy(tmp_path, policy)
    return kernel, make_ctx(kernel)


def test_group_all_binds_every_endpoint(tmp_path):
    kernel, ctx = group_ctx(tmp_path, """\
        version: 1
        rules:
          - {name: g, match: {address: "0000:07:00.0"}, flavour: vfio, group: all}
        """)
    out = apply(ctx)
    assert out["0000:07:00.1"].result == "bound"
    assert driver_of(kernel, "0000:07:00.1") == "vfio-pci"
    from vfio_flavourd.iommu import group_status
    st = group_status(ctx.sysfs, "77", ctx.index.modules())
    assert st.viable and st.blockers == ()


def test_group_blockers_are_named(tmp_path):
    kernel, ctx = group_ctx(tmp_path, """\
        version: 1
        rules:
          - {name: g, match: {address: "0000:07:00.0"}, flavour: vfio}
        """)
    apply(ctx)
    from vfio_flavourd.commands.status import collect
    row = [r for r in collect(ctx) if r["address"] == "0000:07:00.0"][0]
    assert row["group_viable"] is False
    assert row["group_blockers"] == [{"address": "0000:07:00.1", "driver": "e1000e"}]


def test_sriov_drivers_autoprobe_rule(tmp_path):
    kernel, ctx = host_ctx(tmp_path, """\
        version: 1
        rules:
          - name: pf
            match: {address: "0000:3b:00.0"}
            flavour: host
            sriov_drivers_autoprobe: false
        """)
    apply(ctx, [PF])
    assert kernel.sysfs.read(f"sys/bus/pci/devices/{PF}/sriov_drivers_autoprobe") == "0"


def test_write_error_on_probe_rolls_back(tmp_path):
    kernel, ctx = host_ctx(tmp_path, VFS % "fallback: none")
    kernel.inject(WriteFails("sys/bus/pci/drivers_probe", errno=errno.ENOMEM, times=1))
    o = apply(ctx, [VF0])[VF0]
    assert o.result == "failed"
    assert driver_of(kernel, VF0) == "mlx5_core"
    assert override_of(kernel, VF0) == "(null)"


def test_virtio_device_gets_virtio_variant(tmp_path):
    kernel, ctx = host_ctx(tmp_path, """\
        version: 1
        rules:
          - {name: v, match: {vendor: 0x1af4}, flavour: vfio}
        """)
    o = apply(ctx)[VIRTIO]
    assert (o.result, o.driver) == ("bound", "virtio_vfio_pci")


def test_group_all_leaves_members_another_rule_names(tmp_path):
    kernel, ctx = group_ctx(tmp_path, """\
        version: 1
        rules:
          - {name: lpc, match: {class: "0601"}, flavour: ignore}
          - {name: g, match: {address: "0000:07:00.0"}, flavour: vfio, group: all}
        """, second=(0xA1C1, 0x060100, "lpc_ich"))
    out = apply(ctx)
    assert out["0000:07:00.0"].result == "bound"
    assert out["0000:07:00.1"].result == "skipped"
    assert out["0000:07:00.1"].message == (
        "rule lpc says ignore, so 'group: all' of rule g leaves it; IOMMU group 77 stays "
        "blocked by it")
    assert driver_of(kernel, "0000:07:00.1") == "lpc_ich"


UPGRADE = """\
version: 1
rules:
  - name: vfs
    match: {vendor: 0x15b3, virtfn: true}
    flavour: vfio
    upgrade: true
"""


def _to_catch_all(kernel):
    kernel.loader.load("vfio_pci")
    kernel.sysfs.write(f"sys/bus/pci/devices/{VF0}/driver_override", "vfio-pci")
    kernel.sysfs.write("sys/bus/pci/drivers/mlx5_core/unbind", VF0)
    kernel.sysfs.write("sys/bus/pci/drivers_probe", VF0)
    assert driver_of(kernel, VF0) == "vfio-pci"


def test_upgrade_from_catch_all_to_variant(tmp_path):
    kernel, ctx = host_ctx(tmp_path, UPGRADE.replace("upgrade: true", "upgrade: true\n    takeover: true"))
    _to_catch_all(kernel)
    o = apply(ctx, [VF0])[VF0]
    assert (o.result, o.driver, o.previous_driver) == ("bound", "mlx5_vfio_pci", "vfio-pci")


def test_no_upgrade_while_the_group_is_open(tmp_path):
    kernel, ctx = host_ctx(tmp_path, UPGRADE.replace("upgrade: true", "upgrade: true\n    takeover: true"))
    _to_catch_all(kernel)
    group = kernel.sysfs.link(f"sys/bus/pci/devices/{VF0}/iommu_group")
    fd = tmp_path / "proc/4242/fd"
    fd.mkdir(parents=True)
    (tmp_path / "proc/4242/comm").write_text("qemu-system-x86\n")
    import os
    os.symlink(f"/dev/vfio/{group}", fd / "17")
    o = apply(ctx, [VF0])[VF0]
    assert (o.result, o.message) == (
        "refused", f"in use: /dev/vfio/{group} is open in pid 4242 (qemu-system-x86)")
    assert driver_of(kernel, VF0) == "vfio-pci"


def test_without_upgrade_the_catch_all_is_kept(tmp_path):
    kernel, ctx = host_ctx(tmp_path, UPGRADE.replace("upgrade: true", "takeover: true"))
    _to_catch_all(kernel)
    o = apply(ctx, [VF0])[VF0]
    assert (o.result, o.message) == (
        "kept", "already on vfio driver vfio-pci; 'upgrade: true' would move it to mlx5_vfio_pci")


VIRTIO_POLICY = """\
    version: 1
    rules:
      - {name: v, match: {vendor: 0x1af4}, flavour: vfio}
    """


def hot_added_and_raced(kernel, monkeypatch):
    """VIRTIO as just hot-added (no driver yet), and the kernel's own probe
    after device_add binding virtio-pci between the binder's read of the
    driver link and its drivers_probe, before it saw the override."""
    kernel.sysfs.write(f"sys/bus/pci/drivers/virtio-pci/unbind", VIRTIO)
    write = kernel.sysfs.write
    raced = []

    def racing(rel, value):
        if rel == "sys/bus/pci/drivers_probe" and value == VIRTIO and not raced:
            raced.append(override_of(kernel, VIRTIO))
            write(f"sys/bus/pci/devices/{VIRTIO}/driver_override", "\n")
            write("sys/bus/pci/drivers/virtio-pci/bind", VIRTIO)
            write(f"sys/bus/pci/devices/{VIRTIO}/driver_override", raced[0])
        write(rel, value)
    monkeypatch.setattr(kernel.sysfs, "write", racing)
    return raced


def test_the_kernels_own_probe_of_a_new_device_is_taken_back(tmp_path, monkeypatch):
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    raced = hot_added_and_raced(kernel, monkeypatch)
    o = apply(ctx, [VIRTIO])[VIRTIO]
    assert raced == ["virtio_vfio_pci"]
    assert (o.result, o.driver) == ("bound", "virtio_vfio_pci"), o.steps
    assert driver_of(kernel, VIRTIO) == "virtio_vfio_pci"
    assert "the kernel's own probe bound virtio-pci meanwhile; taking it back" in o.steps
    assert "unbind from virtio-pci: write 0000:05:00.0 to sys/bus/pci/drivers/virtio-pci/unbind" \
        in o.steps


def test_the_daemon_takes_a_raced_device_back_without_waiting_out_the_settle_time(
        tmp_path, monkeypatch):
    """With the daemon's await_probe: once the kernel's own probe is over,
    the host driver's link after our drivers_probe is the answer, and the
    settle time (1 s) is not waited out before taking the device back."""
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    hot_added_and_raced(kernel, monkeypatch)
    asked = []

    def probe_over(address):
        asked.append((address, driver_of(kernel, address)))
        return True
    binder = ctx.binder(1.0, await_probe=probe_over)
    slept = []
    monkeypatch.setattr(binder_module.time, "sleep", slept.append)
    d = actions.decisions_for(ctx, [VIRTIO])[0]
    o = actions.carry_out(ctx, binder, d)
    assert (o.result, o.driver) == ("bound", "virtio_vfio_pci"), o.steps
    assert "the kernel's own probe bound virtio-pci meanwhile; taking it back" in o.steps
    # Asked once more after the drivers_probe, the host driver bound.
    assert (VIRTIO, "virtio-pci") in asked
    assert slept == []


def test_a_probe_still_running_is_waited_for_as_before(tmp_path, monkeypatch):
    """await_probe False (the kernel's probe not over within its wait): the
    settle time runs as it did, and the device is still taken back."""
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    hot_added_and_raced(kernel, monkeypatch)
    over = []       # True for the guards' asks; False once the host driver is there

    def probe_over(address):
        over.append(driver_of(kernel, address) is None)
        return over[-1]
    binder = ctx.binder(0.05, await_probe=probe_over)
    slept = []
    real_sleep = binder_module.time.sleep
    monkeypatch.setattr(binder_module.time, "sleep",
                        lambda s: (slept.append(s), real_sleep(s)))
    d = actions.decisions_for(ctx, [VIRTIO])[0]
    o = actions.carry_out(ctx, binder, d)
    assert slept, "the settle time was not waited"
    assert False in over
    assert "the kernel's own probe bound virtio-pci meanwhile; taking it back" in o.steps


def guards_refusing_a_bound_device(monkeypatch) -> list:
    """Guards that refuse once the device has a driver (its NIC is up);
    returns the drivers they were asked about, in order."""
    from vfio_flavourd import guards
    asked = []

    def refusals(sysfs, dev, top=None):
        asked.append(dev.driver)
        return ["network interface eth1 is up and has routes"] if dev.driver else []
    monkeypatch.setattr(guards, "refusals", refusals)
    return asked


def test_taking_a_raced_device_back_asks_the_guards_first(tmp_path, monkeypatch):
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY.replace("flavour: vfio", "flavour: vfio, "
                                                           "fallback: none"))
    hot_added_and_raced(kernel, monkeypatch)
    asked = guards_refusing_a_bound_device(monkeypatch)
    o = apply(ctx, [VIRTIO])[VIRTIO]
    assert asked == [None, "virtio-pci"]      # before the move, and before taking it back
    assert o.result == "failed"
    assert "refusing to unbind: network interface eth1 is up and has routes" in o.message
    assert driver_of(kernel, VIRTIO) == "virtio-pci"
    assert override_of(kernel, VIRTIO) == "(null)"


def bound_at_the_override(kernel, monkeypatch) -> None:
    """The kernel's probe binds virtio-pci to VIRTIO, if it has no driver,
    as the binder writes its override: after the guards were asked."""
    write = kernel.sysfs.write

    def racing(rel, value):
        if rel == f"sys/bus/pci/devices/{VIRTIO}/driver_override" and value != "\n" \
                and driver_of(kernel, VIRTIO) is None:
            write("sys/bus/pci/drivers/virtio-pci/bind", VIRTIO)
        write(rel, value)
    monkeypatch.setattr(kernel.sysfs, "write", racing)


def test_a_driver_bound_between_the_guards_and_the_override_is_guarded_again(
        tmp_path, monkeypatch):
    """The kernel's own probe binds the new device after the binder's read
    (the guards saw it unbound) and before its override: the guards are
    asked again about the bound device before any unbind."""
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY.replace("flavour: vfio", "flavour: vfio, "
                                                           "fallback: none"))
    kernel.sysfs.write("sys/bus/pci/drivers/virtio-pci/unbind", VIRTIO)
    bound_at_the_override(kernel, monkeypatch)
    asked = guards_refusing_a_bound_device(monkeypatch)
    o = apply(ctx, [VIRTIO])[VIRTIO]
    assert asked == [None, "virtio-pci"]
    assert o.result == "failed" and "refusing to unbind: network interface eth1" in o.message
    assert driver_of(kernel, VIRTIO) == "virtio-pci"
    assert override_of(kernel, VIRTIO) == "(null)"
    # The rollback leaves the NIC on virtio-pci: it does not unbind what the
    # guards refused to, to put the device back as it was (unbound).
    assert not [s for s in o.steps if s.startswith("unbind from virtio-pci")], o.steps
    assert any(s.startswith("the kernel's own probe bound virtio-pci meanwhile")
               for s in o.steps), o.steps


def test_override_unbind_and_probe_are_asked_for_in_one_request(tmp_path, monkeypatch):
    """The writer is handed the unbind from the driver the guards were
    asked about and the probe with the override (deadline.in_child)."""
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    asked = []
    real = kernel.sysfs.write_timed

    def recording(rel, value, seconds, on_slow=None, then=()):
        asked.append((rel, list(then)))
        real(rel, value, seconds, on_slow, then=then)
    monkeypatch.setattr(kernel.sysfs, "write_timed", recording)
    o = apply(ctx, [VIRTIO])[VIRTIO]
    assert (o.result, o.driver) == ("bound", "virtio_vfio_pci"), o.steps
    assert asked[0] == (f"sys/bus/pci/devices/{VIRTIO}/driver_override", [
        ("sys/bus/pci/drivers/virtio-pci/unbind", VIRTIO),
        ("sys/bus/pci/drivers_probe", VIRTIO)]), asked
    assert [rel for rel, _ in asked[1:]] == ["sys/bus/pci/drivers/virtio-pci/unbind",
                                             "sys/bus/pci/drivers_probe"]


def moved_at_the_override(kernel, monkeypatch, to=None) -> None:
    """As the binder writes VIRTIO's override (after the guards saw it on
    virtio-pci), the kernel unbinds it, and `to` (by new_id) takes it."""
    write = kernel.sysfs.write

    def racing(rel, value):
        if rel == f"sys/bus/pci/devices/{VIRTIO}/driver_override" and value != "\n" \
                and driver_of(kernel, VIRTIO) == "virtio-pci":
            write("sys/bus/pci/drivers/virtio-pci/unbind", VIRTIO)
            if to:
                write(f"sys/bus/pci/drivers/{to}/new_id", "1af4 1041")
                write(f"sys/bus/pci/drivers/{to}/remove_id", "1af4 1041")
        write(rel, value)
    monkeypatch.setattr(kernel.sysfs, "write", racing)


def test_a_device_unbound_before_the_announced_unbind_is_probed_all_the_same(
        tmp_path, monkeypatch):
    # The unbind from virtio-pci answers ENODEV: the writer makes no probe
    # after it, and the binder asks for one on its own.
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    moved_at_the_override(kernel, monkeypatch)
    from vfio_flavourd import guards
    asked = []
    monkeypatch.setattr(guards, "refusals",
                        lambda sysfs, dev, top=None: asked.append(dev.driver) or [])
    o = apply(ctx, [VIRTIO])[VIRTIO]
    assert (o.result, o.driver) == ("bound", "virtio_vfio_pci"), o.steps
    assert asked == ["virtio-pci"], asked       # nothing to unbind: not asked again
    assert "not on virtio-pci any more, but on no driver" in o.steps, o.steps
    assert driver_of(kernel, VIRTIO) == "virtio_vfio_pci"


def test_a_device_another_driver_took_before_the_announced_unbind_is_guarded_again(
        tmp_path, monkeypatch):
    """The guards said yes to virtio-pci; pci-stub took the device before
    the unbind: they are asked about pci-stub, and their no is kept."""
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY.replace("flavour: vfio", "flavour: vfio, "
                                                           "fallback: none"))
    kernel.loader.load("pci_stub")
    moved_at_the_override(kernel, monkeypatch, to="pci-stub")
    from vfio_flavourd import guards
    asked = []

    def refusals(sysfs, dev, top=None):
        asked.append(dev.driver)
        return ["pci-stub holds it for a test"] if dev.driver == "pci-stub" else []
    monkeypatch.setattr(guards, "refusals", refusals)
    o = apply(ctx, [VIRTIO])[VIRTIO]
    assert asked == ["virtio-pci", "pci-stub"], (asked, o.steps)
    assert o.result == "failed" and "refusing to unbind: pci-stub holds it" in o.message
    assert "not on virtio-pci any more, but on pci-stub" in o.steps, o.steps
    # Nor does the rollback unbind it: pci-stub is not a driver the move bound.
    assert driver_of(kernel, VIRTIO) == "pci-stub", o.steps
    assert "left on pci-stub, which the kernel's own probe or another tool bound " \
        "meanwhile (it was on virtio-pci)" in o.message


def test_an_events_device_is_decided_once_when_the_completed_read_agrees(tmp_path, monkeypatch):
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    from vfio_flavourd import engine
    seen = []
    real = engine.decide
    monkeypatch.setattr(engine, "decide", lambda dev, *a, **k: seen.append(
        (dev.driver, dev.driver_override, k.get("owner"))) or real(dev, *a, **k))
    d, o = actions.decide_and_carry_out(ctx, ctx.binder(0), VIRTIO)
    assert seen == [("virtio-pci", None, None)]
    assert (o.result, o.driver) == ("bound", "virtio_vfio_pci"), o.steps


def test_an_events_device_is_decided_again_on_what_the_probe_left(tmp_path, monkeypatch):
    """The early read (no driver_override: it would wait for the kernel's
    probe) saw the device unbound; the completed read finds the probe's
    driver and another tool's override: the decision is made again, with
    the override's owner, and that tool's override is left alone."""
    kernel, ctx = host_ctx(tmp_path, VIRTIO_POLICY)
    kernel.sysfs.write("sys/bus/pci/drivers/virtio-pci/unbind", VIRTIO)
    from vfio_flavourd import engine, pci as pci_mod
    seen = []
    real_decide, real_settled = engine.decide, pci_mod.settled
    monkeypatch.setattr(engine, "decide", lambda dev, *a, **k: seen.append(
        (dev.driver, dev.driver_override, k.get("owner"))) or real_decide(dev, *a, **k))

    def probe_meanwhile(sysfs, early):
        kernel.sysfs.write("sys/bus/pci/drivers/virtio-pci/bind", VIRTIO)
        kernel.sysfs.write(f"sys/bus/pci/devices/{VIRTIO}/driver_override", "pci-stub")
        return real_settled(sysfs, early)
    monkeypatch.setattr(pci_mod, "settled", probe_meanwhile)
    d, o = actions.decide_and_carry_out(ctx, ctx.binder(0), VIRTIO)
    assert seen[0] == (None, None, None)
    assert seen[1][:2] == ("virtio-pci", "pci-stub") and seen[1][2] not in (None, "vfio-flavourd")
    assert o.result == "skipped" and "leaving it alone" in o.message, o.message
    assert driver_of(kernel, VIRTIO) == "virtio-pci"
    assert override_of(kernel, VIRTIO) == "pci-stub"
