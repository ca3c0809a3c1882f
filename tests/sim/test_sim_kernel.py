"""Binding semantics: driver_override, bind, unbind, drivers_probe, new_id,
remove_id, override-only ids, vfio groups, uevents."""

import errno
import os

import pytest

from vfio_flavourd.errors import SysfsError

from sim_hosts import E1000E, MF0, MF1, MGMT, VF0, VF1, VIRTIO
from sim_hosts import events_fixture, kernel_fixture  # noqa: F401  (fixtures)


def dev(a, attr):
    return f"sys/bus/pci/devices/{a}/{attr}"


def drv_of(kernel, a):
    return kernel.sysfs.link(dev(a, "driver"))


def write_error(kernel, rel, value):
    with pytest.raises(SysfsError) as e:
        kernel.sysfs.write(rel, value)
    return e.value


@pytest.mark.parametrize("value,stored", [
    ("vfio-pci", "vfio-pci"), ("vfio-pci\n", "vfio-pci"), ("vfio-pci\nxx", "vfio-pci"),
    ("", "(null)"), ("\n", "(null)"), ("a\0b", "a"),
])
def test_driver_override_store(kernel, value, stored):
    kernel.sysfs.write(dev(VF0, "driver_override"), value)
    assert kernel.sysfs.read(dev(VF0, "driver_override")) == stored


def test_driver_override_neither_unbinds_nor_binds_nor_loads(kernel, events):
    kernel.sysfs.write(dev(VF0, "driver_override"), "vfio-pci")
    assert drv_of(kernel, VF0) == "mlx5_core"
    assert "vfio_pci" not in kernel.loaded_modules
    assert events == []
    kernel.sysfs.write(dev(VF0, "driver_override"), "\n")
    assert kernel.device(VF0).override is None


def test_driver_override_too_long_is_einval(kernel):
    e = write_error(kernel, dev(VF0, "driver_override"), "x" * 4095)
    assert e.errno == errno.EINVAL


def test_override_naming_a_module_or_unloaded_driver_strands_the_device(kernel):
    """kernel-facts: the override is compared with driver *names*."""
    kernel.loader.load("vfio_pci")
    for name in ("vfio_pci", "mlx5_vfio_pci"):       # a module name; a driver not loaded
        kernel.sysfs.write(dev(VF0, "driver_override"), name)
        if drv_of(kernel, VF0):
            kernel.sysfs.write(dev(VF0, "driver/unbind"), VF0)
        kernel.sysfs.write("sys/bus/pci/drivers_probe", VF0)    # no error ...
        assert drv_of(kernel, VF0) is None                     # ... and no driver


def test_the_full_bind_sequence(kernel, events):
    kernel.loader.load("mlx5_vfio_pci")
    s = kernel.sysfs
    s.write(dev(VF0, "driver_override"), "mlx5_vfio_pci")
    s.write("sys/bus/pci/drivers/mlx5_core/unbind", VF0)
    assert drv_of(kernel, VF0) is None
    s.write("sys/bus/pci/drivers_probe", VF0)
    assert drv_of(kernel, VF0) == "mlx5_vfio_pci"
    assert os.path.islink(kernel.root.path(f"sys/bus/pci/drivers/mlx5_vfio_pci/{VF0}"))
    assert not os.path.lexists(kernel.root.path(f"sys/bus/pci/drivers/mlx5_core/{VF0}"))
    assert s.read(dev(VF0, "uevent")).startswith("DRIVER=mlx5_vfio_pci\n")
    assert [(e.action, e.address, e.driver) for e in events] == [
        ("unbind", VF0, "mlx5_core"), ("bind", VF0, "mlx5_vfio_pci")]
    assert "DRIVER" not in events[0].properties
    assert events[1].properties["DRIVER"] == "mlx5_vfio_pci"
    assert events[1].properties["PCI_SLOT_NAME"] == VF0
    assert events[1].properties["PCI_ID"] == "15B3:101E"
    assert events[1].properties["PCI_SUBSYS_ID"] == "15B3:0016"
    assert events[1].properties["PCI_CLASS"] == "20000"
    assert events[1].properties["MODALIAS"] == "pci:v000015B3d0000101Esv000015B3sd00000016bc02sc00i00"
    assert events[1].devpath == f"/devices/pci0000:3a/0000:3a:00.0/{VF0}"
    assert events[0].seqnum < events[1].seqnum
    kinds = [(o.kind, o.target) for o in kernel.ops if o.kind in ("unbind", "probe", "bind")]
    assert kinds[-3:] == [("unbind", VF0), ("probe", VF0), ("bind", VF0)]


def test_unbind_from_a_driver_that_does_not_hold_the_device_is_enodev(kernel):
    e = write_error(kernel, "sys/bus/pci/drivers/igb/unbind", VF0)
    assert e.errno == errno.ENODEV
    assert str(e) == ("sys/bus/pci/drivers/igb/unbind: write of '0000:3b:00.2' failed: "
                      "No such device")
    assert write_error(kernel, "sys/bus/pci/drivers/igb/unbind", "0000:99:00.0").errno == errno.ENODEV


def test_bind_store(kernel):
    s = kernel.sysfs
    kernel.loader.load("vfio_pci")
    # bound already: EBUSY
    s.write(dev(VF0, "driver_override"), "vfio-pci")
    assert write_error(kernel, "sys/bus/pci/drivers/vfio-pci/bind", VF0).errno == errno.EBUSY
    s.write(dev(VF0, "driver/unbind"), VF0)
    # the override names vfio-pci, so mlx5_core may not have it
    assert write_error(kernel, "sys/bus/pci/drivers/mlx5_core/bind", VF0).errno == errno.ENODEV
    s.write("sys/bus/pci/drivers/vfio-pci/bind", VF0 + "\n")
    assert drv_of(kernel, VF0) == "vfio-pci"
    # no override, no id match: ENODEV
    assert write_error(kernel, "sys/bus/pci/drivers/igb/bind", MF0).errno == errno.ENODEV


def test_bind_returns_the_probe_error_and_drivers_probe_hides_it(kernel):
    """vfio-pci without an IOMMU group: -EINVAL from bind, success from
    drivers_probe with the error only in dmesg."""
    kernel.loader.load("vfio_pci")
    s = kernel.sysfs
    s.write(dev(E1000E, "driver_override"), "vfio-pci")
    s.write(dev(E1000E, "driver/unbind"), E1000E)
    e = write_error(kernel, "sys/bus/pci/drivers/vfio-pci/bind", E1000E)
    assert str(e) == ("sys/bus/pci/drivers/vfio-pci/bind: write of '0000:04:00.0' failed: "
                      "Invalid argument")
    s.write("sys/bus/pci/drivers_probe", E1000E)
    assert drv_of(kernel, E1000E) is None
    assert kernel.dmesg[-1] == ("vfio-pci 0000:04:00.0: probe with driver vfio-pci "
                                "failed with error -22")


def test_drivers_probe_of_an_unknown_address_is_enodev(kernel):
    assert write_error(kernel, "sys/bus/pci/drivers_probe", "0000:99:00.0").errno == errno.ENODEV


def test_drivers_probe_of_a_bound_device_changes_nothing(kernel, events):
    kernel.sysfs.write("sys/bus/pci/drivers_probe", VF0)
    assert drv_of(kernel, VF0) == "mlx5_core" and events == []


def test_override_only_ids_never_bind_on_their_own(kernel):
    kernel.sysfs.write(dev(VF1, "driver/unbind"), VF1)
    kernel.loader.load("mlx5_vfio_pci")
    kernel.sysfs.write("sys/bus/pci/drivers_probe", VF1)
    assert drv_of(kernel, VF1) == "mlx5_core"     # the host driver takes it back


def test_loading_a_module_attaches_it_to_unbound_devices_whose_override_names_it(kernel):
    """kernel-facts: a later modprobe vfio-pci bound it at once."""
    s = kernel.sysfs
    s.write(dev(VF1, "driver_override"), "mlx5_vfio_pci")
    s.write(dev(VF1, "driver/unbind"), VF1)
    s.write("sys/bus/pci/drivers_probe", VF1)
    assert drv_of(kernel, VF1) is None
    kernel.loader.load("mlx5_vfio_pci")
    assert drv_of(kernel, VF1) == "mlx5_vfio_pci"


def test_an_override_forces_any_driver_onto_any_device(kernel):
    """Nothing stops virtio_vfio_pci from taking an e1000e (seen on 6.12)."""
    kernel.loader.load("virtio_vfio_pci")
    s = kernel.sysfs
    s.write(dev(MF0, "driver_override"), "virtio_vfio_pci")
    s.write("sys/bus/pci/drivers_probe", MF0)
    assert drv_of(kernel, MF0) == "virtio_vfio_pci"


def test_vfio_group_nodes_follow_the_groups_vfio_devices(kernel):
    kernel.loader.load("vfio_pci")
    s = kernel.sysfs
    group = kernel.device(MF0).iommu_group
    node = kernel.root.path(f"dev/vfio/{group}")
    assert kernel.root.path("dev/vfio/vfio").exists()
    for a in (MF0, MF1):
        s.write(dev(a, "driver_override"), "vfio-pci")
        s.write("sys/bus/pci/drivers_probe", a)
    assert node.exists()
    s.write("sys/bus/pci/drivers/vfio-pci/unbind", MF0)
    assert node.exists()                     # MF1 still holds the group
    s.write("sys/bus/pci/drivers/vfio-pci/unbind", MF1)
    assert not node.exists()


def test_new_id_captures_every_unbound_matching_device_and_remove_id_undoes_it(kernel):
    kernel.loader.load("vfio_pci")
    s = kernel.sysfs
    s.write("sys/bus/pci/drivers/vfio-pci/new_id", "8086 10d3")
    assert drv_of(kernel, MF0) == drv_of(kernel, MF1) == "vfio-pci"
    assert drv_of(kernel, E1000E) == "e1000e"           # bound devices are not taken
    assert write_error(kernel, "sys/bus/pci/drivers/vfio-pci/new_id",
                       "8086 10d3").errno == errno.EEXIST
    s.write("sys/bus/pci/drivers/vfio-pci/remove_id", "0x8086 0x10d3")
    assert drv_of(kernel, MF0) == "vfio-pci"             # remove_id does not unbind
    assert write_error(kernel, "sys/bus/pci/drivers/vfio-pci/remove_id",
                       "8086 10d3").errno == errno.ENODEV
    assert write_error(kernel, "sys/bus/pci/drivers/vfio-pci/new_id", "8086").errno == errno.EINVAL
    assert write_error(kernel, "sys/bus/pci/drivers/igb/new_id", "8086 1521").errno == errno.EEXIST
    assert write_error(kernel, "sys/bus/pci/drivers/igb/new_id",
                       "8086 10d3 ffffffff ffffffff 0 0 5").errno == errno.EINVAL


def test_read_only_and_missing_attributes(kernel):
    e = write_error(kernel, dev(VF0, "vendor"), "0x8086")
    assert str(e) == "sys/bus/pci/devices/0000:3b:00.2/vendor: cannot open for writing: Permission denied"
    assert e.errno == errno.EACCES
    assert write_error(kernel, dev(VF0, "sriov_numvfs"), "1").errno == errno.ENOENT
    assert write_error(kernel, dev("0000:99:00.0", "driver_override"), "x").errno == errno.ENOENT
    assert kernel.sysfs.is_writable(dev(VF0, "driver_override"))
    assert not kernel.sysfs.is_writable(dev(VF0, "vendor"))
    assert not kernel.sysfs.is_writable(dev(VF0, "nonexistent"))
    with pytest.raises(SysfsError, match="refusing to write outside sys/"):
        kernel.sysfs.write("proc/cmdline", "x")


def test_writes_through_the_real_device_path_work_too(kernel):
    real = os.path.relpath(os.path.realpath(kernel.root.path(dev(VF0, "driver_override"))),
                           kernel.root.dir)
    assert real.startswith("sys/devices/")
    kernel.sysfs.write(real, "vfio-pci")
    assert kernel.device(VF0).override == "vfio-pci"


def test_drivers_autoprobe_off_stops_driver_registration_only(kernel):
    s = kernel.sysfs
    s.write(dev(VF1, "driver_override"), "mlx5_vfio_pci")
    s.write(dev(VF1, "driver/unbind"), VF1)
    s.write("sys/bus/pci/drivers_autoprobe", "0")
    assert s.read("sys/bus/pci/drivers_autoprobe") == "0"
    kernel.loader.load("mlx5_vfio_pci")
    assert drv_of(kernel, VF1) is None
    s.write("sys/bus/pci/drivers_probe", VF1)
    assert drv_of(kernel, VF1) == "mlx5_vfio_pci"


def test_the_first_registered_matching_driver_wins(kernel):
    kernel.loader.load("pci_stub")
    s = kernel.sysfs
    s.write("sys/bus/pci/drivers/pci-stub/new_id", "1af4 1041")
    s.write(dev(VIRTIO, "driver/unbind"), VIRTIO)
    s.write("sys/bus/pci/drivers_probe", VIRTIO)
    assert drv_of(kernel, VIRTIO) == "virtio-pci"   # registered before pci-stub


def test_net_interfaces_go_with_their_driver_and_come_back_down(kernel):
    s = kernel.sysfs
    s.write(dev(MGMT, "driver/unbind"), MGMT)
    assert not os.path.lexists(kernel.root.path("sys/class/net/eno1"))
    assert "eno1" not in kernel.root.path("proc/net/route").read_text()
    s.write("sys/bus/pci/drivers_probe", MGMT)
    assert s.read("sys/class/net/eno1/operstate") == "down"
    assert "eno1" not in kernel.root.path("proc/net/route").read_text()


def test_uevent_synth_write_resends_an_event(kernel, events):
    kernel.sysfs.write(dev(VF0, "uevent"), "add")
    assert [(e.action, e.address, e.driver) for e in events] == [("add", VF0, "mlx5_core")]
    assert write_error(kernel, dev(VF0, "uevent"), "bogus").errno == errno.EINVAL


def test_time_and_ops_are_accounted(kernel):
    before = kernel.time_spent
    kernel.sysfs.write(dev(VF0, "driver_override"), "x")
    assert kernel.time_spent > before
    assert kernel.ops[-1] == (("write", dev(VF0, "driver_override"), "x", 0))
