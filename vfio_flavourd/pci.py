"""PCI devices as sysfs shows them, read into plain snapshots.

The engine works on PciDevice snapshots and never touches sysfs itself.
Attributes that an old kernel or a bridge lacks are None, never an error.
"""

from __future__ import annotations

from ._record import REQUIRED, record
from .errors import DeviceGone, SysfsError, UnknownDevice, UsageError
from .modprobe import CATCH_ALL, module_of_driver, normalise_module
from .root import PCI_DEVICES
from .sysfs import Sysfs

# Domains are 4 hex digits, except behind Intel VMD, which adds 5-digit ones.
# \Z, not $: "$" also matches before a trailing newline.
ADDRESS_PATTERN = r"[0-9a-f]{4,5}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\Z"
_HEX = frozenset("0123456789abcdef")


def __getattr__(name):
    # ADDRESS_RE, compiled on first use: is_address() does without `re`.
    if name == "ADDRESS_RE":
        import re
        globals()[name] = re.compile(ADDRESS_PATTERN)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_address(text: str) -> bool:
    """A PCI address as the kernel writes it (ADDRESS_PATTERN)."""
    domain, _, rest = text.partition(":")
    return (len(domain) in (4, 5) and len(rest) == 7 and rest[2] == ":" and rest[5] == "."
            and _HEX.issuperset(domain) and _HEX.issuperset(rest[:2] + rest[3:5])
            and rest[6] in "01234567")

CLASS_BRIDGE_HOST = 0x0600
CLASS_BRIDGE_PCI = 0x0604


def normalise_address(text: str) -> str:
    """Accept "3b:00.1" and upper case from a person; return the kernel's form."""
    t = text.strip().lower()
    if t.count(":") == 1:
        t = "0000:" + t
    if not is_address(t):
        raise UsageError(f"{text!r} is not a PCI address (expected DOMAIN:BUS:SLOT.FUNC, "
                         "e.g. 0000:3b:00.1)")
    return t


def _hex(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def make_modalias(vendor: int, device: int, sv: int, sd: int, class_code: int) -> str:
    """What the kernel's modalias attribute would say (pci_uevent /
    modalias_show), for kernels or copies that lack the attribute."""
    return ("pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X"
            % (vendor, device, sv, sd, class_code >> 16, (class_code >> 8) & 0xFF,
               class_code & 0xFF))


class PciDevice(record("PciDevice", (
        ("address", REQUIRED),
        ("vendor", REQUIRED),
        ("device", REQUIRED),
        ("subsystem_vendor", None),
        ("subsystem_device", None),
        ("class_code", 0),              # 24-bit: base class, subclass, prog-if
        ("modalias", ""),
        ("driver", None),               # bound driver's *driver* name
        ("driver_module", None),        # the module behind it (None: built in)
        ("driver_override", None),
        ("iommu_group", None),
        ("physfn", None),               # PF address when this is an SR-IOV VF
        ("virtfns", ()),
        ("sriov_drivers_autoprobe", None),
        ("boot_vga", None)))):
    __slots__ = ()

    @property
    def is_vf(self) -> bool:
        return self.physfn is not None

    @property
    def is_bridge(self) -> bool:
        return (self.class_code >> 8) in (CLASS_BRIDGE_HOST, CLASS_BRIDGE_PCI)

    @property
    def id_text(self) -> str:
        return f"{self.vendor:04x}:{self.device:04x}"

    def __repr__(self) -> str:
        return f"<PciDevice {self.address} {self.id_text} driver={self.driver}>"


def ids_from_modalias(modalias: str | None):
    """(vendor, device, subsystem vendor, subsystem device, class) from a
    modalias as the kernel writes it (make_modalias's format), or None."""
    m = modalias or ""
    if len(m) != 53 or not m.startswith("pci:v") or m[13] != "d" or m[22:24] != "sv" \
            or m[32:34] != "sd" or m[42:44] != "bc" or m[46:48] != "sc" or m[50] != "i":
        return None
    try:
        return (int(m[5:13], 16), int(m[14:22], 16), int(m[24:32], 16), int(m[34:42], 16),
                int(m[44:46] + m[48:50] + m[51:53], 16))
    except ValueError:
        return None


def read_device(sysfs: Sysfs, address: str, modules: dict | None = None,
                full: bool = True, override: bool = True) -> PciDevice:
    """One device's snapshot.  Raises UnknownDevice when there is no such
    device (or one gone before its ids could be read).

    The ids come from modalias when it is there (the kernel builds it from
    the same fields as vendor, device, subsystem_* and class).  Nothing is
    read that only one command uses (revision, the VF counts, numa_node,
    which `plan --json` reads itself), and the directory is listed only
    for a PF's virtfnN links: `plan` reads every device, and a listing
    (some 45 names) cost more than the reads of absent attributes
    (sriov_numvfs, physfn) that stand in for it.

    full=False reads only what the engine decides on: iommu_group,
    virtfns, sriov_drivers_autoprobe and boot_vga stay None (empty), for
    `plan`'s table, which shows none of them (a twentieth of its time).

    override=False leaves driver_override unread (None), for a read that
    must not wait while the kernel probes the device: see settled()."""
    base = f"{PCI_DEVICES}/{address}"

    def attr(name):
        return sysfs.read(f"{base}/{name}")

    def link(name):
        return sysfs.link(f"{base}/{name}")

    modalias = attr("modalias")
    ids = ids_from_modalias(modalias)
    if ids is not None:
        vendor, device, sv, sd, class_code = ids
    else:
        vendor = _hex(attr("vendor"))
        device = _hex(attr("device"))
        sv = _hex(attr("subsystem_vendor"))
        sd = _hex(attr("subsystem_device"))
        class_code = _hex(attr("class")) or 0
    if vendor is None or device is None:
        # No such device, or one gone before its ids could be read.
        raise UnknownDevice(address)
    modalias = modalias or make_modalias(vendor, device, sv or 0, sd or 0, class_code)
    override = _override(sysfs, base) if override else None
    driver = link("driver")
    if not driver:
        driver_module = None
    elif modules is not None and driver in modules:
        driver_module = modules[driver]
    else:
        driver_module = module_of_driver(sysfs, driver)
        if modules is not None:
            modules[driver] = driver_module
    # Only an SR-IOV PF has the sriov_* attributes and virtfnN links.
    if full and attr("sriov_numvfs") is not None:
        autoprobe = _int(attr("sriov_drivers_autoprobe"))
        virtfns = sorted(
            (e for e in sysfs.entries(base) if e.startswith("virtfn") and e[6:].isdigit()),
            key=lambda e: int(e[6:]))
    else:
        autoprobe, virtfns = None, []
    # The kernel shows boot_vga only for what pci_is_vga() calls VGA:
    # class 0300 or the pre-2.0 VGA-compatible 0001.
    boot_vga = _int(attr("boot_vga")) if full and (class_code >> 8) in (0x0300, 0x0001) \
        else None
    # Every field, in the class's order: the positional way is ten times
    # faster than keywords (_record), and a scan builds one per device.
    return PciDevice(
        address,
        vendor,
        device,
        sv,                         # subsystem_vendor
        sd,                         # subsystem_device
        class_code,
        modalias,
        driver,
        driver_module,
        override,                   # driver_override
        link("iommu_group") if full else None,
        link("physfn"),
        tuple(sysfs.link(f"{base}/{v}") for v in virtfns),
        None if autoprobe is None else bool(autoprobe),     # sriov_drivers_autoprobe
        None if boot_vga is None else bool(boot_vga),
    )


def _override(sysfs: Sysfs, base: str) -> str | None:
    """The device's driver_override; None when unset ("(null)") or absent."""
    value = sysfs.read(f"{base}/driver_override")
    return None if value in ("(null)", "") else value


def current_module(dev: PciDevice) -> str | None:
    """The module behind the device's bound driver: its `module` link when
    sysfs has one, else the driver name with '-' read as '_'."""
    if dev.driver is None:
        return None
    return normalise_module(dev.driver_module or dev.driver)


def is_vfio_driver(dev: PciDevice, vfio_modules) -> bool:
    """Is the device on vfio-pci or a variant?  `vfio_modules`: the modules
    with vfio_pci aliases (a variant with no alias still has "vfio" in its
    driver name by convention)."""
    mod = current_module(dev)
    if mod is None:
        return False
    return mod == CATCH_ALL or mod in vfio_modules or "vfio" in (dev.driver or "")


def numa_node(sysfs: Sysfs, address: str) -> int | None:
    """The device's NUMA node as the kernel gives it (-1: none); None
    without the attribute.  Not part of read_device: only `plan --json`
    shows it."""
    return _int(sysfs.read(f"{PCI_DEVICES}/{address}/numa_node"))


def fresh(sysfs: Sysfs, address: str, override: bool = True) -> PciDevice | None:
    """read_device, or None when there is no such device (any more)."""
    try:
        return read_device(sysfs, address, override=override)
    except (UnknownDevice, DeviceGone):
        return None


def settled(sysfs: Sysfs, early: PciDevice) -> PciDevice:
    """`early` (read with override=False) completed: its driver_override,
    then its driver read again.  This is a second look, not a wait for the
    kernel's own probe of a hot-added device: traced on Debian's 6.12 (bench
    figure 7), it returned before that probe had bound the host driver in
    3 hotplugs of 8.  Whoever unbinds names the driver it was asked about
    (Binder._override_sequence): the kernel answers ENODEV if the device
    has moved since, and the unbind itself waits in the kernel for a probe
    in progress.  Once that probe has ended, rebound() reads what it
    changed."""
    base = f"{PCI_DEVICES}/{early.address}"
    override = _override(sysfs, base)
    driver = sysfs.link(f"{base}/driver")
    if driver == early.driver:
        module = early.driver_module
    else:
        module = module_of_driver(sysfs, driver) if driver else None
    return early._replace(driver=driver, driver_module=module, driver_override=override)


def rebound(sysfs: Sysfs, dev: PciDevice, driver: str | None) -> PciDevice:
    """`dev` now on `driver` (just read from its link), the rest as read."""
    module = module_of_driver(sysfs, driver) if driver else None
    return dev._replace(driver=driver, driver_module=module)


def addresses(sysfs: Sysfs) -> list:
    return [a for a in sysfs.entries(PCI_DEVICES) if is_address(a)]


def scan(sysfs: Sysfs, warn=None, full: bool = True):
    """Every PCI device, in address order.  A device that vanishes while we
    scan is skipped: hot-unplug during a scan is normal.  So is one with an
    unreadable attribute (a symlink loop, a FIFO in a copied tree), with a
    warning: one odd device must not stop the plan for all the others."""
    modules: dict = {}      # driver -> module, read once a scan
    for address in addresses(sysfs):
        try:
            yield read_device(sysfs, address, modules, full)
        except (DeviceGone, UnknownDevice):
            continue
        except SysfsError as e:
            if warn is not None:
                warn(f"{address}: skipped: {e}")


def iommu_group_members(sysfs: Sysfs, group: str) -> list:
    return sysfs.entries(f"sys/kernel/iommu_groups/{group}/devices")
