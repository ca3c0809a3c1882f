"""Who set a device's driver_override.

Other tools set overrides too: driverctl (which saves them in
etc/driverctl.d/pci-ADDRESS) and libvirt (when it detaches a managed host
device).  We take over only what we set ourselves, unless a rule says so.
"""

from __future__ import annotations


OURS = "vfio-flavourd"
DRIVERCTL = "driverctl"
UNKNOWN = "another tool (libvirt?)"


def override_owner(sysfs, records, dev) -> str | None:
    """OURS when our state says we wrote this very override, DRIVERCTL when
    driverctl saved one for the device, else UNKNOWN; None when unset.
    `records`: a State, or a dict of records; only its .get(address) is used."""
    if dev.driver_override is None:
        return None
    rec = records.get(dev.address)
    if rec and rec.get("override") == dev.driver_override:
        return OURS
    # Set by udev from our callout's answer (udev_callout), before the daemon
    # recorded it in the state.
    mark = sysfs.read(f"run/vfio-flavourd/udev/{dev.address}")
    if mark is not None and mark == dev.driver_override:
        return OURS
    if sysfs.exists(f"etc/driverctl.d/pci-{dev.address}"):
        return DRIVERCTL
    return UNKNOWN
