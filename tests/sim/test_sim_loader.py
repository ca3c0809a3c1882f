import os

import pytest

from vfio_flavourd.errors import ModprobeError
from vfio_flavourd.modprobe import ModuleLoader, driver_names

from sim_hosts import MF0, VF0
from sim_hosts import events_fixture, kernel_fixture  # noqa: F401  (fixtures)


def test_the_loader_is_a_module_loader(kernel):
    assert isinstance(kernel.loader, ModuleLoader)


def test_unknown_module_has_modprobes_text(kernel):
    with pytest.raises(ModprobeError) as e:
        kernel.loader.load("vfio_pci_nonesuch")
    assert str(e.value) == ("modprobe vfio_pci_nonesuch: modprobe: FATAL: Module "
                            "vfio_pci_nonesuch not found in directory /lib/modules/6.12.0-amd64")
    with pytest.raises(ModprobeError, match="not a valid module name"):
        kernel.loader.load("../evil")


def test_loading_registers_the_driver_and_its_dependencies(kernel):
    kernel.loader.load("vfio-pci")
    assert driver_names(kernel.sysfs, "vfio_pci") == ["vfio-pci"]
    for dep in ("vfio", "vfio_pci_core", "iommufd", "vfio_iommu_type1"):
        assert kernel.root.path(f"sys/module/{dep}").is_dir()
    assert os.readlink(kernel.root.path("sys/bus/pci/drivers/vfio-pci/module")) == (
        "../../../../module/vfio_pci")
    n = len(kernel.ops)
    kernel.loader.load("vfio_pci")                   # loaded already: nothing happens
    assert [o.kind for o in kernel.ops[n:]] == ["modprobe"]


def test_loading_a_variant_loads_its_host_driver_too(tmp_path):
    from vfio_flavourd.sim import HostBuilder
    k = (HostBuilder(tmp_path).bridge("0000:00:01.0", secondary=1)
         .device("0000:01:00.0", 0x15B3, 0x101D, 0x020000).kernel())
    k.loader.load("mlx5_vfio_pci")
    assert k.loaded_modules.index("mlx5_core") < k.loaded_modules.index("mlx5_vfio_pci")
    assert k.device("0000:01:00.0").driver == "mlx5_core"


def test_unloading(kernel):
    kernel.loader.load("vfio_pci")
    kernel.sysfs.write(f"sys/bus/pci/devices/{MF0}/driver_override", "vfio-pci")
    kernel.sysfs.write("sys/bus/pci/drivers_probe", MF0)
    with pytest.raises(ModprobeError, match=r"^modprobe vfio_pci_core: modprobe: FATAL: "
                                            r"Module vfio_pci_core is in use\.$"):
        kernel.loader.unload("vfio_pci_core")
    kernel.loader.unload("vfio_pci")
    assert kernel.device(MF0).driver is None
    assert not kernel.root.path("sys/bus/pci/drivers/vfio-pci").exists()
    assert not kernel.root.path("sys/module/vfio_pci").exists()
    assert not kernel.root.path(f"dev/vfio/{kernel.device(MF0).iommu_group}").exists()
    with pytest.raises(ModprobeError, match="Module vfio_pci is not in kernel."):
        kernel.loader.unload("vfio_pci")
    with pytest.raises(ModprobeError, match="Module pcieport is builtin."):
        kernel.rmmod("pcieport")


def test_unloading_a_host_driver_unbinds_its_devices(kernel, events):
    kernel.rmmod("mlx5_core")
    assert kernel.device("0000:3b:00.0").driver is None
    assert VF0 not in kernel.devices       # the PF driver's remove disabled SR-IOV
    assert ("unbind", VF0) in [(e.action, e.address) for e in events]
