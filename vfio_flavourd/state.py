"""What vfio-flavourd did, kept in run/vfio-flavourd/state.json.

driver_override lives in kernel memory and is gone after a reboot, so the
record of which overrides are ours lives under /run and goes with it.  It is
how we tell our overrides from libvirt's or driverctl's.
Written atomically: a temp file, fsync, rename, under an flock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Optional

from .root import Root

STATE_VERSION = 1


class State:
    def __init__(self, root: Root, warn=None):
        self.dir = root.run_dir()
        self.path = self.dir / "state.json"
        self._lock_path = self.dir / "state.lock"
        self._warn = warn or (lambda msg: None)

    def __repr__(self) -> str:
        return f"State({self.path})"

    def read(self) -> dict:
        """{address: record}; an unreadable or corrupt file is reported and
        read as empty rather than stopping every command."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self._warn(f"{self.path}: unreadable state ({e}); treating as empty")
            return {}
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            self._warn(f"{self.path}: unknown state format; treating as empty")
            return {}
        devices = data.get("devices")
        return devices if isinstance(devices, dict) else {}

    def get(self, address: str) -> Optional[dict]:
        return self.read().get(address)

    @contextlib.contextmanager
    def _locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, devices: dict) -> None:
        tmp = self.path.with_name(f".state.json.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump({"version": STATE_VERSION, "devices": devices}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def update(self, address: str, record: Optional[dict]) -> None:
        """Set (or with None, forget) one device's record."""
        with self._locked():
            devices = self.read()
            if record is None:
                try:
                    (self.dir / "udev" / address).unlink()
                except OSError:
                    pass
                if devices.pop(address, None) is None:
                    return
            else:
                record = dict(record, since=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
                devices[address] = record
            self._write(devices)


class DeviceLock:
    """An flock per device, so the daemon, the udev callout and a person at
    the shell never interleave on one device."""

    def __init__(self, root: Root, address: str, timeout: float = 30.0):
        self.path = root.run_dir() / "locks" / f"{address}.lock"
        self.timeout = timeout
        self._fd: Optional[int] = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    from .errors import FlavourdError
                    raise FlavourdError(f"{self.path.stem}: another vfio-flavourd is working on "
                                        f"this device (lock {self.path} held for "
                                        f"{self.timeout:.0f} s)") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
