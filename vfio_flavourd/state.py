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

import errno
import fcntl
import os
import stat
import time
from _thread import get_ident   # threading's, without importing threading

from . import safeio
from .errors import FlavourdError
from .root import RUN_DIR, LayoutError, Root

# The directories under run/vfio-flavourd that hold one entry per device,
# and the kind each entry must be.
DEVICE_DIRS = (("devices", ".json"), ("locks", ".lock"), ("udev", ""))

STATE_VERSION = 1
LEGACY = "state.json"     # one file for every device, up to 0.1.0


class State:
    def __init__(self, root: Root, warn=None):
        self.root = root
        # Plain strings, not pathlib, on every command's path.
        self.dir = root.fspath(RUN_DIR)
        self.devices_dir = os.path.join(self.dir, "devices")
        self._lock_path = os.path.join(self.dir, "state.lock")
        self._warn = warn or (lambda msg: None)
        self._layout_checked = False
        self._migrated = False

    def __repr__(self) -> str:
        return f"State({self.devices_dir})"

    def read(self) -> dict:
        """{address: record}, in address order."""
        self._migrate()
        return {a: rec for a in self.addresses() if (rec := self._load(a)) is not None}

    def addresses(self) -> list:
        try:
            names = os.listdir(self.devices_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))

    def count(self) -> int:
        return len(self.addresses())

    def get(self, address: str) -> dict | None:
        self._migrate()
        return self._load(address)

    def check_layout(self) -> None:
        """Before any device is touched: everything found under
        run/vfio-flavourd must be what this tool would have put there (and
        inside the root), or a clear error says what is wrong.  Only reads,
        so it works on a read-only /run.  Once per State: the daemon asks
        for a binder at every event."""
        if self._layout_checked:
            return
        if not self.root.check_dir(str(self.dir), missing_ok=True):
            return
        for sub, suffix in DEVICE_DIRS:
            path = os.path.join(self.dir, sub)
            if not self.root.check_dir(path, missing_ok=True):
                continue
            with os.scandir(path) as it:
                for e in it:
                    if e.name.startswith(".") or not e.name.endswith(suffix):
                        continue
                    if not e.is_file(follow_symlinks=False):
                        st = os.lstat(e.path)
                        raise LayoutError(f"{e.path}: expected a file written by "
                                          f"vfio-flavourd, found {safeio.kind(st.st_mode)}")
        self._layout_checked = True

    def _file(self, address: str) -> str:
        if "/" in address or address.startswith(".") or not address.isprintable():
            raise ValueError(f"not a device address: {address!r}")
        return os.path.join(self.devices_dir, address + ".json")

    def _load(self, address: str) -> dict | None:
        """An unreadable or corrupt record is reported and read as absent
        rather than stopping every command."""
        path = self._file(address)
        try:
            data = loads(safeio.read_bytes(path, os.O_NOFOLLOW))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as e:
            self._warn(f"{path}: unreadable state ({_why(e)}); treating as empty")
            return None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION \
                or not isinstance(data.get("record"), dict) or not _flat(data["record"]):
            self._warn(f"{path}: unknown state format; treating as empty")
            return None
        return data["record"]

    def _store(self, address: str, record: dict) -> None:
        path = self._file(address)
        self.root.ensure_dir(f"{RUN_DIR}/devices")
        tmp = f"{path}.{os.getpid()}.{get_ident()}.tmp"
        from .jsontext import dumps
        data = dumps({"version": STATE_VERSION, "record": record}, indent=1,
                     sort_keys=True).encode()
        try:
            safeio.replace_whole(path, tmp, data)
        except OSError as e:
            raise FlavourdError(f"{path}: cannot write the state record: "
                                f"{e.strerror or e}") from None

    def update(self, address: str, record: dict | None) -> None:
        """Set (or with None, forget) one device's record."""
        self._migrate()
        if record is not None:
            self._store(address, dict(record, since=time.strftime("%Y-%m-%dT%H:%M:%S%z")))
            return
        for path in (self._file(address), os.path.join(self.dir, "udev", address)):
            try:
                # unlink(2) does not follow the last component, but the
                # directory above it might be a link out of the root.
                if self.root.check_dir(os.path.dirname(path), missing_ok=True):
                    os.unlink(path)
            except (OSError, FlavourdError):
                pass

    def _locked(self) -> "_Flock":
        self.root.ensure_dir(RUN_DIR)
        return _Flock(_open_lock(self._lock_path))

    def _migrate(self) -> None:
        """Split a state.json left by an older version (the daemon restarts on
        upgrade, /run stays) into per-device files, so its overrides stay ours."""
        if self._migrated:
            return
        legacy = os.path.join(self.dir, LEGACY)
        if not os.path.exists(legacy):
            # Only a version before 0.1.0 wrote it, and only before this
            # one started: once absent, it stays so.  The daemon asks at
            # every event otherwise.
            self._migrated = True
            return
        with self._locked():
            try:
                data = loads(safeio.read_bytes(legacy, os.O_NOFOLLOW))
                devices = data["devices"] if data.get("version") == STATE_VERSION else None
            except FileNotFoundError:
                return          # another process migrated it first
            except (OSError, ValueError, TypeError, KeyError, AttributeError,
                    RecursionError) as e:
                self._warn(f"{legacy}: unreadable state ({_why(e)}); treating as empty")
                devices = None
            for address, record in (devices if isinstance(devices, dict) else {}).items():
                if isinstance(record, dict) and _is_address(address) \
                        and not os.path.exists(self._file(address)):
                    self._store(address, record)
            os.unlink(legacy)


def _flat(record: dict) -> bool:
    """Every record we write maps names to strings, numbers, booleans or
    null.  Anything nested is not ours (and deep nesting would break the
    JSON writer of `status --json`)."""
    return all(isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool)))
               for k, v in record.items())


def loads(data: bytes):
    """JSON as the standard allows it: NaN, Infinity and numbers that
    overflow to infinity are errors, so nothing read here can make
    `status --json` print invalid JSON."""
    from .jsontext import loads as _loads
    return _loads(data)


def _why(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return str(e)


def _is_address(name) -> bool:
    from .pci import is_address
    return isinstance(name, str) and is_address(name)


def _open_lock(path) -> int:
    """A lock file's descriptor; a symlink or a directory in its place is a
    clear error, never followed."""
    try:
        fd = safeio.create(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EWOULDBLOCK):
            raise LayoutError(f"{path}: expected a lock file, found "
                              f"{safeio.kind(os.lstat(path).st_mode)}") from None
        raise FlavourdError(f"{path}: cannot open the lock: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise LayoutError(f"{path}: expected a lock file, found {safeio.kind(mode)}")
    return fd


class _Flock:
    """An exclusive flock on an open descriptor, closed on leaving."""

    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self):
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc):
        os.close(self.fd)
        return False


class DeviceLock:
    """An flock per device, so the daemon, the udev callout and a person at
    the shell never interleave on one device."""

    def __init__(self, root: Root, address: str, timeout: float = 30.0):
        self.root = root
        self.address = address
        self.path = root.fspath(f"{RUN_DIR}/locks/{address}.lock")
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self):
        self.root.ensure_dir(f"{RUN_DIR}/locks")
        fd = _open_lock(self.path)
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                from .deadline import before_wait
                before_wait()       # someone else holds it: this thread waits
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


class device_locked:
    """The device's lock, held also by any write child forked meanwhile
    (deadline.holding); `lock.hand_over(outcome.stuck)` keeps it locked
    after a write is abandoned.  A dry run changes nothing, so it takes no
    lock (None): it must work on a read-only /run.  A class, not
    contextlib's decorator: contextlib costs `apply` 5 ms of import."""

    def __init__(self, root, address: str, timeout: float = 30.0, *, dry_run=False):
        self._lock = None if dry_run else DeviceLock(root, address, timeout=timeout)
        self._held = None

    def __enter__(self):
        if self._lock is None:
            return None
        from . import deadline      # not for `plan`, which binds nothing
        lock = self._lock.__enter__()
        self._held = deadline.holding(lock.fd)
        self._held.__enter__()
        return lock

    def __exit__(self, *exc):
        if self._lock is not None:
            try:
                if self._held is not None:
                    self._held.__exit__(*exc)
            finally:
                self._lock.__exit__(*exc)
        return False
