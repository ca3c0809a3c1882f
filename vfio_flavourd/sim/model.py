"""The simulator's in-memory picture of one PCI function, and the text of
the attributes the kernel derives from it (drivers/pci/pci-sysfs.c,
pci_uevent() in drivers/pci/pci-driver.c)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

ADDRESS_RE = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$")

# Class codes (24 bit) the simulator treats specially.
CLASS_HOST_BRIDGE = 0x060000
CLASS_PCI_BRIDGE = 0x060400
CLASS_VGA = 0x030000


def parse_address(address: str):
    """(domain, bus, device, function) of "dddd:bb:dd.f"; ValueError if malformed."""
    m = ADDRESS_RE.match(address)
    if not m:
        raise ValueError(f"not a PCI address: {address!r}")
    dom, bus, slot, fn = (int(g, 16) for g in m.groups())
    if slot > 0x1F:
        raise ValueError(f"not a PCI address: {address!r}")
    return dom, bus, slot, fn


def routing_id(address: str) -> int:
    dom, bus, slot, fn = parse_address(address)
    return (dom << 16) | (bus << 8) | (slot << 3) | fn


def address_of(rid: int) -> str:
    return f"{rid >> 16:04x}:{(rid >> 8) & 0xFF:02x}:{(rid >> 3) & 0x1F:02x}.{rid & 7}"


@dataclass
class NetChild:
    """A network interface the host driver created under the device."""
    ifname: str
    up: bool = True
    routed: bool = True
    mac: str = "00:00:00:00:00:00"
    ifindex: int = 2


@dataclass
class DiskChild:
    """An NVMe controller and namespace the host driver created."""
    ctrl: str            # nvme0
    name: str            # nvme0n1
    major: int = 259
    minor: int = 0
    mounted_at: Optional[str] = None
    swap: bool = False
    holder: Optional[str] = None    # dm-0: an LVM/dm device sits on it


@dataclass
class SimDevice:
    address: str
    vendor: int
    device: int
    subvendor: int
    subdevice: int
    class_: int
    devpath: str                       # under sys/: "devices/pci0000:00/0000:00:01.0/0000:01:00.0"
    revision: int = 0
    numa_node: int = -1
    iommu_group: Optional[int] = None
    driver: Optional[str] = None       # driver *name*
    override: Optional[str] = None     # driver_override; None reads "(null)"
    physfn: Optional[str] = None       # set on SR-IOV VFs
    # SR-IOV capability (PFs)
    sriov_totalvfs: int = 0
    sriov_offset: int = 0
    sriov_stride: int = 0
    sriov_vf_device: int = 0
    sriov_numvfs: int = 0
    sriov_autoprobe: bool = True
    vfs: List[str] = field(default_factory=list)
    # Things the host driver puts under the device (safety-guard fixtures).
    nets: List[NetChild] = field(default_factory=list)
    disks: List[DiskChild] = field(default_factory=list)
    console: bool = False
    children_owner: Optional[str] = None   # driver whose probe creates nets/disks
    children_live: bool = True

    def __repr__(self) -> str:
        return (f"SimDevice({self.address} {self.vendor:04x}:{self.device:04x} "
                f"class {self.class_:06x} driver={self.driver})")

    @property
    def sys_dir(self) -> str:
        return "sys/" + self.devpath

    @property
    def is_bridge(self) -> bool:
        return self.class_ >> 8 == CLASS_PCI_BRIDGE >> 8

    @property
    def is_virtfn(self) -> bool:
        return self.physfn is not None

    @property
    def is_vga(self) -> bool:
        return self.class_ >> 8 == CLASS_VGA >> 8

    @property
    def is_pf(self) -> bool:
        return self.sriov_totalvfs > 0

    def modalias(self) -> str:
        """pci_uevent()/modalias_show(): the MODALIAS format."""
        c = self.class_
        return (f"pci:v{self.vendor:08X}d{self.device:08X}sv{self.subvendor:08X}"
                f"sd{self.subdevice:08X}bc{c >> 16 & 0xFF:02X}sc{c >> 8 & 0xFF:02X}i{c & 0xFF:02X}")

    def uevent_properties(self) -> Dict[str, str]:
        """dev_uevent() adds DRIVER first, then pci_uevent() the rest."""
        props = {}
        if self.driver:
            props["DRIVER"] = self.driver
        props.update({
            "PCI_CLASS": f"{self.class_:X}",
            "PCI_ID": f"{self.vendor:04X}:{self.device:04X}",
            "PCI_SUBSYS_ID": f"{self.subvendor:04X}:{self.subdevice:04X}",
            "PCI_SLOT_NAME": self.address,
            "MODALIAS": self.modalias(),
        })
        return props

    def uevent_text(self) -> str:
        return "".join(f"{k}={v}\n" for k, v in self.uevent_properties().items())

    def attributes(self) -> Dict[str, str]:
        """Every regular attribute file and its content (pci-sysfs.c formats)."""
        a = {
            "vendor": f"0x{self.vendor:04x}\n",
            "device": f"0x{self.device:04x}\n",
            "subsystem_vendor": f"0x{self.subvendor:04x}\n",
            "subsystem_device": f"0x{self.subdevice:04x}\n",
            "class": f"0x{self.class_:06x}\n",
            "revision": f"0x{self.revision:02x}\n",
            "modalias": self.modalias() + "\n",
            "driver_override": f"{self.override or '(null)'}\n",
            "numa_node": f"{self.numa_node}\n",
            "enable": "1\n" if self.driver else "0\n",
            "remove": "",
            "rescan": "",
            "reset": "",
            "uevent": self.uevent_text(),
        }
        if self.is_vga:
            a["boot_vga"] = "1\n" if self.console else "0\n"
        if self.is_pf:
            a.update(self.sriov_attributes())
        return a

    def sriov_attributes(self) -> Dict[str, str]:
        return {
            "sriov_totalvfs": f"{self.sriov_totalvfs}\n",
            "sriov_numvfs": f"{self.sriov_numvfs}\n",
            "sriov_offset": f"{self.sriov_offset}\n",
            "sriov_stride": f"{self.sriov_stride}\n",
            "sriov_vf_device": f"{self.sriov_vf_device:x}\n",
            "sriov_drivers_autoprobe": f"{int(self.sriov_autoprobe)}\n",
        }

    def vf_address(self, index: int) -> str:
        """pci_iov_virtfn_bus()/devfn(): PF routing id + offset + index*stride."""
        return address_of(routing_id(self.address) + self.sriov_offset + index * self.sriov_stride)


# Attributes a write can reach; everything else under a device is read-only
# (kernfs_fop_open refuses FMODE_WRITE without a store method: EACCES).
WRITABLE_DEVICE_ATTRS = frozenset({
    "driver_override", "enable", "remove", "rescan", "reset", "uevent",
    "sriov_numvfs", "sriov_drivers_autoprobe", "d3cold_allowed", "msi_bus",
    "broken_parity_status",
})
WRITE_ONLY_DEVICE_ATTRS = frozenset({"remove", "rescan", "reset"})
DRIVER_ATTRS = ("bind", "unbind", "new_id", "remove_id", "uevent")
BUS_ATTRS = {"drivers_probe": "", "drivers_autoprobe": "1\n", "rescan": "", "uevent": ""}


def rel_link(link: str, target: str) -> str:
    """The relative target the kernel's sysfs gives a symlink (both paths
    relative to the root)."""
    return posixpath.relpath(target, posixpath.dirname(link))
