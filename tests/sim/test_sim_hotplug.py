import os

import pytest

from sim_hosts import MGMT, PF, VF0
from sim_hosts import events_fixture, kernel_fixture  # noqa: F401  (fixtures)


def test_a_hotplugged_device_is_bound_before_any_consumer_sees_the_add(kernel):
    seen = []

    def consumer(ev):
        seen.append((ev.action, ev.address, kernel.sysfs.link(
            f"sys/bus/pci/devices/{ev.address}/driver")))

    kernel.subscribe(consumer)
    kernel.sysfs.write("sys/bus/pci/drivers_autoprobe", "0")     # does not stop it
    d = kernel.add_device("0000:07:00.2", 0x8086, 0x1521, 0x020000)
    assert d.driver == "igb"
    assert seen == [("add", "0000:07:00.2", "igb"), ("bind", "0000:07:00.2", "igb")]
    ev = kernel.uevents[-2]
    assert ev.properties["ACTION"] == "add" and "DRIVER" not in ev.properties
    assert os.readlink(kernel.root.path("sys/bus/pci/devices/0000:07:00.2")) == (
        "../../../devices/pci0000:00/0000:00:06.0/0000:07:00.2")
    # the NUMA node comes from the bridge above
    assert d.numa_node == 0
    assert kernel.add_device("0000:3b:00.7", 0x8086, 0x10D3, 0x020000).numa_node == 1


def test_a_hotplugged_device_with_no_loaded_driver_stays_unbound(kernel, events):
    kernel.add_device("0000:07:00.3", 0x10DE, 0x20B5, 0x030200)
    assert kernel.device("0000:07:00.3").driver is None
    assert [e.action for e in events] == ["add"]


def test_add_device_refuses_unknown_buses_and_duplicates(kernel):
    with pytest.raises(ValueError, match="no bus 0000:99"):
        kernel.add_device("0000:99:00.0", 0x8086, 0x1521, 0x020000)
    with pytest.raises(ValueError, match="already present"):
        kernel.add_device(MGMT, 0x8086, 0x1521, 0x020000)


def test_hot_unplug_removes_everything_and_rescan_does_not_bring_it_back(kernel, events):
    g = kernel.device(VF0).iommu_group
    kernel.remove_device(VF0)
    assert [(e.action, e.address) for e in events] == [("unbind", VF0), ("remove", VF0)]
    for rel in (f"sys/bus/pci/devices/{VF0}", f"sys/bus/pci/drivers/mlx5_core/{VF0}",
                f"sys/kernel/iommu_groups/{g}"):
        assert not os.path.lexists(kernel.root.path(rel)), rel
    # only SR-IOV disable removes virtfnN; a VF removed alone leaves it dangling
    virtfn0 = kernel.root.path(f"sys/bus/pci/devices/{PF}/virtfn0")
    assert os.path.islink(virtfn0) and not virtfn0.exists()
    kernel.sysfs.write(f"sys/bus/pci/devices/{PF}/sriov_numvfs", "0")
    assert not os.path.lexists(virtfn0)
    kernel.sysfs.write("sys/bus/pci/rescan", "1")
    assert VF0 not in kernel.devices


def test_remove_attribute_then_rescan_finds_the_device_again_fresh(kernel, events):
    s = kernel.sysfs
    s.write(f"sys/bus/pci/devices/{MGMT}/driver_override", "pci-stub")
    s.write(f"sys/bus/pci/devices/{MGMT}/remove", "1")
    assert MGMT not in kernel.devices
    s.write("sys/bus/pci/rescan", "1")
    d = kernel.device(MGMT)
    assert d.override is None and d.driver == "igb"
    assert s.read("sys/class/net/eno1/operstate") == "down"
    assert [e.action for e in events] == ["unbind", "remove", "add", "bind"]


def test_removing_a_bridge_removes_what_is_below_it(kernel):
    kernel.sysfs.write("sys/bus/pci/devices/0000:3a:00.0/remove", "1")
    assert not {PF, VF0, "0000:3a:00.0"} & set(kernel.devices)
    kernel.sysfs.write("sys/bus/pci/rescan", "1")
    assert PF in kernel.devices and "0000:3a:00.0" in kernel.devices
    assert kernel.device(PF).driver == "mlx5_core"
    assert kernel.device(PF).sriov_numvfs == 0 and VF0 not in kernel.devices


def test_remove_device_of_an_unknown_address_raises(kernel):
    with pytest.raises(KeyError):
        kernel.remove_device("0000:99:00.0")
