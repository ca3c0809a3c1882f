import errno
import os

import pytest

from vfio_flavourd.errors import SysfsError

from sim_hosts import PF, QAT_PF, VF0, VF1
from sim_hosts import events_fixture, kernel_fixture  # noqa: F401  (fixtures)


def numvfs(kernel, pf, n):
    kernel.sysfs.write(f"sys/bus/pci/devices/{pf}/sriov_numvfs", str(n))


def err(kernel, rel, value):
    with pytest.raises(SysfsError) as e:
        kernel.sysfs.write(rel, value)
    return e.value


def test_enabling_vfs_creates_linked_devices_probed_by_the_host_driver(kernel, events):
    numvfs(kernel, QAT_PF, 4)
    vfs = ["0000:6b:00.1", "0000:6b:00.2", "0000:6b:00.3", "0000:6b:00.4"]
    assert kernel.device(QAT_PF).vfs == vfs
    assert kernel.sysfs.read(f"sys/bus/pci/devices/{QAT_PF}/sriov_numvfs") == "4"
    for i, vf in enumerate(vfs):
        assert os.readlink(kernel.root.path(f"sys/bus/pci/devices/{QAT_PF}/virtfn{i}")) == f"../{vf}"
        assert os.readlink(kernel.root.path(f"sys/bus/pci/devices/{vf}/physfn")) == f"../{QAT_PF}"
        assert kernel.sysfs.read(f"sys/bus/pci/devices/{vf}/device") == "0x4941"
        assert kernel.device(vf).numa_node == 1
    # qat_4xxx has no id for its VFs: they stay unbound, each in a group of its own
    assert all(kernel.device(vf).driver is None for vf in vfs)
    groups = {kernel.device(vf).iommu_group for vf in vfs}
    assert len(groups) == 4 and None not in groups
    assert [e.action for e in events] == ["add"] * 4


def test_vfs_of_a_host_driver_bind_at_creation(kernel, events):
    numvfs(kernel, PF, 0)
    events.clear()
    numvfs(kernel, PF, 3)
    assert [(e.action, e.address) for e in events] == [
        ("add", VF0), ("bind", VF0), ("add", VF1), ("bind", VF1),
        ("add", "0000:3b:00.4"), ("bind", "0000:3b:00.4")]


def test_sriov_drivers_autoprobe_off_leaves_new_vfs_unbound_unless_overridden(kernel):
    s = kernel.sysfs
    numvfs(kernel, PF, 0)
    s.write(f"sys/bus/pci/devices/{PF}/sriov_drivers_autoprobe", "0")
    assert s.read(f"sys/bus/pci/devices/{PF}/sriov_drivers_autoprobe") == "0"
    numvfs(kernel, PF, 2)
    assert kernel.device(VF0).driver is None
    # explicit bind fails too: pci_device_can_probe() says no
    assert err(kernel, "sys/bus/pci/drivers/mlx5_core/bind", VF0).errno == errno.ENODEV
    s.write("sys/bus/pci/drivers_probe", VF0)
    assert kernel.device(VF0).driver is None
    # an override lets the probe through (since 5.3)
    kernel.loader.load("mlx5_vfio_pci")
    s.write(f"sys/bus/pci/devices/{VF0}/driver_override", "mlx5_vfio_pci")
    s.write("sys/bus/pci/drivers_probe", VF0)
    assert kernel.device(VF0).driver == "mlx5_vfio_pci"
    assert err(kernel, f"sys/bus/pci/devices/{PF}/sriov_drivers_autoprobe", "maybe").errno == errno.EINVAL


def test_sriov_numvfs_errors(kernel):
    rel = f"sys/bus/pci/devices/{PF}/sriov_numvfs"
    e = err(kernel, rel, "3")
    assert e.errno == errno.EBUSY
    assert str(e) == f"{rel}: write of '3' failed: Device or resource busy"
    assert kernel.dmesg[-1] == f"mlx5_core {PF}: 2 VFs already enabled. Disable before enabling 3 VFs"
    assert err(kernel, rel, "9").errno == errno.ERANGE
    assert err(kernel, rel, "x").errno == errno.EINVAL
    numvfs(kernel, PF, 2)      # same count: nothing happens, no error
    kernel.sysfs.write("sys/bus/pci/drivers/mlx5_core/unbind", PF)
    assert err(kernel, rel, "1").errno == errno.ENOENT
    assert kernel.dmesg[-1] == f"pci {PF}: no driver bound to device; cannot configure SR-IOV"


def test_a_driver_without_sriov_configure_is_enoent(kernel):
    kernel.loader.load("pci_stub")
    s = kernel.sysfs
    s.write(f"sys/bus/pci/devices/{QAT_PF}/driver_override", "pci-stub")
    s.write(f"sys/bus/pci/devices/{QAT_PF}/driver/unbind", QAT_PF)
    s.write("sys/bus/pci/drivers_probe", QAT_PF)
    assert err(kernel, f"sys/bus/pci/devices/{QAT_PF}/sriov_numvfs", "2").errno == errno.ENOENT


def test_disabling_removes_vfs_last_first(kernel, events):
    numvfs(kernel, PF, 0)
    assert [(e.action, e.address) for e in events] == [
        ("unbind", VF1), ("remove", VF1), ("unbind", VF0), ("remove", VF0)]
    assert VF0 not in kernel.devices
    assert not os.path.lexists(kernel.root.path(f"sys/bus/pci/devices/{VF0}"))
    assert not os.path.lexists(kernel.root.path(f"sys/bus/pci/devices/{PF}/virtfn0"))
    assert not os.path.lexists(kernel.root.path(f"sys/bus/pci/drivers/mlx5_core/{VF0}"))


def test_unbinding_the_pf_driver_takes_its_vfs_with_it(kernel):
    kernel.sysfs.write("sys/bus/pci/drivers/mlx5_core/unbind", PF)
    assert kernel.device(PF).vfs == [] and VF0 not in kernel.devices
    assert kernel.sysfs.read(f"sys/bus/pci/devices/{PF}/sriov_numvfs") == "0"


def test_group_numbers_are_reused_lowest_first(kernel):
    """ida_alloc(): a new group takes the lowest free number."""
    numvfs(kernel, PF, 0)
    used = {d.iommu_group for d in kernel.devices.values()}
    free = [n for n in range(100) if n not in used][:2]
    numvfs(kernel, PF, 2)
    assert [kernel.device(a).iommu_group for a in (VF0, VF1)] == free
    g = kernel.device(VF0).iommu_group
    assert sorted(os.listdir(kernel.root.path(f"sys/kernel/iommu_groups/{g}/devices"))) == [VF0]
