"""vfio-pci's `ids=` parameter: "VENDOR:DEVICE[:SUBVENDOR[:SUBDEVICE[:CLASS[:CLASS_MASK]]]]".

The kernel (drivers/vfio/pci/vfio_pci.c, vfio_pci_fill_ids) splits the value
on commas, reads each entry with sscanf("%x:%x:%x:%x:%x:%x"), skips entries
with fewer than two fields, and adds the rest as dynamic ids: subvendor and
subdevice default to PCI_ANY_ID, class and class_mask to 0.  A dynamic id
matches a device as pci_match_one_device does: each id field equal or
PCI_ANY_ID, and (class ^ device class) & class_mask == 0.

sscanf is lenient ("10de:1b80zz" reads as 10de:1b80).  We are strict: an
entry the kernel might read differently from what its author meant is a
problem to show, not a guess to make.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

ANY = 0xFFFFFFFF                       # PCI_ANY_ID
FIELDS = ("vendor", "device", "subvendor", "subdevice", "class", "class mask")
FORMAT = "VENDOR:DEVICE[:SUBVENDOR[:SUBDEVICE[:CLASS[:CLASS_MASK]]]]"
_HEX_RE = re.compile(r"(0[xX])?[0-9a-fA-F]{1,8}\Z")

# A policy `class:` is a prefix of the 24-bit class code, so only the masks
# that select a prefix translate: base class, +subclass, +prog-if.
PREFIX_MASKS = {0xFF0000: 2, 0xFFFF00: 4, 0xFFFFFF: 6}


class IdError(ValueError):
    """An entry that cannot be migrated; str() says why."""


@dataclass(frozen=True)
class IdSpec:
    text: str
    vendor: int
    device: int
    subvendor: int = ANY
    subdevice: int = ANY
    class_code: int = 0
    class_mask: int = 0

    def __repr__(self) -> str:
        return f"<IdSpec {self.text}>"

    def matches(self, dev) -> bool:
        """Would the kernel's dynamic id claim this PciDevice?"""
        def eq(want, have):
            return want == ANY or (have is not None and want == have)
        return (eq(self.vendor, dev.vendor) and eq(self.device, dev.device)
                and eq(self.subvendor, dev.subsystem_vendor)
                and eq(self.subdevice, dev.subsystem_device)
                and ((self.class_code ^ dev.class_code) & self.class_mask) == 0)

    @property
    def class_prefix(self) -> Optional[str]:
        digits = PREFIX_MASKS.get(self.class_mask)
        if digits is None:
            return None
        return f"{self.class_code >> (24 - 4 * digits):0{digits}x}"

    def match_keys(self) -> dict:
        """The policy `match:` keys meaning the same devices, as YAML-ready
        text, in the policy's own key order."""
        keys = {}
        for key, value in (("vendor", self.vendor), ("device", self.device),
                           ("subsystem_vendor", self.subvendor),
                           ("subsystem_device", self.subdevice)):
            if value != ANY:
                keys[key] = f"0x{value:04x}"
        if self.class_prefix is not None:
            keys["class"] = self.class_prefix
        return keys

    @property
    def short(self) -> str:
        """The entry in canonical form, for rule names: 10de:1b80, with the
        optional fields only as far as they narrow the match (the fields
        are positional, so an id before a class stays, even when "any")."""
        parts = [_id_text(self.vendor), _id_text(self.device)]
        if (self.subvendor, self.subdevice) != (ANY, ANY) or self.class_mask:
            parts += [_id_text(self.subvendor), _id_text(self.subdevice)]
        if self.class_mask:
            parts += [f"{self.class_code:06x}", f"{self.class_mask:06x}"]
        return ":".join(parts)


def _id_text(value: int) -> str:
    return "any" if value == ANY else f"{value:04x}"


def parse_id(text: str) -> IdSpec:
    """One entry; raises IdError with the reason it cannot be migrated."""
    fields = text.split(":")
    if len(fields) < 2:
        raise IdError(f"expected {FORMAT} in hex, found no ':' (the kernel skips it too)")
    if len(fields) > 6:
        raise IdError(f"expected at most 6 fields ({FORMAT}), found {len(fields)}")
    values = []
    for name, field in zip(FIELDS, fields):
        if not _HEX_RE.match(field):
            raise IdError(f"{name} {field!r} is not a hex number")
        values.append(int(field, 16))
    for name, value in zip(FIELDS[:4], values[:4]):
        if value > 0xFFFF and value != ANY:
            raise IdError(f"{name} 0x{value:x} is not a 16-bit id (ffffffff means any)")
    spec = IdSpec(text, *values)
    if spec.class_code > 0xFFFFFF or spec.class_mask > 0xFFFFFF:
        raise IdError("class and class mask are 24-bit values such as 030000 and ff0000")
    if spec.class_mask and spec.class_prefix is None:
        raise IdError(f"class mask {spec.class_mask:06x} is not ff0000, ffff00 or ffffff: "
                      "a policy class matches a prefix of the class code only")
    if not spec.match_keys():
        raise IdError("it matches every PCI device; write such a rule by hand if you mean it")
    return spec


def parse_ids(value: str) -> list:
    """[(entry, IdSpec or None, reason or None)] for each comma-separated
    entry; empty entries are skipped, as the kernel skips them."""
    out = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            out.append((entry, parse_id(entry), None))
        except IdError as e:
            out.append((entry, None, str(e)))
    return out
