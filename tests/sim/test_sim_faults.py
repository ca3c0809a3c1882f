import errno

import pytest

from vfio_flavourd.errors import ModprobeError, SysfsError
from vfio_flavourd.sim import (ModprobeFails, OverrideLocked, OverrideMissing, ProbeFails,
                               UnbindBusy, Vanish, WriteFails)

from sim_hosts import MF0, MGMT, PF, QAT_PF, VF0, VF1
from sim_hosts import events_fixture, kernel_fixture  # noqa: F401  (fixtures)


def dev(a, attr):
    return f"sys/bus/pci/devices/{a}/{attr}"


def err(kernel, rel, value):
    with pytest.raises(SysfsError) as e:
        kernel.sysfs.write(rel, value)
    return e.value


def test_modprobe_fails_with_modprobes_text_and_times(kernel):
    kernel.inject(ModprobeFails("mlx5-vfio-pci", times=1))
    with pytest.raises(ModprobeError) as e:
        kernel.loader.load("mlx5_vfio_pci")
    assert str(e.value) == ("modprobe mlx5_vfio_pci: modprobe: ERROR: could not insert "
                            "'mlx5_vfio_pci': Invalid argument")
    assert "mlx5_vfio_pci" not in kernel.loaded_modules
    kernel.loader.load("mlx5_vfio_pci")          # the fault has fired its one time
    assert "mlx5_vfio_pci" in kernel.loaded_modules


def test_a_failing_dependency_fails_the_module(kernel):
    kernel.inject(ModprobeFails("vfio_pci_core", message="modprobe: ERROR: could not insert "
                                "'vfio_pci_core': Unknown symbol in module, or unknown "
                                "parameter (see dmesg)"))
    with pytest.raises(ModprobeError, match="Unknown symbol"):
        kernel.loader.load("vfio_pci")
    assert "vfio_pci" not in kernel.loaded_modules
    assert kernel.ops[-1].kind == "modprobe" and kernel.ops[-1].errno


def test_probe_fails_only_where_and_as_often_as_told(kernel):
    kernel.loader.load("mlx5_vfio_pci")
    kernel.inject(ProbeFails("mlx5_vfio_pci", address=VF0, errno=errno.ENOMEM, times=1))
    s = kernel.sysfs
    for a in (VF0, VF1):
        s.write(dev(a, "driver_override"), "mlx5_vfio_pci")
        s.write(dev(a, "driver/unbind"), a)
    assert err(kernel, "sys/bus/pci/drivers/mlx5_vfio_pci/bind", VF0).errno == errno.ENOMEM
    s.write("sys/bus/pci/drivers/mlx5_vfio_pci/bind", VF0)
    s.write("sys/bus/pci/drivers_probe", VF1)
    assert kernel.device(VF0).driver == kernel.device(VF1).driver == "mlx5_vfio_pci"
    assert kernel.dmesg == [f"mlx5_vfio_pci {VF0}: probe with driver mlx5_vfio_pci "
                            f"failed with error -12"]


def test_a_failed_host_probe_lets_the_next_driver_try(kernel):
    kernel.loader.load("pci_stub")
    kernel.sysfs.write("sys/bus/pci/drivers/pci-stub/new_id", "8086 1521")
    kernel.inject(ProbeFails("igb"))
    kernel.sysfs.write(dev(MGMT, "driver/unbind"), MGMT)
    kernel.sysfs.write("sys/bus/pci/drivers_probe", MGMT)
    assert kernel.device(MGMT).driver == "pci-stub"


def test_unbind_busy(kernel):
    kernel.inject(UnbindBusy(driver="mlx5_core", times=1))
    e = err(kernel, "sys/bus/pci/drivers/mlx5_core/unbind", VF0)
    assert e.errno == errno.EBUSY and kernel.device(VF0).driver == "mlx5_core"
    kernel.sysfs.write("sys/bus/pci/drivers/mlx5_core/unbind", VF0)
    assert kernel.device(VF0).driver is None


def test_write_fails_by_path_and_by_count(kernel):
    kernel.inject(WriteFails("*/driver_override", errno=errno.EIO, times=1),
                  WriteFails(nth=3, errno=errno.ENOSPC))
    e = err(kernel, dev(VF0, "driver_override"), "vfio-pci")
    assert str(e) == (f"sys/bus/pci/devices/{VF0}/driver_override: write of 'vfio-pci' "
                      "failed: Input/output error")
    assert kernel.device(VF0).override is None             # the store never ran
    kernel.sysfs.write(dev(VF0, "driver_override"), "vfio-pci")
    assert err(kernel, "sys/bus/pci/drivers_probe", VF0).errno == errno.ENOSPC
    kernel.sysfs.write("sys/bus/pci/drivers_probe", VF0)


@pytest.mark.parametrize("when", ["before", "after"])
def test_the_device_vanishes_around_a_write(kernel, events, when):
    kernel.inject(Vanish(VF0, at_write=2, when=when))
    kernel.sysfs.write(dev(VF0, "driver_override"), "vfio-pci")
    if when == "before":
        e = err(kernel, dev(VF0, "driver/unbind"), VF0)
        assert e.errno == errno.ENOENT
        assert str(e).endswith("cannot open for writing: No such file or directory")
    else:
        kernel.sysfs.write(dev(VF0, "driver/unbind"), VF0)
    assert VF0 not in kernel.devices
    assert ("remove", VF0) in [(e.action, e.address) for e in events]
    assert err(kernel, "sys/bus/pci/drivers_probe", VF0).errno == errno.ENODEV


def test_override_missing_on_old_kernels(kernel):
    kernel.inject(OverrideMissing())
    assert kernel.sysfs.read(dev(VF0, "driver_override")) is None
    assert not kernel.sysfs.exists(dev(VF0, "driver_override"))
    assert not kernel.sysfs.is_writable(dev(VF0, "driver_override"))
    e = err(kernel, dev(VF0, "driver_override"), "vfio-pci")
    assert str(e) == (f"sys/bus/pci/devices/{VF0}/driver_override: cannot open for writing: "
                      "No such file or directory")
    kernel.sysfs.write(f"sys/bus/pci/devices/{QAT_PF}/sriov_numvfs", "1")
    assert not kernel.sysfs.exists(dev("0000:6b:00.1", "driver_override"))


@pytest.mark.parametrize("code,text", [(errno.EACCES, "Permission denied"),
                                       (errno.EROFS, "Read-only file system")])
def test_override_locked(kernel, code, text):
    kernel.inject(OverrideLocked(address=VF0, errno=code))
    assert kernel.sysfs.read(dev(VF0, "driver_override")) == "(null)"
    assert not kernel.sysfs.is_writable(dev(VF0, "driver_override"))
    assert kernel.sysfs.is_writable(dev(VF1, "driver_override"))
    e = err(kernel, dev(VF0, "driver_override"), "vfio-pci")
    assert str(e) == f"sys/bus/pci/devices/{VF0}/driver_override: cannot open for writing: {text}"


def test_custom_and_default_probe_functions(kernel):
    kernel.loader.load("pds_vfio_pci")
    kernel.loader.load("qat_vfio_pci")
    s = kernel.sysfs
    # pds_vfio_pci refuses anything that is not a VF
    s.write(dev(MF0, "driver_override"), "pds_vfio_pci")
    assert err(kernel, "sys/bus/pci/drivers/pds_vfio_pci/bind", MF0).errno == errno.EINVAL
    # qat_vfio_pci takes a VF of a 4xxx-driven PF
    s.write(dev(QAT_PF, "sriov_numvfs"), "1")
    vf = "0000:6b:00.1"
    s.write(dev(vf, "driver_override"), "qat_vfio_pci")
    s.write("sys/bus/pci/drivers_probe", vf)
    assert kernel.device(vf).driver == "qat_vfio_pci"
    # a test can make a variant pickier, like a probe that checks the hardware
    kernel.set_probe("virtio_vfio_pci", lambda k, d: 0 if d.vendor == 0x1AF4 else errno.ENODEV)
    kernel.loader.load("virtio_vfio_pci")
    s.write(dev(MF0, "driver_override"), "virtio_vfio_pci")
    s.write("sys/bus/pci/drivers_probe", MF0)
    assert kernel.device(MF0).driver is None
    assert kernel.dmesg[-1] == (f"virtio_vfio_pci {MF0}: probe with driver virtio_vfio_pci "
                                f"rejects match -19")
    kernel.set_probe("virtio_vfio_pci", None)
    s.write("sys/bus/pci/drivers_probe", MF0)
    assert kernel.device(MF0).driver == "virtio_vfio_pci"


def test_faults_say_what_they_are():
    assert repr(ProbeFails("vfio-pci", times=2)) == "ProbeFails(times=2, driver='vfio-pci', errno=5)"
    with pytest.raises(ValueError):
        Vanish(PF, when="during")
