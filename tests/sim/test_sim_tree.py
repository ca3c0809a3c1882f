import os
import time

import pytest

from vfio_flavourd.modprobe import driver_names, module_of_driver
from vfio_flavourd.root import Root
from vfio_flavourd.sim import HostBuilder, SimKernel
from vfio_flavourd.sysfs import Sysfs

from sim_hosts import DISK, E1000E, MGMT, PF, QAT_PF, VF0, VF1, VGA, VIRTIO, small_host


@pytest.fixture
def root(tmp_path):
    small_host(tmp_path).build()
    return tmp_path


def link(root, rel):
    return os.readlink(root / rel)


def read(root, rel):
    return (root / rel).read_text()


def test_bus_links_point_into_the_nested_device_directories(root):
    assert (link(root, f"sys/bus/pci/devices/{PF}")
            == f"../../../devices/pci0000:3a/0000:3a:00.0/{PF}")
    assert (link(root, f"sys/bus/pci/devices/{MGMT}")
            == f"../../../devices/pci0000:00/0000:00:01.0/{MGMT}")
    assert link(root, "sys/bus/pci/devices/0000:00:00.0") == "../../../devices/pci0000:00/0000:00:00.0"
    assert os.path.isdir(root / f"sys/bus/pci/devices/{PF}")


def test_device_links_have_the_kernels_relative_targets(root):
    dev = f"sys/devices/pci0000:3a/0000:3a:00.0/{PF}"
    assert link(root, f"{dev}/subsystem") == "../../../../bus/pci"
    assert link(root, f"{dev}/driver") == "../../../../bus/pci/drivers/mlx5_core"
    group = link(root, f"{dev}/iommu_group")
    assert group.startswith("../../../../kernel/iommu_groups/")
    n = group.rsplit("/", 1)[1]
    assert (link(root, f"sys/kernel/iommu_groups/{n}/devices/{PF}")
            == f"../../../../devices/pci0000:3a/0000:3a:00.0/{PF}")
    assert link(root, f"{dev}/virtfn0") == f"../{VF0}"
    assert link(root, f"{dev}/virtfn1") == f"../{VF1}"
    assert link(root, f"sys/bus/pci/devices/{VF0}/physfn") == f"../{PF}"
    assert (link(root, f"sys/bus/pci/drivers/mlx5_core/{PF}")
            == f"../../../../devices/pci0000:3a/0000:3a:00.0/{PF}")
    for rel in (f"{dev}/driver", f"{dev}/subsystem", f"{dev}/iommu_group", f"{dev}/virtfn0",
                f"sys/bus/pci/devices/{VF0}/physfn"):
        assert os.path.isdir(root / rel), rel


def test_drivers_and_modules_link_both_ways(root):
    assert link(root, "sys/bus/pci/drivers/mlx5_core/module") == "../../../../module/mlx5_core"
    assert (link(root, "sys/module/mlx5_core/drivers/pci:mlx5_core")
            == "../../../bus/pci/drivers/mlx5_core")
    assert link(root, "sys/bus/pci/drivers/4xxx/module") == "../../../../module/qat_4xxx"
    for f in ("bind", "unbind", "new_id", "remove_id"):
        assert (root / f"sys/bus/pci/drivers/igb/{f}").is_file()
    # built in: the driver exists, without a module link
    assert (root / "sys/bus/pci/drivers/pcieport").is_dir()
    assert not (root / "sys/bus/pci/drivers/pcieport/module").exists()
    # dependencies are loaded modules without PCI drivers
    assert (root / "sys/module/nvme_core").is_dir()
    s = Sysfs(Root(root))
    assert driver_names(s, "qat_4xxx") == ["4xxx"]
    assert driver_names(s, "qat-4xxx") == ["4xxx"]
    assert driver_names(s, "vfio_pci") == []
    assert module_of_driver(s, "4xxx") == "qat_4xxx"


def test_attributes_read_like_the_kernels(root):
    s = Sysfs(Root(root))
    base = f"sys/bus/pci/devices/{PF}"
    assert s.read(f"{base}/vendor") == "0x15b3"
    assert s.read(f"{base}/device") == "0x101d"
    assert s.read(f"{base}/subsystem_vendor") == "0x15b3"
    assert s.read(f"{base}/subsystem_device") == "0x0016"
    assert s.read(f"{base}/class") == "0x020000"
    assert s.read(f"{base}/revision") == "0x00"
    assert s.read(f"{base}/modalias") == "pci:v000015B3d0000101Dsv000015B3sd00000016bc02sc00i00"
    assert s.read(f"{base}/driver_override") == "(null)"
    assert s.read(f"{base}/numa_node") == "1"
    assert s.read(f"{base}/sriov_totalvfs") == "8"
    assert s.read(f"{base}/sriov_numvfs") == "2"
    assert s.read(f"{base}/sriov_offset") == "2"
    assert s.read(f"{base}/sriov_stride") == "1"
    assert s.read(f"{base}/sriov_vf_device") == "101e"
    assert s.read(f"{base}/sriov_drivers_autoprobe") == "1"
    assert s.read(f"sys/bus/pci/devices/{VF0}/modalias") == (
        "pci:v000015B3d0000101Esv000015B3sd00000016bc02sc00i00")
    assert s.read(f"sys/bus/pci/devices/{VF0}/sriov_totalvfs") is None
    assert s.read(f"sys/bus/pci/devices/{VGA}/boot_vga") == "1"
    assert s.read(f"sys/bus/pci/devices/{VIRTIO}/boot_vga") is None
    assert s.read(f"sys/bus/pci/devices/{VF0}/numa_node") == "1"
    assert s.read(f"sys/bus/pci/devices/{MGMT}/numa_node") == "0"


def test_uevent_file_matches_pci_uevent(root):
    assert read(root, f"sys/bus/pci/devices/{VF0}/uevent") == (
        "DRIVER=mlx5_core\nPCI_CLASS=20000\nPCI_ID=15B3:101E\nPCI_SUBSYS_ID=15B3:0016\n"
        f"PCI_SLOT_NAME={VF0}\nMODALIAS=pci:v000015B3d0000101Esv000015B3sd00000016bc02sc00i00\n")


def test_files_outside_sys(root):
    assert read(root, "proc/sys/kernel/osrelease") == "6.12.0-amd64\n"
    assert "intel_iommu=on" in read(root, "proc/cmdline")
    assert Root(root).kernel_release == "6.12.0-amd64"
    alias = Root(root).modules_alias().read_text()
    assert "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n" in alias
    assert read(root, "sys/bus/pci/drivers_autoprobe") == "1\n"


def test_iommu_groups_and_their_sharing(root):
    groups = {}
    for n in os.listdir(root / "sys/kernel/iommu_groups"):
        groups[int(n)] = sorted(os.listdir(root / f"sys/kernel/iommu_groups/{n}/devices"))
    assert groups[40] == ["0000:07:00.0", "0000:07:00.1"]
    assert not (root / f"sys/bus/pci/devices/{E1000E}/iommu_group").exists()
    assert all(len(v) == 1 for k, v in groups.items() if k != 40)
    assert read(root, "sys/kernel/iommu_groups/40/type") == "DMA-FQ\n"


def test_guard_children(root):
    mgmt = f"sys/bus/pci/devices/{MGMT}"
    assert read(root, f"{mgmt}/net/eno1/operstate") == "up\n"
    assert link(root, "sys/class/net/eno1") == (
        f"../../devices/pci0000:00/0000:00:01.0/{MGMT}/net/eno1")
    route = read(root, "proc/net/route").splitlines()
    assert route[0].startswith("Iface\tDestination\tGateway")
    assert any(ln.startswith("eno1\t00000000\t") for ln in route)
    assert "eno1" in read(root, "proc/net/ipv6_route")
    ns = f"sys/devices/pci0000:00/0000:00:02.0/{DISK}/nvme/nvme0/nvme0n1"
    assert link(root, "sys/block/nvme0n1") == f"../devices/pci0000:00/0000:00:02.0/{DISK}/nvme/nvme0/nvme0n1"
    assert read(root, f"{ns}/dev") == "259:0\n"
    assert read(root, f"{ns}/nvme0n1p2/dev") == "259:2\n"
    assert (root / "sys/block/nvme0n1/holders").is_dir()
    mountinfo = read(root, "proc/self/mountinfo")
    assert " 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 " in mountinfo
    assert "/dev/nvme0n1p3 " in read(root, "proc/swaps")
    assert link(root, "sys/class/graphics/fb0").endswith(f"{VGA}/graphics/fb0")
    assert read(root, "sys/class/vtconsole/vtcon1/name") == "(M) frame buffer device\n"


def test_lvm_holder(tmp_path):
    (HostBuilder(tmp_path).bridge("0000:00:01.0", secondary=1)
     .device("0000:01:00.0", 0x144D, 0xA808, 0x010802, driver="nvme")
     .nvme_disk("0000:01:00.0", mounted_at=None, holder="dm-0").build())
    holders = tmp_path / "sys/block/nvme0n1/nvme0n1p3/holders"
    assert os.listdir(holders) == ["dm-0"]
    assert os.path.isdir(holders / "dm-0")
    assert os.path.isdir(tmp_path / "sys/block/dm-0/slaves/nvme0n1p3")


def test_vfs_past_the_pf_bus_get_a_bus_under_the_same_bridge(tmp_path):
    b = (HostBuilder(tmp_path).bridge("0000:00:01.0", secondary=0x10)
         .sriov_pf("0000:10:00.0", 0x15B3, 0x101D, 0x020000, vf_device=0x101E,
                   totalvfs=511, numvfs=300, offset=1, driver="mlx5_core"))
    b.build()
    last = "0000:11:05.4"   # routing id 0x1000 + 1 + 299 = 0x112c: bus 0x11, devfn 0x2c
    assert last in b.state.devices
    assert link(tmp_path, f"sys/bus/pci/devices/{last}") == (
        f"../../../devices/pci0000:00/0000:00:01.0/{last}")
    assert link(tmp_path, f"sys/bus/pci/devices/{last}/physfn") == "../0000:10:00.0"
    assert link(tmp_path, "sys/class/pci_bus/0000:11") == (
        "../../devices/pci0000:00/0000:00:01.0/pci_bus/0000:11")


def test_no_iommu_means_no_groups(tmp_path):
    HostBuilder(tmp_path, iommu=False).device("0000:00:02.0", 0x8086, 0x10D3, 0x020000).build()
    assert not (tmp_path / "sys/bus/pci/devices/0000:00:02.0/iommu_group").exists()
    assert os.listdir(tmp_path / "sys/kernel/iommu_groups") == []


def test_builder_refuses_nonsense(tmp_path):
    b = HostBuilder(tmp_path).device("0000:00:02.0", 0x8086, 0x10D3, 0x020000)
    with pytest.raises(ValueError, match="declared twice"):
        b.device("0000:00:02.0", 0x8086, 0x10D3, 0x020000)
    with pytest.raises(ValueError, match="not a PCI address"):
        b.device("0000:00:2.0", 0x8086, 0x10D3, 0x020000)
    with pytest.raises(ValueError, match="boot_vga"):
        b.console("0000:00:02.0")
    with pytest.raises(ValueError, match="no such module or PCI driver"):
        b.device("0000:00:03.0", 0x8086, 0x10D3, 0x020000, driver="e1000")
    with pytest.raises(ValueError, match="sriov_totalvfs"):
        b.sriov_pf("0000:00:04.0", 0x15B3, 0x101D, 0x020000, vf_device=0x101E,
                   totalvfs=2, numvfs=3)


def test_scanning_the_tree_gives_back_the_builders_model(tmp_path):
    b = small_host(tmp_path)
    b.build()
    scanned = SimKernel(tmp_path)
    assert scanned.state.devices == b.state.devices
    assert scanned.state.bus_dirs == b.state.bus_dirs
    assert sorted(scanned.state.loaded) == sorted(b.state.loaded)
    assert scanned.device(QAT_PF).driver == "4xxx"


def big_host(root) -> HostBuilder:
    """8 PFs x 511 VFs and some GPUs: the benchmark host."""
    b = HostBuilder(root).host_bridge("0000:00:00.0")
    for i in range(8):
        sec = 0x10 + 4 * i
        b.bridge(f"0000:00:{i + 1:02x}.0", secondary=sec, numa_node=i // 4)
        b.sriov_pf(f"0000:{sec:02x}:00.0", 0x15B3, 0x101D, 0x020000, vf_device=0x101E,
                   totalvfs=511, numvfs=511, offset=1, driver="mlx5_core", vf_driver="mlx5_core")
    for j in range(4):
        b.bridge(f"0000:00:{0x10 + j:02x}.0", secondary=0x80 + j, numa_node=1)
        b.device(f"0000:{0x80 + j:02x}:00.0", 0x10DE, 0x20B5, 0x030200)
    return b


def test_a_4096_device_host_builds_and_binds_in_seconds(tmp_path):
    t0 = time.perf_counter()
    k = big_host(tmp_path).kernel()
    build = time.perf_counter() - t0
    assert len(k.devices) == 4113
    k.loader.load("mlx5_vfio_pci")
    vfs = [a for a, d in k.devices.items() if d.physfn]
    for a in vfs:
        k.sysfs.write(f"sys/bus/pci/devices/{a}/driver_override", "mlx5_vfio_pci")
        k.sysfs.write(f"sys/bus/pci/devices/{a}/driver/unbind", a)
        k.sysfs.write("sys/bus/pci/drivers_probe", a)
    assert all(k.devices[a].driver == "mlx5_vfio_pci" for a in vfs)
    assert len(os.listdir(tmp_path / "dev/vfio")) == len(vfs) + 1
    # loose bounds: they catch a quadratic slip, not a slow disk
    assert build < 120 and k.time_spent < 120, (build, k.time_spent)
