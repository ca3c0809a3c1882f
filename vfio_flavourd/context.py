"""What a command works on: the root, its sysfs, the policy and the variant
index, each loaded on first use so that a command pays only for what it
touches."""

from __future__ import annotations

import os
import sys

from .root import PCI_IDS_CANDIDATES, Root
from .sysfs import Sysfs


class Context:
    def __init__(self, root: Root, policy_paths=None, stderr=None):
        self.root = root
        self.policy_paths = list(policy_paths or [])
        self.stderr = stderr or sys.stderr
        self._sysfs = None
        self._index = None
        self._policy = None
        self._pciids = None
        self._warned: set = set()
        self._state = None
        self._loader = None
        # {module: PCI driver it registered}: Binder.load's, shared by the
        # binders made here (a reload makes a new context, and a new one).
        self.drivers: dict = {}

    def warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            print(f"vfio-flavourd: warning: {message}", file=self.stderr)

    @property
    def sysfs(self):
        if self._sysfs is None:
            self._sysfs = Sysfs(self.root)
        return self._sysfs

    @sysfs.setter
    def sysfs(self, value: Sysfs) -> None:
        self._sysfs = value

    @property
    def index(self):
        if self._index is None:
            self._load()
        return self._index

    @property
    def vfio_modules(self) -> frozenset:
        """The modules with vfio_pci aliases, all the binder needs of the
        index: from the cache's plain names when the index is not loaded
        (`release`), which spares restoring the index and importing the
        alias matcher behind its classes."""
        if self._index is None:
            from . import cache
            where = cache.location(self.root, self.policy_paths)
            got = where and cache.load_modules(self.root, where)
            if got:
                modules, warnings = got
                for w in warnings:
                    self.warn(w)
                return modules
        return self.index.modules()

    @property
    def policy(self):
        if self._policy is None:
            self._load(need_policy=True)
        return self._policy

    def _load(self, need_policy: bool = False) -> None:
        """The policy and the variant index, from the compiled cache when it
        is current (parsing YAML costs more than the rest of a one-shot
        command), else from their files, then cached for the next run.  A
        broken policy is an error only to those who asked for the policy."""
        from . import cache
        from .errors import PolicyError
        where = cache.location(self.root, self.policy_paths)
        cached = where and cache.load_cached(self.root, self.policy_paths, where,
                                             policy_too=need_policy)
        if cached:
            policy, index = cached
        else:
            from .aliases import load_index
            from .policy_load import load_policy
            index = self._index if self._index is not None else \
                load_index(self.root.modules_dir())
            try:
                policy = self._policy if self._policy is not None else \
                    load_policy(self.root, self.policy_paths)
            except PolicyError:
                if need_policy:
                    raise
                policy = None
            if where and policy is not None:
                cache.store(self.root, policy, index, self.policy_paths, where)
        if self._policy is None:
            self._policy = policy
        if self._index is None:
            self._index = index
            for w in index.warnings:
                self.warn(w)

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

    def binder(self, settle_timeout: float = 1.0, unbind_timeout=None, on_slow=None,
               await_probe=None):
        from .binder import Binder
        self.state.check_layout()   # a clear error before any device is touched
        return Binder(self.sysfs, self.loader, self.vfio_modules, self.state,
                      settle_timeout=settle_timeout, unbind_timeout=unbind_timeout,
                      on_slow=on_slow, await_probe=await_probe, drivers=self.drivers)

    def owner_of(self, dev):
        from .owners import override_owner
        if dev.driver_override is None:
            return None
        return override_owner(self.sysfs, self.state, dev)

    @property
    def pciids(self):
        if self._pciids is None:
            from .pciids import PciIds
            # pci.ids is a database, not machine state: when a copied root
            # has none, the names this machine knows are still right.
            candidates = [self.root.fspath(c) for c in PCI_IDS_CANDIDATES]
            candidates += ["/" + c for c in PCI_IDS_CANDIDATES]
            path = next((p for p in candidates if os.path.isfile(p)), None)
            from . import cache
            self._pciids = PciIds(path, cache.file_for(self.root, "pci-names.marshal"))
            import atexit
            atexit.register(self._pciids.save)
        return self._pciids
