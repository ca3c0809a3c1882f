"""journald's native protocol, spoken without systemd-python.

A datagram of KEY=value lines to /run/systemd/journal/socket keeps what
systemd-python's JournalHandler gives: the priority, SYSLOG_IDENTIFIER and
every structured field (PCI_SLOT, MODULE, DRIVER, RULE, MESSAGE_ID), so
`journalctl MESSAGE_ID=...` works on a plain `pip install`.  A value with a
newline goes in the protocol's binary form: the name, a newline, its length
as a little-endian 64-bit number, the value, a newline.

What it does not do (systemd-python does, through sd_journal_sendv): pass
an entry too big for one datagram through a memfd.  Our entries are a few
hundred bytes; a bigger one is cut to fit, and says so.
"""

from __future__ import annotations

import logging
import os
import socket
import struct

SOCKET = "/run/systemd/journal/socket"
# Well under the socket's usual send limit (SO_SNDBUF, ~200 KiB by default).
MAX_DATAGRAM = 64 * 1024

# syslog priorities for logging's levels (sd-daemon(3): 3 err, 4 warning,
# 6 info, 7 debug).
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
              (logging.INFO, 6))


def priority(levelno: int) -> int:
    for level, prio in PRIORITIES:
        if levelno >= level:
            return prio
    return 7


def field(name: str, value) -> bytes:
    """One field in the protocol's text or binary form."""
    data = str(value).encode("utf-8", "replace")
    key = name.encode("ascii")
    if b"\n" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


def valid_name(name: str) -> bool:
    """journald drops fields whose names are not upper case letters, digits
    and underscores, not starting with an underscore or a digit."""
    return (bool(name) and not name.startswith("_") and not name[0].isdigit()
            and all(c.isupper() or c.isdigit() or c == "_" for c in name))


def available(path: str = SOCKET) -> bool:
    return os.path.exists(path)


class JournalHandler(logging.Handler):
    """Each record as one journal entry; the record's `fields` (a dict, as
    log.log_outcome passes them) become journal fields."""

    def __init__(self, identifier: str, path: str = SOCKET):
        super().__init__()
        self.identifier = identifier
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def entry(self, record: logging.LogRecord) -> bytes:
        message = self.format(record)
        parts = [field("MESSAGE", message), field("PRIORITY", priority(record.levelno)),
                 field("SYSLOG_IDENTIFIER", self.identifier),
                 field("CODE_FILE", record.pathname), field("CODE_LINE", record.lineno),
                 field("CODE_FUNC", record.funcName), field("LOGGER", record.name),
                 field("THREAD_NAME", record.threadName)]
        for name, value in (getattr(record, "fields", None) or {}).items():
            if value is not None and valid_name(name):
                parts.append(field(name, value))
        data = b"".join(parts)
        if len(data) > MAX_DATAGRAM:
            # Cut the message, and keep only the fields that fit whole.
            parts[0] = field("MESSAGE", message[:1000] + f" [cut: the entry was {len(data)} "
                             "bytes]")
            data = b""
            for p in parts:
                if len(data) + len(p) <= MAX_DATAGRAM:
                    data += p
        return data

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sock.sendto(self.entry(record), self.path)
        except Exception:  # noqa: BLE001  logging's own contract: report, never raise
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()
