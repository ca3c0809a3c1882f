"""The ModuleLoader interface, served by the simulated kernel."""

from __future__ import annotations

from ..errors import ModprobeError
from ..modprobe import ModuleLoader, valid_module_name


class SimModuleLoader(ModuleLoader):
    """load() is `modprobe -- MODULE`, unload() is `modprobe -r -- MODULE`.
    Errors carry modprobe's own text, as ModuleLoader reports it (the last
    line modprobe printed)."""

    def __init__(self, kernel):
        super().__init__(command=["modprobe"])
        self.kernel = kernel

    def __repr__(self) -> str:
        return f"SimModuleLoader({self.kernel!r})"

    def load(self, module: str) -> None:
        if not valid_module_name(module):
            raise ModprobeError(module, "not a valid module name")
        self.kernel.modprobe(module)

    def unload(self, module: str) -> None:
        if not valid_module_name(module):
            raise ModprobeError(module, "not a valid module name")
        self.kernel.rmmod(module)
