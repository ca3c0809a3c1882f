"""A declarative builder of a sysfs tree laid out the way the kernel lays it
out, under a root directory.

    root = (HostBuilder(tmp, kernel_release="6.12.0-amd64")
            .host_bridge("0000:00:00.0")
            .bridge("0000:00:01.0", secondary=0x01)
            .device("0000:01:00.0", 0x15B3, 0x101D, 0x020000, driver="mlx5_core")
            .build())

Devices on a bus that a bridge's ``secondary`` names nest under that bridge
(sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0); the others sit on their
root bus (sys/devices/pci0000:3a/0000:3a:00.0).  What you declare is what you
get: the builder does not probe; it writes a snapshot.  ``kernel()`` gives a
SimKernel over the result.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

from . import catalog as cat
from .layout import Layout
from .model import (CLASS_HOST_BRIDGE, CLASS_PCI_BRIDGE, DiskChild, NetChild,
                    SimDevice, parse_address)
from .state import HostState

AUTO = "auto"   # iommu_group: give the device a group of its own

DEFAULT_CMDLINE = ("BOOT_IMAGE=/boot/vmlinuz-{rel} root=UUID=5d1c9a43-7a6e-4c52-9d8e-0f3b2a7c1e11 "
                   "ro quiet intel_iommu=on iommu=pt")


def bus_of(address: str) -> str:
    return address[:7]


class HostBuilder:
    def __init__(self, root_dir, kernel_release: str = "6.12.0-amd64",
                 catalog=None, iommu: bool = True, cmdline: Optional[str] = None):
        self.root = os.fspath(root_dir)
        self.catalog = catalog or cat.CATALOG
        self.iommu = iommu
        self.cmdline = (cmdline or DEFAULT_CMDLINE).format(rel=kernel_release)
        self.state = HostState(kernel_release=kernel_release)
        self._next_group = 0
        self._numa = {}           # bus -> numa node of the bridge above it
        self._ifindex = 2
        self._disks = 0
        self._built = False

    def __repr__(self) -> str:
        return f"HostBuilder({self.root!r}, {len(self.state.devices)} devices)"

    # -- declarations ----------------------------------------------------
    def host_bridge(self, address: str, vendor: int = 0x8086, device: int = 0x2020,
                    numa_node: int = 0, **kw) -> "HostBuilder":
        """A host bridge function (class 0x060000) on a root bus."""
        self._numa.setdefault(bus_of(address), numa_node)
        return self.device(address, vendor, device, CLASS_HOST_BRIDGE, numa_node=numa_node, **kw)

    def bridge(self, address: str, secondary: int, vendor: int = 0x8086, device: int = 0x2030,
               numa_node: Optional[int] = None, driver: Optional[str] = "pcieport",
               **kw) -> "HostBuilder":
        """A PCI bridge / root port (class 0x060400); devices on bus
        `secondary` live in its directory."""
        self.device(address, vendor, device, CLASS_PCI_BRIDGE, numa_node=numa_node,
                    driver=driver, **kw)
        bus = f"{address[:4]}:{secondary:02x}"
        self.state.bus_dirs[bus] = self.state.devices[address].devpath
        self._numa[bus] = self.state.devices[address].numa_node
        return self

    def device(self, address: str, vendor: int, device: int, class_: int,
               subsys: Optional[Tuple[int, int]] = None, revision: int = 0,
               driver: Optional[str] = None, iommu_group=AUTO,
               numa_node: Optional[int] = None, override: Optional[str] = None,
               parent_dir: Optional[str] = None) -> "HostBuilder":
        """One PCI function.  `driver` is a module or a driver name from the
        catalog; the device is shown bound to it and its module loaded."""
        parse_address(address)
        if address in self.state.devices:
            raise ValueError(f"{address}: declared twice")
        bus = bus_of(address)
        if parent_dir is None:
            parent_dir = self._bus_dir(bus)
        if numa_node is None:
            numa_node = self._numa.get(bus, -1)
        sv, sd = subsys if subsys else (vendor, 0)
        d = SimDevice(address=address, vendor=vendor, device=device, subvendor=sv,
                      subdevice=sd, class_=class_, revision=revision,
                      devpath=f"{parent_dir}/{address}", numa_node=numa_node,
                      iommu_group=self._group(iommu_group), override=override)
        if driver:
            d.driver = self._use_driver(driver)
        self.state.devices[address] = d
        return self

    def sriov_pf(self, address: str, vendor: int, device: int, class_: int,
                 vf_device: int, totalvfs: int = 8, numvfs: int = 0,
                 vf_driver: Optional[str] = None, offset: int = 2, stride: int = 1,
                 autoprobe: bool = True, vf_iommu_group=AUTO, **kw) -> "HostBuilder":
        """An SR-IOV physical function, with `numvfs` VFs already enabled
        (each bound to `vf_driver`, or unbound)."""
        self.device(address, vendor, device, class_, **kw)
        pf = self.state.devices[address]
        pf.sriov_totalvfs, pf.sriov_offset, pf.sriov_stride = totalvfs, offset, stride
        pf.sriov_vf_device, pf.sriov_autoprobe = vf_device, autoprobe
        if numvfs > totalvfs:
            raise ValueError(f"{address}: {numvfs} VFs > sriov_totalvfs {totalvfs}")
        parent = pf.devpath.rsplit("/", 1)[0]
        for i in range(numvfs):
            vf = pf.vf_address(i)
            self.state.bus_dirs.setdefault(bus_of(vf), parent)   # virtfn_add_bus()
            self.device(vf, vendor, vf_device, class_, subsys=(pf.subvendor, pf.subdevice),
                        revision=pf.revision, driver=vf_driver, iommu_group=vf_iommu_group,
                        numa_node=pf.numa_node, parent_dir=parent)
            self.state.devices[vf].physfn = address
            pf.vfs.append(vf)
        pf.sriov_numvfs = numvfs
        return self

    def netdev(self, address: str, ifname: str, up: bool = True, routed: bool = True) -> "HostBuilder":
        """A network interface created by the device's driver; up+routed is
        what a guard must refuse to take away."""
        d = self._owned(address)
        mac = "52:54:00:%02x:%02x:%02x" % (int(address[5:7], 16), int(address[8:10], 16),
                                           int(address[11]) + 16 * len(d.nets))
        d.nets.append(NetChild(ifname, up=up, routed=routed, mac=mac, ifindex=self._ifindex))
        self._ifindex += 1
        return self

    def nvme_disk(self, address: str, name: Optional[str] = None,
                  mounted_at: Optional[str] = "/", swap: bool = False,
                  holder: Optional[str] = None) -> "HostBuilder":
        """An NVMe controller and namespace (with partitions p1-p3) under
        the device; p2 mounted at `mounted_at` (p1 at its /boot/efi), p3
        swap when `swap`, p3 under a dm device when `holder` ("dm-0")."""
        d = self._owned(address)
        n = self._disks
        self._disks += 1
        d.disks.append(DiskChild(ctrl=f"nvme{n}", name=name or f"nvme{n}n1", minor=4 * n,
                                 mounted_at=mounted_at, swap=swap, holder=holder))
        return self

    def console(self, address: str) -> "HostBuilder":
        """Make a VGA device the boot VGA with the framebuffer console on it."""
        d = self._owned(address)
        if not d.is_vga:
            raise ValueError(f"{address}: boot_vga exists only on VGA class devices")
        d.console = True
        return self

    def load(self, *modules: str) -> "HostBuilder":
        """Show modules loaded (their drivers registered) with no device bound."""
        for m in modules:
            info = cat.lookup(m, self.catalog)
            if info is None:
                raise ValueError(f"{m}: not in the catalog")
            self._load(info)
        return self

    def autoprobe(self, enabled: bool) -> "HostBuilder":
        self.state.autoprobe = enabled
        return self

    # -- output ----------------------------------------------------------
    def build(self) -> str:
        """Write the tree; returns the root directory."""
        if self._built:
            raise RuntimeError("build() called twice")
        self._built = True
        for m in self.catalog.values():
            if m.builtin:
                self._load(m)
        write_tree(self.root, self.state, self.catalog, self.cmdline)
        return self.root

    def kernel(self, **kw):
        """build() if not yet done, then a SimKernel over the tree."""
        from .kernel import SimKernel
        if not self._built:
            self.build()
        return SimKernel(self.root, catalog=self.catalog, state=self.state, **kw)

    # -- helpers ---------------------------------------------------------
    def _bus_dir(self, bus: str) -> str:
        d = self.state.bus_dirs.get(bus)
        if d is None:
            d = f"devices/pci{bus}"
            self.state.bus_dirs[bus] = d
        return d

    def _group(self, group):
        if not self.iommu or group is None:
            return None
        if group == AUTO:
            g = self._next_group
            self._next_group += 1
            return g
        self._next_group = max(self._next_group, int(group) + 1)
        return int(group)

    def _use_driver(self, name: str) -> str:
        info = cat.lookup(name, self.catalog) or cat.by_driver(name, self.catalog)
        if info is None or not info.driver:
            raise ValueError(f"{name}: no such module or PCI driver in the catalog")
        self._load(info)
        return info.driver

    def _load(self, info) -> None:
        for dep in info.deps:
            self._load(self.catalog[dep])
        if info.name not in self.state.loaded:
            self.state.loaded.append(info.name)

    def _owned(self, address: str) -> SimDevice:
        d = self.state.devices.get(address)
        if d is None:
            raise ValueError(f"{address}: declare the device first")
        if d.driver and not d.children_owner:
            d.children_owner = d.driver
        return d


def write_tree(root: str, state: HostState, catalog, cmdline: str) -> Layout:
    """Materialise a HostState under `root`."""
    lay = Layout(root)
    lay.bus()
    rel = state.kernel_release
    lay.mkdir("proc/sys/kernel")
    lay.write("proc/sys/kernel/osrelease", rel + "\n", 0o444)
    lay.write("proc/cmdline", cmdline + "\n", 0o444)
    lay.mkdir(f"lib/modules/{rel}")
    lay.write(f"lib/modules/{rel}/modules.alias", cat.modules_alias(catalog))
    lay.write(f"lib/modules/{rel}/modules.dep", cat.modules_dep(catalog))
    lay.write("sys/bus/pci/drivers_autoprobe", "1\n" if state.autoprobe else "0\n")
    for name in state.loaded:
        info = catalog[name]
        if info.driver:
            lay.driver(info)
        elif not info.builtin:
            lay.module(info.name)
    for bus, where in state.bus_dirs.items():
        if where == f"devices/pci{bus}":
            lay.root_bus(f"pci{bus}")
        lay.pci_bus(bus, where)
    vfio_groups = set()
    for d in state.devices.values():
        lay.device(d)
        info = cat.by_driver(d.driver, catalog) if d.driver else None
        if info is not None and info.vfio and d.iommu_group is not None:
            vfio_groups.add(d.iommu_group)
        for n in d.nets:
            lay.net(d, n)
        for k in d.disks:
            lay.disk(d, k)
        if d.console:
            lay.console(d)
    for d in state.devices.values():
        for i, vf in enumerate(d.vfs):
            lay.virtfn(d, i, state.devices[vf])
    if "vfio" in state.loaded:
        lay.mkdir("dev/vfio")
        lay.write("dev/vfio/vfio", "", 0o666)
    for g in sorted(vfio_groups):
        lay.vfio_node(g, True)
    nets = [n for d in state.devices.values() for n in d.nets]
    disks = [k for d in state.devices.values() for k in d.disks]
    lay.proc_net(nets)
    lay.proc_mounts(disks)
    return lay
