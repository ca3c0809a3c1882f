"""A small simulated host and a Context over it, for binding and daemon tests."""

from __future__ import annotations

import textwrap

from vfio_flavourd.context import Context
from vfio_flavourd.root import Root
from vfio_flavourd.sim import HostBuilder

MGMT = "0000:02:00.0"        # igb, up and routed: guarded
BOOT_DISK = "0000:03:00.0"   # NVMe with / on it: guarded
PF = "0000:3b:00.0"          # ConnectX-6 Dx PF, mlx5_core
VF0, VF1 = "0000:3b:00.2", "0000:3b:00.3"
E1000E = "0000:04:00.0"
VIRTIO = "0000:05:00.0"      # virtio-net 1af4:1041 on virtio-pci
VGA = "0000:06:00.0"         # boot VGA with the console


def build_host(tmp_path, **kw) -> HostBuilder:
    b = (HostBuilder(tmp_path, **kw)
         .host_bridge("0000:00:00.0")
         .bridge("0000:00:01.0", secondary=0x02)
         .device(MGMT, 0x8086, 0x1521, 0x020000, driver="igb")
         .netdev(MGMT, "eno1", up=True, routed=True)
         .bridge("0000:00:02.0", secondary=0x03)
         .device(BOOT_DISK, 0x144D, 0xA808, 0x010802, driver="nvme")
         .nvme_disk(BOOT_DISK, mounted_at="/")
         .bridge("0000:00:03.0", secondary=0x04)
         .device(E1000E, 0x8086, 0x10D3, 0x020000, subsys=(0x8086, 0xA01F), driver="e1000e")
         .bridge("0000:00:04.0", secondary=0x05)
         .device(VIRTIO, 0x1AF4, 0x1041, 0x020000, subsys=(0x1AF4, 0x1100), driver="virtio_pci")
         .bridge("0000:00:05.0", secondary=0x06)
         .device(VGA, 0x102B, 0x0534, 0x030000, driver="mgag200")
         .console(VGA)
         .bridge("0000:3a:00.0", secondary=0x3B)
         .sriov_pf(PF, 0x15B3, 0x101D, 0x020000, vf_device=0x101E, totalvfs=8, numvfs=2,
                   vf_driver="mlx5_core", driver="mlx5_core", subsys=(0x15B3, 0x0016)))
    return b


def write_policy(tmp_path, text: str):
    d = tmp_path / "etc/vfio-flavourd/policy.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / "50-test.yaml").write_text(textwrap.dedent(text))
    return d / "50-test.yaml"


def make_ctx(kernel, stderr=None) -> Context:
    ctx = Context(Root(kernel.root.dir), stderr=stderr)
    ctx.sysfs = kernel.sysfs
    ctx.loader = kernel.loader
    return ctx


def driver_of(kernel, address):
    return kernel.sysfs.link(f"sys/bus/pci/devices/{address}/driver")


def override_of(kernel, address):
    return kernel.sysfs.read(f"sys/bus/pci/devices/{address}/driver_override")
