"""What vfio-flavourd did, kept under run/vfio-flavourd/devices/: one JSON
file per device, named by its address.

driver_override lives in kernel memory and is gone after a reboot, so the
record of which overrides are ours lives under /run and goes with it.  It is
how we tell our overrides from libvirt's or driverctl's.
One file per device because one file for all of them, rewritten at every
bind, made a coldplug of N devices cost O(N^2): 30 ms a device at 4,000
(bench/).  Each file is written atomically: a temp file, fsync, rename.
"""

from __future__ import annotations

import fcntl
import os
import time
from _thread import get_ident   # threading's, without importing threading

from . import jsonlite
from .root import RUN_DIR, Root

STATE_VERSION = 1
LEGACY = "state.json"     # one file for every device, up to 0.1.0


class State:
    def __init__(self, root: Root, warn=None):
        # Plain strings, not pathlib, on every command's path.
        self.dir = root.fspath(RUN_DIR)
        self.devices_dir = os.path.join(self.dir, "devices")
        self._lock_path = os.path.join(self.dir, "state.lock")
        self._warn = warn or (lambda msg: None)

    def __repr__(self) -> str:
        return f"State({self.devices_dir})"

    def read(self) -> dict:
        """{address: record}, in address order."""
        self._migrate()
        return {a: rec for a in self.addresses() if (rec := self._load(a)) is not None}

    def addresses(self) -> list:
        try:
            names = os.listdir(self.devices_dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))

    def count(self) -> int:
        return len(self.addresses())

    def get(self, address: str) -> dict | None:
        self._migrate()
        return self._load(address)

    def _file(self, address: str) -> str:
        if "/" in address or address.startswith("."):
            raise ValueError(f"not a device address: {address!r}")
        return os.path.join(self.devices_dir, address + ".json")

    def _load(self, address: str) -> dict | None:
        """An unreadable or corrupt record is reported and read as absent
        rather than stopping every command."""
        path = self._file(address)
        try:
            with open(path) as f:
                data = jsonlite.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            self._warn(f"{path}: unreadable state ({e}); treating as empty")
            return None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION \
                or not isinstance(data.get("record"), dict):
            self._warn(f"{path}: unknown state format; treating as empty")
            return None
        return data["record"]

    def _store(self, address: str, record: dict) -> None:
        path = self._file(address)
        tmp = f"{path}.{os.getpid()}.{get_ident()}.tmp"
        os.makedirs(self.devices_dir, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(jsonlite.dumps({"version": STATE_VERSION, "record": record}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def update(self, address: str, record: dict | None) -> None:
        """Set (or with None, forget) one device's record."""
        self._migrate()
        if record is not None:
            self._store(address, dict(record, since=time.strftime("%Y-%m-%dT%H:%M:%S%z")))
            return
        for path in (self._file(address), os.path.join(self.dir, "udev", address)):
            try:
                os.unlink(path)
            except OSError:
                pass

    def _locked(self):
        import contextlib   # only an old state.json needs it

        @contextlib.contextmanager
        def locked():
            os.makedirs(self.dir, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)
        return locked()

    def _migrate(self) -> None:
        """Split a state.json left by an older version (the daemon restarts on
        upgrade, /run stays) into per-device files, so its overrides stay ours."""
        legacy = os.path.join(self.dir, LEGACY)
        if not os.path.exists(legacy):
            return
        with self._locked():
            try:
                import json
                with open(legacy) as f:
                    data = json.load(f)
                devices = data["devices"] if data.get("version") == STATE_VERSION else None
            except FileNotFoundError:
                return          # another process migrated it first
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
                self._warn(f"{legacy}: unreadable state ({e}); treating as empty")
                devices = None
            for address, record in (devices if isinstance(devices, dict) else {}).items():
                if isinstance(record, dict) and not os.path.exists(self._file(address)):
                    self._store(address, record)
            os.unlink(legacy)


class DeviceLock:
    """An flock per device, so the daemon, the udev callout and a person at
    the shell never interleave on one device."""

    def __init__(self, root: Root, address: str, timeout: float = 30.0):
        self.path = root.fspath(f"{RUN_DIR}/locks/{address}.lock")
        self.address = address
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
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
                    raise FlavourdError(f"{self.address}: another vfio-flavourd is working on "
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
