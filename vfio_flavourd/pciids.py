"""Vendor and device names from pci.ids (hwdata / pciutils), for people.

Looked up in the file's bytes, not parsed: a command prints names for the
devices it shows, and parsing all 36,000 lines of pci.ids into dicts took
longer than the interpreter's start.  A lookup is a few bytes.find()
calls over the file read once.
"""

from __future__ import annotations

class PciIds:
    def __init__(self, path):
        self.path = path
        self._data: bytes | None = None
        self._names: dict = {}
        self._vendor_pos: dict = {}

    def _bytes(self) -> bytes:
        if self._data is None:
            self._data = b""
            if self.path is not None:
                try:
                    with open(self.path, "rb") as f:
                        self._data = b"\n" + f.read()
                except OSError:
                    pass
        return self._data

    def _line_rest(self, start: int) -> str:
        data = self._bytes()
        end = data.find(b"\n", start)
        return data[start:end if end >= 0 else len(data)].decode("utf-8", "replace").strip()

    def _vendor_at(self, vid: int) -> int:
        """Where the vendor's line starts (its '\\n'), or -1."""
        if vid not in self._vendor_pos:
            self._vendor_pos[vid] = self._bytes().find(b"\n%04x  " % vid)
        return self._vendor_pos[vid]

    def vendor(self, vid: int) -> str | None:
        key = ("v", vid)
        if key not in self._names:
            at = self._vendor_at(vid)
            self._names[key] = self._line_rest(at + 7) if at >= 0 else None
        return self._names[key]

    def device(self, vid: int, did: int) -> str | None:
        key = ("d", vid, did)
        if key not in self._names:
            self._names[key] = self._device(vid, did)
        return self._names[key]

    def _device(self, vid: int, did: int) -> str | None:
        data = self._bytes()
        at = self._vendor_at(vid)
        if at < 0:
            return None
        hit = data.find(b"\n\t%04x  " % did, at + 1)
        if hit < 0:
            return None
        # The first such line after the vendor's may belong to a later
        # vendor: it does when a line between them starts with anything but
        # a tab (devices, subsystems) or '#', or is blank.
        span = (at + 1, hit + 2)
        others = data.count(b"\n", *span) - data.count(b"\n\t", *span) \
            - data.count(b"\n#", *span) - data.count(b"\n\n", *span)
        if others:
            return None
        return self._line_rest(hit + 8)
