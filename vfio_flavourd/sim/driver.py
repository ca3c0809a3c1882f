"""A registered PCI driver, and the log entries of the simulated kernel."""

from __future__ import annotations

from typing import List, NamedTuple

from . import catalog as cat
from .matching import pci_match_device
from .model import SimDevice


class Op(NamedTuple):
    """One thing the kernel did: kind is write, modprobe, rmmod, probe,
    bind, unbind, add or remove; errno 0 means it succeeded."""
    kind: str
    target: str
    value: str = ""
    errno: int = 0


class Driver:
    """A registered struct pci_driver: the module's static ids plus the
    dynamic ids added through new_id."""

    def __init__(self, info: cat.ModuleInfo):
        self.info = info
        self.name = info.driver
        self.dynids: List[cat.PciId] = []

    def __repr__(self) -> str:
        return f"Driver({self.name} from {self.info.name})"

    def match(self, dev: SimDevice):
        return pci_match_device(self.name, self.info.ids, self.dynids, dev)
