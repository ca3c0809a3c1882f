"""Uevents as the kernel sends them for PCI devices (kobject_uevent_env()
with dev_uevent() and pci_uevent() filling in the properties)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

ACTIONS = ("add", "remove", "change", "move", "online", "offline", "bind", "unbind")


@dataclass(frozen=True)
class Uevent:
    action: str
    address: str
    devpath: str                 # "/devices/pci0000:00/0000:00:01.0/0000:01:00.0"
    driver: Optional[str]        # bound driver; for "unbind" the driver just released
    seqnum: int
    properties: Dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        drv = f" {self.driver}" if self.driver else ""
        return f"Uevent(#{self.seqnum} {self.action} {self.address}{drv})"


def make(action: str, dev, seqnum: int, driver: Optional[str] = None) -> Uevent:
    """The event for `dev` now.  DRIVER is present only while a driver is
    bound: an unbind event is sent after dev->driver is cleared
    (__device_release_driver), so it has no DRIVER property."""
    props = {"ACTION": action, "DEVPATH": "/" + dev.devpath, "SUBSYSTEM": "pci"}
    if action not in ("remove", "unbind"):
        props.update(dev.uevent_properties())
    else:
        props.update({k: v for k, v in dev.uevent_properties().items() if k != "DRIVER"})
    props["SEQNUM"] = str(seqnum)
    return Uevent(action, dev.address, "/" + dev.devpath,
                  driver if driver is not None else dev.driver, seqnum, props)
