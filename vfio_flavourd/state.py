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

import contextlib
import fcntl
import json
import os
import threading
import time

from .root import Root

STATE_VERSION = 1
LEGACY = "state.json"     # one file for every device, up to 0.1.0


class State:
    def __init__(self, root: Root, warn=None):
        self.dir = root.run_dir()
        self.devices_dir = self.dir / "devices"
        self._lock_path = self.dir / "state.lock"
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
                data = json.load(f)
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
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        os.makedirs(self.devices_dir, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump({"version": STATE_VERSION, "record": record}, f, indent=1, sort_keys=True)
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

    @contextlib.contextmanager
    def _locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _migrate(self) -> None:
        """Split a state.json left by an older version (the daemon restarts on
        upgrade, /run stays) into per-device files, so its overrides stay ours."""
        legacy = self.dir / LEGACY
        if not legacy.exists():
            return
        with self._locked():
            try:
                data = json.loads(legacy.read_text())
                devices = data["devices"] if data.get("version") == STATE_VERSION else None
            except FileNotFoundError:
                return          # another process migrated it first
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
                self._warn(f"{legacy}: unreadable state ({e}); treating as empty")
                devices = None
            for address, record in (devices if isinstance(devices, dict) else {}).items():
                if isinstance(record, dict) and not os.path.exists(self._file(address)):
                    self._store(address, record)
            legacy.unlink()


class DeviceLock:
    """An flock per device, so the daemon, the udev callout and a person at
    the shell never interleave on one device."""

    def __init__(self, root: Root, address: str, timeout: float = 30.0):
        self.path = root.run_dir() / "locks" / f"{address}.lock"
        self.timeout = timeout
        self._fd: int | None = None

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

    @property
    def fd(self):
        return self._fd

    def hand_over(self, helper) -> None:
        """Keep the device locked until `helper` (a write abandoned past its
        deadline) returns from the kernel."""
        fd, self._fd = self._fd, None
        if fd is not None:
            helper.when_done(lambda: os.close(fd))

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
