"""Vendor and device names from pci.ids (hwdata / pciutils), for people.

Looked up in the file's bytes, not parsed: a command prints names for the
devices it shows, and parsing all 36,000 lines of pci.ids into dicts took
longer than the interpreter's start.  A lookup is a few bytes.find() and
count() calls over the file read once.  The names found are kept in a small
cache file (keyed by pci.ids' stat), so the next `plan` reads no pci.ids.
"""

from __future__ import annotations

import marshal
import os

from .safeio import read_bytes, read_private, write_new


class PciIds:
    def __init__(self, path, cache: str | None = None):
        self.path = path
        self.cache = cache
        self._data: bytes | None = None
        self._names: dict | None = None
        self._vendor_pos: dict = {}
        self._new = False

    # -- the cache of names found ---------------------------------------------------

    def _key(self):
        try:
            st = os.stat(self.path)
        except (OSError, TypeError):
            return None
        return (str(self.path), st.st_mtime_ns, st.st_size, st.st_ino)

    def _cached(self) -> dict:
        if self._names is None:
            self._names = {}
            if self.cache:
                try:
                    data = read_private(self.cache)
                    if data is not None:
                        key, names = marshal.loads(data)
                        if key == self._key() and isinstance(names, dict):
                            self._names = names
                except (OSError, EOFError, ValueError, TypeError, RecursionError, MemoryError):
                    pass
        return self._names

    def save(self) -> None:
        """Write the names found to the cache file, if any were new; failing
        to cache is never an error."""
        if not (self.cache and self._new):
            return
        tmp = f"{self.cache}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.cache), mode=0o700, exist_ok=True)
            write_new(tmp, marshal.dumps((self._key(), self._names)), mode=0o600,
                      exclusive=True)
            os.replace(tmp, self.cache)
            self._new = False
        except (OSError, ValueError):
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _lookup(self, key: tuple, find):
        names = self._cached()
        if key not in names:
            names[key] = find()
            self._new = True
        return names[key]

    # -- pci.ids itself ---------------------------------------------------------------

    def _bytes(self) -> bytes:
        if self._data is None:
            self._data = b""
            if self.path is not None:
                try:
                    # Not open(): a FIFO as pci.ids would block it.
                    self._data = b"\n" + read_bytes(self.path)
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
        def find():
            at = self._vendor_at(vid)
            return self._line_rest(at + 7) if at >= 0 else None
        return self._lookup((vid,), find)

    def device(self, vid: int, did: int) -> str | None:
        return self._lookup((vid, did), lambda: self._device(vid, did))

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
