"""One object resolves every path the tool touches.

Everything (sysfs, /lib/modules, the policy directories, /run, /proc) hangs off
a root directory, "/" in production and a copy of another machine in tests and
examples.  Nothing else in the package builds absolute paths.
"""

from __future__ import annotations

import os

from .errors import UsageError

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

    @property
    def kernel_release(self) -> str:
        if self._kernel_release:
            return self._kernel_release
        if not self.is_host:
            # A copy of another machine says which kernel it ran.
            try:
                with open(self.fspath("proc/sys/kernel/osrelease")) as f:
                    rel = f.read().strip()
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

