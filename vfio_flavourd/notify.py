"""sd_notify(3) without a dependency: one datagram to $NOTIFY_SOCKET.

The protocol is a few lines; writing it here keeps the daemon's readiness
and watchdog working where systemd-python is not installed.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Optional


class Notifier:
    def __init__(self, address: Optional[str] = None, environ=None):
        env = os.environ if environ is None else environ
        self.address = address if address is not None else env.get("NOTIFY_SOCKET")
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_usec = None
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(usec)
        self._sock = None

    def __repr__(self) -> str:
        return f"Notifier({self.address!r})"

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def watchdog_interval(self) -> Optional[float]:
        """Seconds between WATCHDOG=1 pings: half the timeout, as sd_notify(3)
        recommends."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, **fields) -> bool:
        if not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):       # abstract namespace
            addr = "\0" + addr[1:]
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg, addr)
            return True
        except OSError:
            return False

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)

    def reloading(self) -> None:
        # systemd >= 253 wants the monotonic time with RELOADING=1.
        self.send(RELOADING=1, MONOTONIC_USEC=int(time.monotonic() * 1e6),
                  STATUS="reloading policy")

    def stopping(self) -> None:
        self.send(STOPPING=1, STATUS="stopping")
