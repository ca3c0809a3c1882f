"""Reading device snapshots: ids from modalias, only the attributes there."""

import os

import pytest

from vfio_flavourd import pci
from vfio_flavourd.root import Root
from vfio_flavourd.sysfs import Sysfs

from tiny_sysfs import Tree

ADDR = "0000:3b:00.2"


def test_ids_come_back_from_the_kernels_modalias():
    text = pci.make_modalias(0x15B3, 0x101E, 0x15B3, 0x0016, 0x020000)
    assert text == "pci:v000015B3d0000101Esv000015B3sd00000016bc02sc00i00"
    assert pci.ids_from_modalias(text) == (0x15B3, 0x101E, 0x15B3, 0x0016, 0x020000)


@pytest.mark.parametrize("text", [None, "", "pci:v000015B3d0000101E", "usb:v1D6Bp0002d0606",
                                  "pci:v000015B3d0000101Esv000015B3sd00000016bc02sc00iXX",
                                  "pci:v000015B3x0000101Esv000015B3sd00000016bc02sc00i00"])
def test_anything_else_is_not_a_modalias(text):
    assert pci.ids_from_modalias(text) is None


def test_snapshot_from_modalias_matches_the_attribute_files(tmp_path):
    Tree(tmp_path).driver("mlx5_core", "mlx5_core").device(
        ADDR, 0x15B3, 0x101E, 0x020000, sv=0x15B3, sd=0x0016, driver="mlx5_core")
    sysfs = Sysfs(Root(tmp_path))
    with_modalias = pci.read_device(sysfs, ADDR)
    os.unlink(tmp_path / "sys/bus/pci/devices" / ADDR / "modalias")
    from_files = pci.read_device(sysfs, ADDR)
    assert with_modalias == from_files
    assert (from_files.vendor, from_files.device, from_files.subsystem_device,
            from_files.class_code, from_files.driver, from_files.driver_module) == (
        0x15B3, 0x101E, 0x0016, 0x020000, "mlx5_core", "mlx5_core")


def test_a_device_without_ids_is_unknown(tmp_path):
    (tmp_path / "sys/bus/pci/devices" / ADDR).mkdir(parents=True)
    with pytest.raises(pci.UnknownDevice):
        pci.read_device(Sysfs(Root(tmp_path)), ADDR)


@pytest.mark.parametrize("text, ok", [("0000:3b:00.2", True), ("10000:3b:00.7", True),
                                      ("0000:3b:00.8", False), ("000:3b:00.2", False),
                                      ("0000:3B:00.2", False), ("0000:3b:00.2\n", False),
                                      ("0000:3b:00:2", False), ("", False)])
def test_is_address(text, ok):
    assert pci.is_address(text) is ok
    assert bool(pci.ADDRESS_RE.match(text.rstrip("\n"))) is (ok or text == "0000:3b:00.2\n")


def test_normalise_address():
    assert pci.normalise_address(" 3B:00.1 ") == "0000:3b:00.1"
    with pytest.raises(pci.UsageError):
        pci.normalise_address("3b:00")


def _mlx5(tmp_path, **kw):
    Tree(tmp_path).driver("mlx5_core", "mlx5_core").device(
        ADDR, 0x15B3, 0x101E, 0x020000, sv=0x15B3, sd=0x0016, driver="mlx5_core", **kw)
    return Sysfs(Root(tmp_path))


def test_the_snapshot_read_from_the_directory_is_what_each_path_says(tmp_path):
    sysfs = _mlx5(tmp_path)
    base = f"sys/bus/pci/devices/{ADDR}"
    with open(tmp_path / base / "driver_override", "w") as f:
        f.write("vfio-pci\n")
    dev = pci.read_device(sysfs, ADDR)
    assert (dev.modalias, dev.driver, dev.driver_override, dev.iommu_group, dev.physfn) == (
        sysfs.read(f"{base}/modalias"), sysfs.link(f"{base}/driver"), "vfio-pci",
        sysfs.link(f"{base}/iommu_group"), sysfs.link(f"{base}/physfn"))
    assert pci.read_device(sysfs, ADDR, override=False).driver_override is None


def test_an_attribute_that_is_a_fifo_is_an_error_naming_its_whole_path(tmp_path):
    sysfs = _mlx5(tmp_path)
    path = tmp_path / "sys/bus/pci/devices" / ADDR / "modalias"
    os.unlink(path)
    os.mkfifo(path)
    with pytest.raises(pci.SysfsError) as e:
        pci.read_device(sysfs, ADDR)        # O_NONBLOCK: never waits for a writer
    assert f"sys/bus/pci/devices/{ADDR}/modalias" in str(e.value)
    assert list(pci.scan(sysfs, warn=lambda w: None)) == []


def test_a_device_directory_in_a_link_loop_is_an_error_naming_it(tmp_path):
    devices = tmp_path / "sys/bus/pci/devices"
    devices.mkdir(parents=True)
    os.symlink(ADDR, devices / ADDR)
    with pytest.raises(pci.SysfsError) as e:
        pci.read_device(Sysfs(Root(tmp_path)), ADDR)
    assert f"sys/bus/pci/devices/{ADDR}" in str(e.value)
