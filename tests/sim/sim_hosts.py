"""Small hosts for the simulator's own tests."""

from __future__ import annotations

import pytest

from vfio_flavourd.sim import HostBuilder

MGMT = "0000:02:00.0"        # igb, eno1 up and routed
DISK = "0000:03:00.0"        # NVMe, / mounted
E1000E = "0000:04:00.0"      # e1000e, no IOMMU group
VIRTIO = "0000:05:00.0"      # virtio-net on virtio-pci
VGA = "0000:06:00.0"         # boot VGA, console
MF0, MF1 = "0000:07:00.0", "0000:07:00.1"   # two functions sharing group 40
PF = "0000:3b:00.0"          # ConnectX-6 Dx PF
VF0, VF1 = "0000:3b:00.2", "0000:3b:00.3"
QAT_PF = "0000:6b:00.0"


def small_host(root, **kw) -> HostBuilder:
    return (HostBuilder(root, **kw)
            .host_bridge("0000:00:00.0")
            .bridge("0000:00:01.0", secondary=0x02)
            .device(MGMT, 0x8086, 0x1521, 0x020000, subsys=(0x8086, 0x0001), driver="igb")
            .netdev(MGMT, "eno1", up=True, routed=True)
            .bridge("0000:00:02.0", secondary=0x03)
            .device(DISK, 0x144D, 0xA808, 0x010802, subsys=(0x144D, 0xA801), driver="nvme")
            .nvme_disk(DISK, mounted_at="/", swap=True)
            .bridge("0000:00:03.0", secondary=0x04)
            .device(E1000E, 0x8086, 0x10D3, 0x020000, subsys=(0x8086, 0xA01F), driver="e1000e",
                    iommu_group=None)
            .bridge("0000:00:04.0", secondary=0x05)
            .device(VIRTIO, 0x1AF4, 0x1041, 0x020000, subsys=(0x1AF4, 0x1100), driver="virtio_pci")
            .bridge("0000:00:05.0", secondary=0x06)
            .device(VGA, 0x102B, 0x0536, 0x030000, subsys=(0x15D9, 0x1B95), driver="mgag200")
            .console(VGA)
            .bridge("0000:00:06.0", secondary=0x07)
            .device(MF0, 0x8086, 0x10D3, 0x020000, iommu_group=40)
            .device(MF1, 0x8086, 0x10D3, 0x020000, iommu_group=40)
            .bridge("0000:3a:00.0", secondary=0x3B, numa_node=1)
            .sriov_pf(PF, 0x15B3, 0x101D, 0x020000, vf_device=0x101E, totalvfs=8, numvfs=2,
                      driver="mlx5_core", vf_driver="mlx5_core", subsys=(0x15B3, 0x0016))
            .bridge("0000:6a:00.0", secondary=0x6B, numa_node=1)
            .sriov_pf(QAT_PF, 0x8086, 0x4940, 0x0B4000, vf_device=0x4941, totalvfs=16,
                      driver="qat_4xxx", offset=1))


# Fixtures live here, not in a conftest.py: the project's tests import
# their own conftest by name, and a second module called conftest on
# sys.path would shadow it.  Test modules import these explicitly.
@pytest.fixture(name="kernel")
def kernel_fixture(tmp_path):
    return small_host(tmp_path).kernel()


@pytest.fixture(name="events")
def events_fixture(kernel):
    seen = []
    kernel.subscribe(seen.append)
    return seen
