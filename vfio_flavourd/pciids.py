"""Vendor and device names from pci.ids (hwdata / pciutils), for people.

Loaded lazily and only the parts needed: the JSON output of a 4,096-device
plan should not pay for parsing 1.3 MB it does not use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .safeio import open_regular


class PciIds:
    def __init__(self, path: Optional[Path]):
        self.path = path
        self._vendors: Optional[dict] = None
        self._devices: dict = {}

    def _load(self) -> None:
        self._vendors = {}
        if self.path is None:
            return
        try:
            f = open(open_regular(self.path), encoding="utf-8", errors="replace")
        except OSError:
            return
        vendor = None
        with f:
            for line in f:
                if not line or line[0] == "#" or line == "\n":
                    continue
                if line[0] == "C":      # device classes follow; we only want ids
                    break
                if line[0] != "\t":
                    vid, _, name = line.partition("  ")
                    try:
                        vendor = int(vid, 16)
                    except ValueError:
                        vendor = None
                        continue
                    self._vendors[vendor] = name.strip()
                elif vendor is not None and line[1] != "\t":
                    did, _, name = line[1:].partition("  ")
                    try:
                        self._devices[(vendor, int(did, 16))] = name.strip()
                    except ValueError:
                        continue

    def vendor(self, vid: int) -> Optional[str]:
        if self._vendors is None:
            self._load()
        return self._vendors.get(vid)

    def device(self, vid: int, did: int) -> Optional[str]:
        if self._vendors is None:
            self._load()
        return self._devices.get((vid, did))
