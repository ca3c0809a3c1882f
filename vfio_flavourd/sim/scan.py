"""Read a sysfs tree (made by the builder, or copied from a machine) back
into a HostState, so a SimKernel can run over any such tree."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from ..errors import UsageError
from ..safeio import read_text
from . import catalog as cat
from .model import DiskChild, NetChild, SimDevice
from .state import HostState


def _read(path: Path) -> Optional[str]:
    """A file's text; None when it is missing, unreadable or not a regular
    file (a FIFO in a copied tree must not hang the scan)."""
    try:
        return read_text(path, "utf-8", "surrogateescape").strip()
    except OSError:
        return None


def _shown(text: str) -> str:
    """What a file held, printable: bytes that are not text show as such."""
    data = text[:40].encode("utf-8", "surrogateescape")
    try:
        return repr(data.decode("ascii"))
    except UnicodeDecodeError:
        return repr(data)


def _int(path: Path, default: int = 0, base: int = 16) -> int:
    text = _read(path)
    if not text:
        return default
    try:
        return int(text, base)
    except ValueError:
        raise UsageError(f"{path}: expected a {'hex' if base == 16 else 'decimal'} number, "
                         f"found {_shown(text)}") from None


def _link(path: Path) -> Optional[str]:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _sys_rel(root: Path, path: Path) -> str:
    """The real path of `path` relative to root/sys."""
    return os.path.relpath(os.path.realpath(path), os.path.realpath(root / "sys"))


def scan(root: Path, catalog: dict) -> HostState:
    """`catalog` gains a bare entry for each driver in the tree it does not
    know, so that devices bound to it stay bound in the model."""
    root = Path(root)
    st = HostState(kernel_release=_read(root / "proc/sys/kernel/osrelease") or "unknown")
    st.autoprobe = _read(root / "sys/bus/pci/drivers_autoprobe") != "0"
    _scan_modules(root, st, catalog)
    for link in sorted((root / "sys/class/pci_bus").glob("*")):
        where = _sys_rel(root, link)
        st.bus_dirs[link.name] = where.rsplit("/pci_bus/", 1)[0]
    routed = set()
    for line in (_read(root / "proc/net/route") or "").splitlines()[1:]:
        routed.add(line.split("\t", 1)[0])
    mounts = _mounts(root)
    swaps = _read(root / "proc/swaps") or ""
    devs = root / "sys/bus/pci/devices"
    entries = sorted(os.listdir(devs)) if devs.is_dir() else []
    for addr in entries:
        where = _sys_rel(root, devs / addr)
        if where == ".." or where.startswith("../"):
            raise UsageError(f"{devs / addr}: resolves to {os.path.realpath(devs / addr)}, "
                             f"outside the root {root}; the simulated kernel writes only "
                             "inside the tree it runs on")
        d = _device(root, devs / addr, addr)
        st.devices[addr] = d
        # trees copied without sys/class/pci_bus: a device's directory is its bus's
        st.bus_dirs.setdefault(addr[:7], d.devpath.rsplit("/", 1)[0])
        base = root / "sys" / d.devpath
        for net in sorted((base / "net").glob("*")):
            d.nets.append(NetChild(net.name, up=_read(net / "operstate") == "up",
                                   routed=net.name in routed, mac=_read(net / "address") or "",
                                   ifindex=_int(net / "ifindex", 0, 10)))
        for ctrl in sorted((base / "nvme").glob("nvme*")):
            for ns in sorted(ctrl.glob(f"{ctrl.name}n*")):
                major, minor = _dev_numbers(ns / "dev")
                holders = sorted(p.name for p in (ns / f"{ns.name}p3" / "holders").glob("*"))
                d.disks.append(DiskChild(ctrl.name, ns.name, major, minor,
                                         mounted_at=mounts.get(f"{major}:{minor + 2}"),
                                         swap=f"/dev/{ns.name}p3 " in swaps,
                                         holder=holders[0] if holders else None))
        d.console = (base / "graphics").is_dir()
        if d.nets or d.disks or d.console:
            d.children_owner = d.driver
    for d in st.devices.values():
        if d.is_pf:
            d.vfs = [_link(root / "sys" / d.devpath / f"virtfn{i}") for i in range(d.sriov_numvfs)]
            d.vfs = [v for v in d.vfs if v]
    return st


def _scan_modules(root: Path, st: HostState, catalog: dict) -> None:
    mod_dir = root / "sys/module"
    for name in sorted(os.listdir(mod_dir)) if mod_dir.is_dir() else []:
        drivers = [e[4:] for e in sorted(os.listdir(mod_dir / name / "drivers"))
                   if e.startswith("pci:")] if (mod_dir / name / "drivers").is_dir() else []
        if name not in catalog:
            if not drivers:
                continue
            catalog[name] = cat.ModuleInfo(name, drivers[0])
        st.loaded.append(name)
    drv_dir = root / "sys/bus/pci/drivers"
    known = {catalog[m].driver for m in st.loaded}
    for drv in sorted(os.listdir(drv_dir)) if drv_dir.is_dir() else []:
        if drv in known:
            continue
        info = cat.by_driver(drv, catalog)
        if info is None:
            info = catalog[drv] = cat.ModuleInfo(drv, drv, builtin=True)
        st.loaded.append(info.name)


def _mounts(root: Path) -> dict:
    """major:minor -> mount point, from proc/self/mountinfo."""
    out = {}
    for line in (_read(root / "proc/self/mountinfo") or "").splitlines():
        f = line.split()
        if len(f) > 4 and re.match(r"^\d+:\d+$", f[2]) and not f[4].endswith("/boot/efi"):
            out.setdefault(f[2], f[4])
    return out


def _device(root: Path, link: Path, addr: str) -> SimDevice:
    base = link
    d = SimDevice(
        address=addr, vendor=_int(base / "vendor"), device=_int(base / "device"),
        subvendor=_int(base / "subsystem_vendor"), subdevice=_int(base / "subsystem_device"),
        class_=_int(base / "class"), revision=_int(base / "revision"),
        devpath=_sys_rel(root, link), numa_node=_int(base / "numa_node", -1, 10),
        driver=_link(base / "driver"), physfn=_link(base / "physfn"))
    override = _read(base / "driver_override")
    d.override = None if override in (None, "(null)", "") else override
    group = _link(base / "iommu_group")
    if group is not None and not group.isdigit():
        raise UsageError(f"{base / 'iommu_group'}: links to {group!r}, not to a numbered "
                         "group under sys/kernel/iommu_groups")
    d.iommu_group = int(group) if group is not None else None
    if (base / "sriov_totalvfs").exists():
        d.sriov_totalvfs = _int(base / "sriov_totalvfs", 0, 10)
        d.sriov_numvfs = _int(base / "sriov_numvfs", 0, 10)
        d.sriov_offset = _int(base / "sriov_offset", 0, 10)
        d.sriov_stride = _int(base / "sriov_stride", 0, 10)
        d.sriov_vf_device = _int(base / "sriov_vf_device")
        d.sriov_autoprobe = _read(base / "sriov_drivers_autoprobe") != "0"
    return d


def _dev_numbers(path: Path) -> tuple:
    """MAJOR:MINOR of a block device's dev attribute."""
    text = _read(path) or "259:0"
    major, _, minor = text.partition(":")
    if not (major.isdigit() and minor.isdigit()):
        raise UsageError(f"{path}: expected MAJOR:MINOR, found {_shown(text)}")
    return int(major), int(minor)
