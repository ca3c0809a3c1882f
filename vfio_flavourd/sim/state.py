"""What the simulated kernel knows about a host, apart from the files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

from .model import SimDevice


@dataclass
class HostState:
    devices: Dict[str, SimDevice] = field(default_factory=dict)   # in bus (klist) order
    # "0000:01" -> the directory under sys/ its devices live in
    bus_dirs: Dict[str, str] = field(default_factory=dict)
    loaded: List[str] = field(default_factory=list)               # modules, in load order
    autoprobe: bool = True                                        # sys/bus/pci/drivers_autoprobe
    kernel_release: str = "6.12.0-amd64"
