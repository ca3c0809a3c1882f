"""One object resolves every path the tool touches.

Everything (sysfs, /lib/modules, the policy directories, /run, /proc) hangs off
a root directory, "/" in production and a copy of another machine in tests and
examples.  Nothing else in the package builds absolute paths.
"""

from __future__ import annotations

import os

from .errors import FlavourdError, UsageError

ENV_ROOT = "VFIO_FLAVOURD_ROOT"

# Policy layers, lowest precedence first.  A file name present in a later
# layer masks the same name in an earlier one (systemd's drop-in convention).
POLICY_LAYERS = (
    "usr/lib/vfio-flavourd/policy.d",
    "etc/vfio-flavourd/policy.d",
    "run/vfio-flavourd/policy.d",
)

PCI_DEVICES = "sys/bus/pci/devices"
PCI_DRIVERS = "sys/bus/pci/drivers"
PCI_BUS = "sys/bus/pci"
SYS_MODULE = "sys/module"
IOMMU_GROUPS = "sys/kernel/iommu_groups"
RUN_DIR = "run/vfio-flavourd"
PCI_IDS_CANDIDATES = (
    "usr/share/hwdata/pci.ids",
    "usr/share/misc/pci.ids",
    "usr/share/pci.ids",
)


class RootEscape(FlavourdError):
    """A write would land outside the root (a symlink leads out of it)."""

    def __init__(self, path, real, root):
        self.path = str(path)
        super().__init__(f"{path}: resolves to {real}, outside the root {root}; "
                         "refusing to write there")


class LayoutError(FlavourdError):
    """Something of the wrong kind sits where the tool keeps its own files."""


class Root:
    """A directory that stands for "/" of the machine being managed."""

    # pathlib is imported only by the methods that return a Path: with the
    # re, fnmatch and urllib.parse behind it, it was half again the
    # interpreter's own start for a one-shot command that needs none of it.

    def __init__(self, path: "os.PathLike[str] | str | None" = None,
                 kernel_release: str | None = None):
        if path is None:
            path = os.environ.get(ENV_ROOT) or "/"
        self.dirname = os.path.realpath(os.fspath(path))
        if not os.path.isdir(self.dirname):
            raise UsageError(f"root {path}: not a directory")
        self._kernel_release = kernel_release
        self._prefix = "" if self.dirname == "/" else self.dirname
        self._dirs_ok: set = set()

    def __repr__(self) -> str:
        return f"Root({self.dirname!r})"

    @property
    def dir(self) -> Path:
        from pathlib import Path
        return Path(self.dirname)

    @property
    def is_host(self) -> bool:
        return self.dirname == "/"

    def path(self, rel: "str | PurePosixPath") -> Path:
        """The real path of `rel` (relative to the root).  Refuses '..' so a
        name read from a config file can never leave the root."""
        from pathlib import PurePosixPath
        rel = PurePosixPath(str(rel).lstrip("/"))
        if ".." in rel.parts:
            raise UsageError(f"path {rel} leaves the root")
        return self.dir / rel

    def fspath(self, rel: str) -> str:
        """path() as a plain string, built without pathlib: a scan reads
        sysfs some 20 times per device, and pathlib's parsing was half of
        `plan`'s time on a host of 4,096 devices."""
        rel = rel.lstrip("/")
        if ".." in rel and ".." in rel.split("/"):
            raise UsageError(f"path {rel} leaves the root")
        return f"{self._prefix}/{rel}"

    def contains(self, real: str) -> bool:
        return self.is_host or real == self._prefix or real.startswith(self._prefix + "/")

    def check_inside(self, path: "os.PathLike[str] | str") -> str:
        """`path` (under the root) when the directory it names an entry of
        resolves inside the root; the last component is not followed (the
        caller opens it O_NOFOLLOW).  On "/" everything is inside, so the
        real host pays nothing."""
        path = os.fspath(path)
        if self.is_host:
            return path
        parent, name = os.path.split(path)
        real = os.path.realpath(parent)
        if name in ("", ".", "..") or not self.contains(real):
            raise RootEscape(path, os.path.join(real, name), self.dir)
        return path

    def ensure_dir(self, rel: str) -> str:
        """Create directory `rel` (and its parents) under the root, and check
        that it is a directory that resolves inside the root.  Checked once
        per Root: state, locks and marks ask for the same few directories
        for every device."""
        path = self.fspath(rel)
        if rel in self._dirs_ok:
            return path
        try:
            os.makedirs(path, exist_ok=True)
        except FileExistsError:
            pass
        except NotADirectoryError:
            raise LayoutError(f"{path}: cannot create: a file stands where a directory "
                              "should be on the way to it") from None
        except OSError as e:
            raise LayoutError(f"{path}: cannot create: {e.strerror or e}") from None
        self.check_dir(path)
        self._dirs_ok.add(rel)
        return path

    def check_dir(self, path: str, missing_ok: bool = False) -> bool:
        """Whether `path` is a directory inside the root; False when it is
        missing and missing_ok.  Anything else is a LayoutError."""
        import stat as _stat
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if missing_ok:
                return False
            raise LayoutError(f"{path}: missing") from None
        except OSError as e:
            raise LayoutError(f"{path}: {e.strerror or e}") from None
        if not _stat.S_ISDIR(st.st_mode):
            from .safeio import kind
            raise LayoutError(f"{path}: expected a directory, found {kind(st.st_mode)}")
        if not self.is_host:
            real = os.path.realpath(path)
            if not self.contains(real):
                raise RootEscape(path, real, self.dir)
        return True

    @property
    def kernel_release(self) -> str:
        if self._kernel_release:
            return self._kernel_release
        if not self.is_host:
            # A copy of another machine says which kernel it ran.
            try:
                from .safeio import read_text
                rel = read_text(self.fspath("proc/sys/kernel/osrelease"), "ascii",
                                "replace").strip()
                if rel:
                    return rel
            except OSError:
                pass
        return os.uname().release

    def modules_fspath(self) -> str:
        """lib/modules/RELEASE, or usr/lib/modules/RELEASE on merged-/usr
        systems where only that exists.  Returns the first candidate when none
        exists, so error messages name the path people expect."""
        candidates = [self.fspath(f"{base}/{self.kernel_release}")
                      for base in ("lib/modules", "usr/lib/modules")]
        for c in candidates:
            if os.path.isdir(c):
                return c
        return candidates[0]

    def modules_dir(self) -> Path:
        from pathlib import Path
        return Path(self.modules_fspath())

    def modules_alias(self) -> Path:
        return self.modules_dir() / "modules.alias"

    def policy_dirs(self) -> list:
        return [self.path(p) for p in POLICY_LAYERS]

    def run_dir(self) -> Path:
        return self.path(RUN_DIR)

    def pci_ids(self) -> Path | None:
        for c in PCI_IDS_CANDIDATES:
            p = self.path(c)
            if p.is_file():
                return p
        return None

