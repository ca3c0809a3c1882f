"""Writes kernel objects into a root directory the way sysfs shows them.

Both the builder (tree.py) and the simulated kernel use this, so a tree made
by the builder and a tree changed by the simulated kernel look alike.  Paths
are relative to the root; links get the relative targets sysfs gives them
(kernfs makes every sysfs symlink relative: sysfs_do_create_link_sd)."""

from __future__ import annotations

import os
import shutil
import stat
from typing import Iterable, Optional

from .catalog import ModuleInfo
from .model import (BUS_ATTRS, DRIVER_ATTRS, WRITABLE_DEVICE_ATTRS,
                    WRITE_ONLY_DEVICE_ATTRS, DiskChild, NetChild, SimDevice, rel_link)

PCI_BUS = "sys/bus/pci"
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def _mode(name: str) -> int:
    if name in WRITE_ONLY_DEVICE_ATTRS:
        return 0o200
    return 0o644 if name in WRITABLE_DEVICE_ATTRS else 0o444


class Layout:
    def __init__(self, root: str):
        self.root = os.fspath(root).rstrip("/")
        self._real_root = os.path.realpath(self.root or "/")
        self._dirs = set()
        self._inside = set()  # directories (relative) known to resolve inside the root
        self.omit = set()    # attributes this kernel lacks (OverrideMissing)

    def __repr__(self) -> str:
        return f"Layout({self.root!r})"

    # -- primitives ------------------------------------------------------
    def path(self, rel: str) -> str:
        """The real path of `rel`, whose directory must resolve inside the
        root: a tree copied from elsewhere may hold links that lead out of
        it, and the simulated kernel must never write through them.  The
        last component is never followed (O_NOFOLLOW, unlink, symlink)."""
        parent = rel.rpartition("/")[0]
        if parent not in self._inside:
            self._check_inside(rel, parent)
        return f"{self.root}/{rel}"

    def known_inside(self, dirs) -> None:
        """Directories already found to be real and inside the root (a
        device's directory, which the scan resolved): spares a realpath at
        the first write to each of thousands of devices."""
        self._inside.update(dirs)

    def _check_inside(self, rel: str, parent: str) -> None:
        from ..root import RootEscape
        name = rel.rpartition("/")[2]
        real = os.path.realpath(f"{self.root}/{parent}")
        if ".." in rel.split("/") or name in ("", ".") or not (
                real == self._real_root or real.startswith(self._real_root.rstrip("/") + "/")):
            raise RootEscape(f"{self.root}/{rel}", f"{real}/{name}", self._real_root)
        if os.path.isdir(real):
            self._inside.add(parent)

    def mkdir(self, rel: str) -> None:
        if rel in self._dirs:
            return
        os.makedirs(self.path(rel), exist_ok=True)
        self._dirs.add(rel)

    def write(self, rel: str, text: str, mode: int = 0o644) -> None:
        """Create or replace a file.  The mode mirrors sysfs's (0444 read-only,
        0200 write-only) so a listing looks right; git keeps none of it."""
        path = self.path(rel)
        if not text:
            try:
                os.mknod(path, mode | stat.S_IFREG)   # one syscall, not three
                return
            except FileExistsError:
                pass
        try:
            fd = os.open(path, _FLAGS, mode)
        except PermissionError:   # rewriting a 0444 file when not root
            os.chmod(path, 0o644)
            fd = os.open(path, _FLAGS, mode)
            os.chmod(path, mode)
        except OSError as e:      # a link (ELOOP) or a directory in the tree
            from ..root import LayoutError
            raise LayoutError(f"{path}: cannot write: {e.strerror or e}") from None
        try:
            if text:
                os.write(fd, text.encode())
        finally:
            os.close(fd)

    def symlink(self, link: str, target: str) -> None:
        path = self.path(link)
        try:
            try:
                os.symlink(rel_link(link, target), path)
            except FileExistsError:
                os.unlink(path)
                os.symlink(rel_link(link, target), path)
        except OSError as e:      # a directory where the link goes, like write()
            from ..root import LayoutError
            raise LayoutError(f"{path}: cannot link: {e.strerror or e}") from None

    def unlink(self, rel: str) -> None:
        try:
            os.unlink(self.path(rel))
        except FileNotFoundError:
            pass

    def rmtree(self, rel: str) -> None:
        path = self.path(rel)
        if os.path.islink(path):
            os.unlink(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
        prefix = rel + "/"
        self._dirs = {d for d in self._dirs if d != rel and not d.startswith(prefix)}
        self._inside = {d for d in self._inside if d != rel and not d.startswith(prefix)}

    # -- the bus -----------------------------------------------------------
    def bus(self) -> None:
        for sub in ("devices", "drivers"):
            self.mkdir(f"{PCI_BUS}/{sub}")
        for name, text in BUS_ATTRS.items():
            self.write(f"{PCI_BUS}/{name}", text, 0o200 if name in ("drivers_probe", "rescan") else 0o644)
        self.mkdir("sys/kernel/iommu_groups")
        self.mkdir("sys/module")

    def root_bus(self, name: str) -> None:
        """sys/devices/pci0000:00, the host bridge's root bus."""
        self.mkdir(f"sys/devices/{name}")
        self.write(f"sys/devices/{name}/uevent", "")

    def pci_bus(self, bus: str, where: str) -> None:
        """The pci_bus class device of bus "0000:01" under the bridge (or
        root) that owns it, and its sys/class/pci_bus link."""
        base = f"sys/{where}/pci_bus/{bus}"
        self.mkdir(base)
        self.write(f"{base}/cpulistaffinity", "0-63\n", 0o444)
        self.write(f"{base}/rescan", "", 0o200)
        self.mkdir("sys/class/pci_bus")
        self.symlink(f"sys/class/pci_bus/{bus}", base)

    # -- devices -----------------------------------------------------------
    def device(self, d: SimDevice) -> None:
        base = d.sys_dir
        self.mkdir(base)
        for name, text in d.attributes().items():
            if name not in self.omit:
                self.write(f"{base}/{name}", text, _mode(name))
        self.symlink(f"{base}/subsystem", PCI_BUS)
        self.symlink(f"{PCI_BUS}/devices/{d.address}", base)
        if d.iommu_group is not None:
            self.group_member(d)
        if d.physfn:
            # VFs are siblings of their PF (virtfn_add_bus() hangs any extra
            # bus off the PF's parent), so physfn is "../PF".
            self.symlink(f"{base}/physfn", f"{base.rsplit('/', 1)[0]}/{d.physfn}")
        if d.driver:
            self.link_driver(d)

    def attr(self, d: SimDevice, name: str) -> None:
        """Rewrite one attribute from the model."""
        text = d.attributes().get(name)
        if text is not None and name not in self.omit:
            self.write(f"{d.sys_dir}/{name}", text, _mode(name))

    def group_member(self, d: SimDevice) -> None:
        g = f"sys/kernel/iommu_groups/{d.iommu_group}"
        if g not in self._dirs:
            self.mkdir(f"{g}/devices")
            self.write(f"{g}/type", "DMA-FQ\n", 0o644)
            self.write(f"{g}/reserved_regions",
                       "0x00000000fee00000 0x00000000feefffff msi\n", 0o444)
        self.symlink(f"{g}/devices/{d.address}", d.sys_dir)
        self.symlink(f"{d.sys_dir}/iommu_group", g)

    def remove_device(self, d: SimDevice) -> None:
        self.unlink(f"{PCI_BUS}/devices/{d.address}")
        if d.driver:
            self.unlink(f"{PCI_BUS}/drivers/{d.driver}/{d.address}")
        if d.iommu_group is not None:
            g = f"sys/kernel/iommu_groups/{d.iommu_group}"
            self.unlink(f"{g}/devices/{d.address}")
            if not os.listdir(self.path(f"{g}/devices")):
                self.rmtree(g)   # iommu_group_release() drops an empty group
        self.rmtree(d.sys_dir)

    def link_driver(self, d: SimDevice) -> None:
        self.symlink(f"{d.sys_dir}/driver", f"{PCI_BUS}/drivers/{d.driver}")
        self.symlink(f"{PCI_BUS}/drivers/{d.driver}/{d.address}", d.sys_dir)

    def unlink_driver(self, d: SimDevice, driver: str) -> None:
        self.unlink(f"{d.sys_dir}/driver")
        self.unlink(f"{PCI_BUS}/drivers/{driver}/{d.address}")

    def virtfn(self, pf: SimDevice, index: int, vf: Optional[SimDevice]) -> None:
        link = f"{pf.sys_dir}/virtfn{index}"
        if vf is None:
            self.unlink(link)
        else:
            self.symlink(link, vf.sys_dir)

    # -- drivers and modules ---------------------------------------------
    def module(self, name: str) -> None:
        base = f"sys/module/{name}"
        self.mkdir(base)
        self.write(f"{base}/initstate", "live\n", 0o444)
        self.write(f"{base}/refcnt", "0\n", 0o444)

    def remove_module(self, name: str) -> None:
        self.rmtree(f"sys/module/{name}")

    def driver(self, m: ModuleInfo) -> None:
        base = f"{PCI_BUS}/drivers/{m.driver}"
        self.mkdir(base)
        for name in DRIVER_ATTRS:
            self.write(f"{base}/{name}", "", 0o200)
        if not m.builtin:
            self.module(m.name)
            self.symlink(f"{base}/module", f"sys/module/{m.name}")
            self.mkdir(f"sys/module/{m.name}/drivers")
            self.symlink(f"sys/module/{m.name}/drivers/pci:{m.driver}", base)

    def remove_driver(self, m: ModuleInfo) -> None:
        self.rmtree(f"{PCI_BUS}/drivers/{m.driver}")
        if not m.builtin:
            self.unlink(f"sys/module/{m.name}/drivers/pci:{m.driver}")

    def vfio_node(self, group: int, present: bool) -> None:
        """/dev/vfio/GROUP (a plain file here: no mknod in a temp dir)."""
        if present:
            self.mkdir("dev/vfio")
            self.write(f"dev/vfio/{group}", "", 0o600)
        else:
            self.unlink(f"dev/vfio/{group}")

    # -- what host drivers create under a device ---------------------------
    def net(self, d: SimDevice, n: NetChild) -> None:
        base = f"{d.sys_dir}/net/{n.ifname}"
        self.mkdir(base)
        self.write(f"{base}/uevent", f"INTERFACE={n.ifname}\nIFINDEX={n.ifindex}\n")
        self.write(f"{base}/operstate", "up\n" if n.up else "down\n", 0o444)
        self.write(f"{base}/flags", "0x1003\n" if n.up else "0x1002\n", 0o644)
        self.write(f"{base}/address", n.mac + "\n", 0o444)
        self.write(f"{base}/ifindex", f"{n.ifindex}\n", 0o444)
        self.mkdir("sys/class/net")
        self.symlink(f"sys/class/net/{n.ifname}", base)

    def remove_net(self, d: SimDevice, n: NetChild) -> None:
        self.unlink(f"sys/class/net/{n.ifname}")
        self.rmtree(f"{d.sys_dir}/net/{n.ifname}")
        self.rmtree(f"{d.sys_dir}/net")

    def disk(self, d: SimDevice, k: DiskChild) -> None:
        ctrl = f"{d.sys_dir}/nvme/{k.ctrl}"
        self.mkdir(ctrl)
        self.write(f"{ctrl}/uevent", f"MAJOR=241\nMINOR={int(k.ctrl[4:] or 0)}\n")
        self.write(f"{ctrl}/dev", f"{241}:{int(k.ctrl[4:] or 0)}\n", 0o444)
        self.write(f"{ctrl}/state", "live\n", 0o444)
        for name, minor, part in self._block_nodes(k):
            path = f"{ctrl}/{k.name}" + (f"/{name}" if part else "")
            self.mkdir(f"{path}/holders")
            self.write(f"{path}/uevent", f"MAJOR={k.major}\nMINOR={minor}\nDEVNAME={name}\n")
            self.write(f"{path}/dev", f"{k.major}:{minor}\n", 0o444)
            if part:
                self.write(f"{path}/partition", f"{part}\n", 0o444)
            self.mkdir("sys/class/block")
            self.mkdir("sys/dev/block")
            self.symlink(f"sys/class/block/{name}", path)
            self.symlink(f"sys/dev/block/{k.major}:{minor}", path)
        self.mkdir("sys/block")
        self.symlink(f"sys/block/{k.name}", f"{ctrl}/{k.name}")
        if k.holder:
            hpath = f"sys/devices/virtual/block/{k.holder}"
            self.mkdir(f"{hpath}/slaves")
            self.write(f"{hpath}/dev", "254:0\n", 0o444)
            self.symlink(f"sys/block/{k.holder}", hpath)
            holder_part = f"{ctrl}/{k.name}/{k.name}p3"
            self.symlink(f"{holder_part}/holders/{k.holder}", hpath)
            self.symlink(f"{hpath}/slaves/{k.name}p3", holder_part)

    def remove_disk(self, d: SimDevice, k: DiskChild) -> None:
        for name, minor, _ in self._block_nodes(k):
            self.unlink(f"sys/class/block/{name}")
            self.unlink(f"sys/dev/block/{k.major}:{minor}")
        self.unlink(f"sys/block/{k.name}")
        if k.holder:
            self.unlink(f"sys/devices/virtual/block/{k.holder}/slaves/{k.name}p3")
        self.rmtree(f"{d.sys_dir}/nvme/{k.ctrl}")
        self.rmtree(f"{d.sys_dir}/nvme")

    @staticmethod
    def _block_nodes(k: DiskChild):
        """(name, minor, partition number or 0): the disk and 3 partitions."""
        yield k.name, k.minor, 0
        for p in (1, 2, 3):
            yield f"{k.name}p{p}", k.minor + p, p

    def console(self, d: SimDevice, fb: int = 0) -> None:
        base = f"{d.sys_dir}/graphics/fb{fb}"
        self.mkdir(base)
        self.write(f"{base}/name", "mgag200drmfb\n", 0o444)
        self.mkdir("sys/class/graphics")
        self.symlink(f"sys/class/graphics/fb{fb}", base)
        for n, (name, bound) in enumerate((("(S) dummy device", 0),
                                           ("(M) frame buffer device", 1))):
            vt = f"sys/devices/virtual/vtconsole/vtcon{n}"
            self.mkdir(vt)
            self.write(f"{vt}/name", name + "\n", 0o444)
            self.write(f"{vt}/bind", f"{bound}\n", 0o644)
            self.mkdir("sys/class/vtconsole")
            self.symlink(f"sys/class/vtconsole/vtcon{n}", vt)

    def remove_console(self, d: SimDevice, fb: int = 0) -> None:
        self.unlink(f"sys/class/graphics/fb{fb}")
        self.rmtree(f"{d.sys_dir}/graphics")
        self.write("sys/devices/virtual/vtconsole/vtcon1/bind", "0\n", 0o644)

    # -- proc ------------------------------------------------------------
    def proc_net(self, nets: Iterable[NetChild]) -> None:
        """proc/net/route and ipv6_route: a default route and a subnet
        route for each routed interface, as fib_route_seq_show prints them."""
        self.mkdir("proc/net")
        route = ["Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"]
        v6 = []
        for n in nets:
            if not (n.up and n.routed):
                continue
            octet = f"{n.ifindex:02X}"
            route.append(f"{n.ifname}\t00000000\t01{octet}000A\t0003\t0\t0\t100\t00000000\t0\t0\t0")
            route.append(f"{n.ifname}\t00{octet}000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0")
            v6.append(f"fe800000000000000000000000000000 40 {'0' * 32} 00 {'0' * 32} "
                      f"00000100 00000001 00000000 00000001 {n.ifname:>8}")
        v6.append(f"{'0' * 31}1 80 {'0' * 32} 00 {'0' * 32} 00000000 00000002 00000000 00200001       lo")
        self.write("proc/net/route", "\n".join(route) + "\n", 0o444)
        self.write("proc/net/ipv6_route", "\n".join(v6) + "\n", 0o444)

    def proc_mounts(self, disks: Iterable[DiskChild]) -> None:
        """proc/self/mountinfo and proc/swaps (show_mountinfo, swap_show)."""
        self.mkdir("proc/self")
        info = ["22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
                "23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw"]
        swaps = ["Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"]
        mount_id = 28
        for k in disks:
            if k.mounted_at:
                parent = 1 if k.mounted_at == "/" else 28
                info.append(f"{mount_id} {parent} {k.major}:{k.minor + 2} / {k.mounted_at} "
                            f"rw,relatime shared:1 - ext4 /dev/{k.name}p2 rw,errors=remount-ro")
                info.append(f"{mount_id + 1} {mount_id} {k.major}:{k.minor + 1} / "
                            f"{k.mounted_at.rstrip('/')}/boot/efi rw,relatime shared:2 - vfat "
                            f"/dev/{k.name}p1 rw,fmask=0077,dmask=0077")
                mount_id += 2
            if k.swap:
                swaps.append(f"/dev/{k.name}p3                         partition\t8388604\t\t0\t\t-2")
        self.write("proc/self/mountinfo", "\n".join(info) + "\n", 0o444)
        self.write("proc/swaps", "\n".join(swaps) + "\n", 0o444)
