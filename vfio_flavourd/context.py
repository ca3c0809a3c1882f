"""What a command works on: the root, its sysfs, the policy and the variant
index, each loaded on first use so that a command pays only for what it
touches."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from .aliases import VariantIndex, load_index
from .pciids import PciIds
from .policy_load import load_policy
from .root import PCI_IDS_CANDIDATES, Root
from .sysfs import Sysfs


class Context:
    def __init__(self, root: Root, policy_paths=None, stderr=None):
        self.root = root
        self.policy_paths = list(policy_paths or [])
        self.stderr = stderr or sys.stderr
        self._sysfs: Optional[Sysfs] = None
        self._index: Optional[VariantIndex] = None
        self._policy = None
        self._pciids: Optional[PciIds] = None
        self._warned: set = set()
        self._state = None
        self._loader = None

    def warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            print(f"vfio-flavourd: warning: {message}", file=self.stderr)

    @property
    def sysfs(self) -> Sysfs:
        if self._sysfs is None:
            self._sysfs = Sysfs(self.root)
        return self._sysfs

    @sysfs.setter
    def sysfs(self, value: Sysfs) -> None:
        self._sysfs = value

    @property
    def index(self) -> VariantIndex:
        if self._index is None:
            self._index = load_index(self.root.modules_dir())
            for w in self._index.warnings:
                self.warn(w)
        return self._index

    @property
    def policy(self):
        if self._policy is None:
            self._policy = load_policy(self.root, self.policy_paths)
        return self._policy

    @property
    def state(self):
        if self._state is None:
            from .state import State
            self._state = State(self.root, warn=self.warn)
        return self._state

    @property
    def loader(self):
        if self._loader is None:
            from .modprobe import ModuleLoader
            self._loader = ModuleLoader()
        return self._loader

    @loader.setter
    def loader(self, value) -> None:
        self._loader = value

    def binder(self, settle_timeout: float = 1.0, unbind_timeout=None, on_slow=None):
        from .binder import Binder
        self.state.check_layout()   # a clear error before any device is touched
        return Binder(self.sysfs, self.loader, self.index, self.state,
                      settle_timeout=settle_timeout, unbind_timeout=unbind_timeout,
                      on_slow=on_slow)

    def owner_of(self, dev):
        from .owners import override_owner
        if dev.driver_override is None:
            return None
        return override_owner(self.sysfs, self.state, dev)

    @property
    def pciids(self) -> PciIds:
        if self._pciids is None:
            # pci.ids is a database, not machine state: when a copied root
            # has none, the names this machine knows are still right.
            path = self.root.pci_ids()
            if path is None:
                for c in PCI_IDS_CANDIDATES:
                    if Path("/", c).is_file():
                        path = Path("/", c)
                        break
            self._pciids = PciIds(path)
        return self._pciids
