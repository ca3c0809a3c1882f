"""SimSysfs: the Sysfs interface, with write() running the kernel's store
method for the attribute instead of writing a file.  Reads stay plain file
reads of the tree the simulated kernel keeps up to date.

Errors come back as SysfsError with the same message shapes as Sysfs.write:
"cannot open for writing: ..." when the open fails (no such attribute,
read-only attribute), "write of 'x' failed: ..." when the store returns an
error.
"""

from __future__ import annotations

import errno
import os
import posixpath
from typing import Optional, Tuple

from ..errors import SysfsError
from ..sysfs import Sysfs
from . import faults as F
from .kernel import Op
from .matching import find_remove_id, parse_new_id
from .model import BUS_ATTRS, DRIVER_ATTRS, WRITABLE_DEVICE_ATTRS

PAGE_SIZE = 4096
_DEVICE_ATTRS = frozenset({"vendor", "device", "subsystem_vendor", "subsystem_device", "class",
                           "revision", "modalias", "numa_node", "enable", "remove", "rescan",
                           "reset", "uevent", "driver_override"})
_SRIOV_ATTRS = frozenset({"sriov_totalvfs", "sriov_numvfs", "sriov_offset", "sriov_stride",
                          "sriov_vf_device", "sriov_drivers_autoprobe"})


def kstrtoul(value: str) -> Optional[int]:
    """kstrtoul(s, 0): decimal, 0x hex or 0 octal, one trailing newline."""
    s = value[:-1] if value.endswith("\n") else value
    try:
        if s[:2].lower() == "0x" and len(s) > 2:
            return int(s[2:], 16)
        if s.startswith("0") and len(s) > 1:
            return int(s[1:], 8)
        return int(s, 10) if s.isdigit() else None
    except ValueError:
        return None


def kstrtobool(value: str) -> Optional[bool]:
    """kstrtobool(): y/Y/1/on true, n/N/0/off false, anything else -EINVAL."""
    s = value.lower()
    if s[:1] in ("y", "1"):
        return True
    if s[:1] in ("n", "0"):
        return False
    if s[:2] == "on":
        return True
    if s[:2] == "of":
        return False
    return None


def streq_name(value: str) -> str:
    """sysfs_streq(): a device name written with or without its newline."""
    return value[:-1] if value.endswith("\n") else value


class SimSysfs(Sysfs):
    def __init__(self, kernel):
        super().__init__(kernel.root)
        self.kernel = kernel

    # -- paths ---------------------------------------------------------------
    def _resolve(self, rel: str) -> Optional[Tuple[str, Optional[str], str]]:
        """(kind, key, attribute) for device/driver/bus attributes, else None."""
        parts = rel.split("/")
        if parts[:3] == ["sys", "bus", "pci"]:
            if len(parts) == 4:
                return "bus", None, parts[3]
            if len(parts) == 6 and parts[3] == "devices":
                return "device", parts[4], parts[5]
            if len(parts) == 7 and parts[3] == "devices" and parts[5] == "driver":
                # devices/ADDR/driver/unbind: follow the driver link
                d = self.kernel.state.devices.get(parts[4])
                if d is not None and d.driver:
                    return "driver", d.driver, parts[6]
            if len(parts) == 6 and parts[3] == "drivers":
                return "driver", parts[4], parts[5]
        real = os.path.realpath(self.root.path(rel))
        base = str(self.root.dir)
        if not real.startswith(base + "/"):
            return None
        real = real[len(base) + 1:]
        if real != rel and real.startswith("sys/bus/pci/"):
            return self._resolve(real)
        if real.startswith("sys/devices/"):
            parent, attr = posixpath.split(real)
            addr = posixpath.basename(parent)
            d = self.kernel.state.devices.get(addr)
            if d is not None and d.sys_dir == parent:
                return "device", addr, attr
        return None

    def _has_device_attr(self, d, attr: str) -> bool:
        if attr == "driver_override":
            return self.kernel.override_supported
        if attr in _SRIOV_ATTRS:
            return d.is_pf
        if attr == "boot_vga":
            return d.is_vga
        return attr in _DEVICE_ATTRS

    def is_writable(self, rel: str) -> bool:
        """Whether opening for writing would succeed: sysfs decides by the
        attribute (root can open a 0444 file, kernfs still refuses it)."""
        rel = rel.lstrip("/")
        target = self._resolve(rel) if rel.startswith("sys/") else None
        if target is None:
            return super().is_writable(rel)
        return self._open_error(rel, target) == 0

    def _open_error(self, rel: str, target) -> int:
        kind, key, attr = target
        k = self.kernel
        if kind == "device":
            d = k.state.devices.get(key)
            if d is None or not self._has_device_attr(d, attr):
                return errno.ENOENT
            if attr not in WRITABLE_DEVICE_ATTRS:
                return errno.EACCES
            if attr == "driver_override":
                for f in k.faults:
                    if isinstance(f, F.OverrideLocked) and f.check(key):
                        return f.errno
            return 0
        if kind == "driver":
            if key not in k.drivers:
                return errno.ENOENT
            if attr in DRIVER_ATTRS:
                return 0
            return errno.EACCES if self.exists(rel) else errno.ENOENT
        if attr in BUS_ATTRS:
            return 0
        return errno.EISDIR if attr in ("devices", "drivers") else errno.ENOENT

    # -- write -----------------------------------------------------------------
    def write(self, rel: str, value: str) -> None:
        """One write(2) of `value`, handled the way the kernel's store
        method for that attribute handles it."""
        rel = rel.lstrip("/")
        if not rel.startswith("sys/"):
            raise SysfsError(rel, "refusing to write outside sys/")
        k = self.kernel
        for f in k.faults:
            if isinstance(f, F.Hang) and f.check(rel, value):
                f.block()
        with k.op():
            k.write_count += 1
            n = k.write_count
            self._vanish(n, "before")
            try:
                err, at_open = self._write(rel, value, n)
            finally:
                self._vanish(n, "after")
            k.ops.append(Op("write", rel, value, err))
        if err and at_open:
            raise SysfsError(rel, f"cannot open for writing: {os.strerror(err)}", err)
        if err:
            raise SysfsError(rel, f"write of {value!r} failed: {os.strerror(err)}", err)

    def write_timed(self, rel: str, value: str, seconds: float, on_slow=None,
                    then=()) -> None:
        """The kernel is Python in this process: the helper is a thread.
        Only a Hang fault can keep a simulated write from returning, so
        without one the write runs inline (a thread hand-off per write was
        a sixth of a simulated coldplug's own time, bench figure 4).
        `then` changes nothing here: each write is asked for in turn.
        Inline, the write returns at once, so the thread does not say it
        waits, as on the real /sys for a write that returns within
        deadline.HOLD; a hanging one says so after HOLD."""
        if not any(isinstance(f, F.Hang) for f in self.kernel.faults):
            return self.write(rel, value)
        from ..deadline import in_thread
        in_thread(lambda: self.write(rel, value), rel, value, seconds, on_slow)

    def _vanish(self, n: int, when: str) -> None:
        for f in self.kernel.faults:
            if isinstance(f, F.Vanish):
                addr = f.check(n, when)
                if addr and addr in self.kernel.state.devices:
                    self.kernel.remove_device(addr)

    def _write(self, rel: str, value: str, n: int) -> Tuple[int, bool]:
        target = self._resolve(rel)
        if target is None or (target[0] == "device" and target[1] not in self.kernel.devices):
            # Not an object of the model: perhaps a device directory linked
            # out of the tree, which the scan left out.  Say so.
            self.check_inside(rel, self.root.fspath(rel))
        if target is None:
            return (errno.EACCES if self.exists(rel) else errno.ENOENT), True
        err = self._open_error(rel, target)
        if err:
            return err, True
        for f in self.kernel.faults:
            if isinstance(f, F.WriteFails):
                err = f.check(rel, n)
                if err:
                    return err, False
        kind, key, attr = target
        store = getattr(self, f"_{kind}_{attr}", None)
        if store is None:
            return 0, False     # uevent of a driver or the bus: accepted, nothing modelled
        return store(key, value), False

    # -- device attributes (drivers/pci/pci-sysfs.c) ---------------------------
    def _device_driver_override(self, addr: str, value: str) -> int:
        """driver_set_override() (driver_override_store): the string up to
        the first newline (or NUL) becomes the override; an empty one
        clears it to "(null)".  Nothing is bound, unbound or loaded."""
        if len(value) >= PAGE_SIZE - 1:
            return errno.EINVAL
        d = self.kernel.state.devices[addr]
        s = value.split("\0", 1)[0].split("\n", 1)[0]
        d.override = s or None
        self.kernel.layout.attr(d, "driver_override")
        return 0

    def _device_remove(self, addr: str, value: str) -> int:
        """remove_store(): a non-zero number removes the device (and
        everything below it); a later rescan finds it again."""
        val = kstrtoul(value)
        if val is None:
            return errno.EINVAL
        if val:
            self.kernel._remove(self.kernel.state.devices[addr], remember=True)
        return 0

    def _device_rescan(self, addr: str, value: str) -> int:
        return self._bus_rescan(None, value)

    def _device_reset(self, addr: str, value: str) -> int:
        """reset_store(): only "1" is accepted."""
        return 0 if kstrtoul(value) == 1 else errno.EINVAL

    def _device_enable(self, addr: str, value: str) -> int:
        return 0 if kstrtoul(value) is not None else errno.EINVAL

    def _device_uevent(self, addr: str, value: str) -> int:
        """uevent_store() -> kobject_synth_uevent(): "add", "change", ...
        sends that event again (what `udevadm trigger` does)."""
        action = value.strip().split(" ", 1)[0] or "change"
        if action not in ("add", "remove", "change", "move", "online", "offline",
                          "bind", "unbind"):
            return errno.EINVAL
        self.kernel._emit(action, self.kernel.state.devices[addr])
        return 0

    def _device_sriov_numvfs(self, addr: str, value: str) -> int:
        """sriov_numvfs_store(): ERANGE above sriov_totalvfs; ENOENT with no
        PF driver or one without sriov_configure; EBUSY to change a
        non-zero count to another non-zero one; 0 disables."""
        k = self.kernel
        pf = k.state.devices[addr]
        n = kstrtoul(value)
        if n is None or n > 0xFFFF:
            return errno.EINVAL
        if n > pf.sriov_totalvfs:
            return errno.ERANGE
        if n == pf.sriov_numvfs:
            return 0
        drv = k.drivers.get(pf.driver) if pf.driver else None
        if drv is None:
            k.dmesg.append(f"pci {addr}: no driver bound to device; cannot configure SR-IOV")
            return errno.ENOENT
        if not drv.info.sriov:
            k.dmesg.append(f"{drv.name} {addr}: driver does not support SR-IOV "
                           f"configuration via sysfs")
            return errno.ENOENT
        if n == 0:
            k.sriov_disable(pf)
            return 0
        if pf.sriov_numvfs:
            k.dmesg.append(f"{drv.name} {addr}: {pf.sriov_numvfs} VFs already enabled. "
                           f"Disable before enabling {n} VFs")
            return errno.EBUSY
        k.sriov_enable(pf, n)
        return 0

    def _device_sriov_drivers_autoprobe(self, addr: str, value: str) -> int:
        """sriov_drivers_autoprobe_store(): kstrtobool."""
        b = kstrtobool(value)
        if b is None:
            return errno.EINVAL
        d = self.kernel.state.devices[addr]
        d.sriov_autoprobe = b
        self.kernel.layout.attr(d, "sriov_drivers_autoprobe")
        return 0

    # -- driver attributes (drivers/base/bus.c, drivers/pci/pci-driver.c) ------
    def _driver_bind(self, name: str, value: str) -> int:
        """bind_store(): ENODEV for an unknown device or one the driver does
        not match (an override naming another driver included); then
        device_driver_attach(): EBUSY when bound, else the probe's error."""
        k = self.kernel
        d = k.state.devices.get(streq_name(value))
        drv = k.drivers[name]
        if d is None or drv.match(d) is None:
            return errno.ENODEV
        if d.driver:
            return errno.EBUSY
        return k.probe(drv, d)

    def _driver_unbind(self, name: str, value: str) -> int:
        """unbind_store(): ENODEV unless the device is bound to this driver."""
        k = self.kernel
        addr = streq_name(value)
        for f in k.faults:
            if isinstance(f, F.UnbindBusy):
                err = f.check(name, addr)
                if err:
                    return err
        d = k.state.devices.get(addr)
        if d is None or d.driver != name:
            return errno.ENODEV
        k._release(d)
        return 0

    def _driver_new_id(self, name: str, value: str) -> int:
        """new_id_store() + pci_add_dynid(), which attaches the driver to
        every unbound device the new id matches."""
        drv = self.kernel.drivers[name]
        err, pid = parse_new_id(value, name, drv.info.ids, drv.dynids)
        if err:
            return err
        drv.dynids.append(pid)
        self.kernel.driver_attach(drv)
        return 0

    def _driver_remove_id(self, name: str, value: str) -> int:
        """remove_id_store(): drops the first matching dynamic id; devices
        already bound stay bound."""
        drv = self.kernel.drivers[name]
        err, pid = find_remove_id(value, drv.dynids)
        if not err:
            drv.dynids.remove(pid)
        return err

    # -- bus attributes (drivers/base/bus.c, drivers/pci/pci-sysfs.c) ----------
    def _bus_drivers_probe(self, _key, value: str) -> int:
        """drivers_probe_store(): ENODEV for an unknown device; otherwise
        success, even when every probe failed (bus_rescan_devices_helper
        ignores probe errors; they show in dmesg only)."""
        k = self.kernel
        d = k.state.devices.get(streq_name(value))
        if d is None:
            return errno.ENODEV
        k.device_attach(d)
        return 0

    def _bus_drivers_autoprobe(self, _key, value: str) -> int:
        """drivers_autoprobe_store(): "0..." turns it off, anything else on."""
        k = self.kernel
        k.state.autoprobe = not value.startswith("0")
        k.layout.write("sys/bus/pci/drivers_autoprobe", "1\n" if k.state.autoprobe else "0\n")
        return 0

    def _bus_rescan(self, _key, value: str) -> int:
        """rescan_store(): a non-zero number rescans every bus."""
        val = kstrtoul(value)
        if val is None:
            return errno.EINVAL
        if val:
            self.kernel.rescan()
        return 0
