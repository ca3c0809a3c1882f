"""Which driver may take which device: pci_match_device() and the parsing
of new_id/remove_id (drivers/pci/pci-driver.c)."""

from __future__ import annotations

import errno
from typing import List, Optional, Tuple

from .catalog import PCI_ANY_ID, PciId

# pci_match_device() hands this back when only driver_override matched.
PCI_DEVICE_ID_ANY = PciId()


def pci_match_device(name: str, ids, dynids, dev) -> Optional[PciId]:
    """pci_match_device(): with driver_override set, only the driver whose
    name equals it (strcmp) may match, and it matches even when no id does;
    dynamic ids are tried before the static table; an override_only entry
    counts only when driver_override is set (and so names this driver)."""
    override = dev.override
    if override is not None and override != name:
        return None
    args = (dev.vendor, dev.device, dev.subvendor, dev.subdevice, dev.class_)
    for pid in dynids:
        if pid.matches(*args):
            return pid
    for pid in ids:
        if pid.matches(*args) and (not pid.override_only or override is not None):
            return pid
    if override is not None:
        return PCI_DEVICE_ID_ANY
    return None


def _scan_hex(value: str, limit: int) -> List[int]:
    """sscanf("%x %x ...") : leading fields that parse, stopping at the
    first that does not."""
    out = []
    for tok in value.split()[:limit]:
        t = tok[2:] if tok[:2].lower() == "0x" else tok
        try:
            out.append(int(t, 16) & 0xFFFFFFFF)
        except ValueError:
            break
    return out


class _Dummy:
    """The throw-away pci_dev new_id_store() builds to test for EEXIST."""
    override = None

    def __init__(self, f: List[int]):
        self.vendor, self.device = f[0], f[1]
        self.subvendor = f[2] if len(f) > 2 else PCI_ANY_ID
        self.subdevice = f[3] if len(f) > 3 else PCI_ANY_ID
        self.class_ = f[4] if len(f) > 4 else 0


def parse_new_id(value: str, name: str, ids, dynids) -> Tuple[int, Optional[PciId]]:
    """new_id_store(): (errno, id to add).  "VVVV DDDD [SV SD CLASS MASK DATA]";
    fewer than 2 fields is EINVAL; without all 7 an id the driver already
    matches is EEXIST; driver_data must equal one in the static table."""
    f = _scan_hex(value, 7)
    if len(f) < 2:
        return errno.EINVAL, None
    if len(f) != 7 and pci_match_device(name, ids, dynids, _Dummy(f)) is not None:
        return errno.EEXIST, None
    if len(f) == 7 and ids and f[6] != 0:
        return errno.EINVAL, None   # the catalog's tables all carry driver_data 0
    sv = f[2] if len(f) > 2 else PCI_ANY_ID
    sd = f[3] if len(f) > 3 else PCI_ANY_ID
    cls = f[4] if len(f) > 4 else 0
    mask = f[5] if len(f) > 5 else 0
    return 0, PciId(f[0], f[1], sv, sd, cls, mask)


def find_remove_id(value: str, dynids) -> Tuple[int, Optional[PciId]]:
    """remove_id_store(): the first dynamic id that matches; EINVAL for
    fewer than 2 fields, ENODEV when none matches."""
    f = _scan_hex(value, 6)
    if len(f) < 2:
        return errno.EINVAL, None
    sv = f[2] if len(f) > 2 else PCI_ANY_ID
    sd = f[3] if len(f) > 3 else PCI_ANY_ID
    cls = f[4] if len(f) > 4 else 0
    mask = f[5] if len(f) > 5 else 0
    for pid in dynids:
        if (pid.vendor == f[0] and pid.device == f[1]
                and (sv == PCI_ANY_ID or pid.subvendor == sv)
                and (sd == PCI_ANY_ID or pid.subdevice == sd)
                and not ((pid.class_ ^ cls) & mask)):
            return 0, pid
    return errno.ENODEV, None
