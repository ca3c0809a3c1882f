"""The flavour policy: rules and how a rule's match applies to a device.

Pure data and logic: loading and validating the YAML lives in policy_load.
"""

from __future__ import annotations

from .globs import fnmatchcase
from ._record import REQUIRED, record
from .pci import PciDevice

FLAVOURS = ("vfio", "host", "ignore")
GROUP_MODES = ("device", "all")


class ClassPrefix(record("ClassPrefix", (("value", REQUIRED), ("digits", REQUIRED)))):
    """A prefix of the 24-bit class code: "02" (base), "0200" (+subclass),
    "020000" (+prog-if)."""
    __slots__ = ()

    def matches(self, class_code: int) -> bool:
        return (class_code >> (24 - 4 * self.digits)) == self.value

    def __str__(self) -> str:
        return f"{self.value:0{self.digits}x}"


class Match(record("Match", (
        ("vendor", None),
        ("device", None),
        ("subsystem_vendor", None),
        ("subsystem_device", None),
        ("class_", None),               # of ClassPrefix
        ("address", None),              # globs
        ("physfn", None),               # globs
        ("virtfn", None),
        ("driver", None)))):            # globs on the bound driver's name
    """What a rule matches; None: any.  Each set key is a tuple (any of)."""
    __slots__ = ()

    def check(self, dev: PciDevice) -> list:
        """[(key, matched, reason)] for every key this match sets, in a fixed
        order.  The rule matches when every entry matched."""
        out = []

        def ids(key, have):
            want = getattr(self, key)
            if want is None:
                return
            shown = "/".join(f"{w:04x}" for w in want)
            if have is None:
                out.append((key, False, f"{key}: device has none (wanted {shown})"))
            else:
                ok = have in want
                out.append((key, ok, f"{key} {have:04x} {'is' if ok else 'is not'} {shown}"))

        def globs(key, have, label):
            want = getattr(self, key if key != "class_" else "class_")
            if want is None:
                return
            shown = " or ".join(want)
            if have is None:
                out.append((key, False, f"{label}: device has none (wanted {shown})"))
            else:
                ok = any(fnmatchcase(have, g) for g in want)
                out.append((key, ok, f"{label} {have} {'matches' if ok else 'does not match'} {shown}"))

        ids("vendor", dev.vendor)
        ids("device", dev.device)
        ids("subsystem_vendor", dev.subsystem_vendor)
        ids("subsystem_device", dev.subsystem_device)
        if self.class_ is not None:
            ok = any(c.matches(dev.class_code) for c in self.class_)
            shown = " or ".join(str(c) for c in self.class_)
            out.append(("class", ok, f"class {dev.class_code:06x} "
                        f"{'starts with' if ok else 'does not start with'} {shown}"))
        globs("address", dev.address, "address")
        globs("physfn", dev.physfn, "physfn")
        if self.virtfn is not None:
            ok = dev.is_vf == self.virtfn
            what = f"a VF of {dev.physfn}" if dev.is_vf else "not a VF"
            out.append(("virtfn", ok, f"virtfn: device is {what} (wanted virtfn: "
                        f"{str(self.virtfn).lower()})"))
        globs("driver", dev.driver, "driver")
        return out

    def matches(self, dev: PciDevice) -> bool:
        """check()'s verdict without its reasons: the engine asks it of every
        rule for every device, and only `explain` shows the reasons."""
        for want, have in ((self.vendor, dev.vendor), (self.device, dev.device),
                           (self.subsystem_vendor, dev.subsystem_vendor),
                           (self.subsystem_device, dev.subsystem_device)):
            if want is not None and (have is None or have not in want):
                return False
        if self.class_ is not None and not any(c.matches(dev.class_code) for c in self.class_):
            return False
        for want, have in ((self.address, dev.address), (self.physfn, dev.physfn)):
            if want is not None and (have is None or not any(fnmatchcase(have, g) for g in want)):
                return False
        if self.virtfn is not None and dev.is_vf != self.virtfn:
            return False
        want = self.driver
        return want is None or (dev.driver is not None
                                and any(fnmatchcase(dev.driver, g) for g in want))


class Rule(record("Rule", (
        ("name", REQUIRED),
        ("match", REQUIRED),            # a Match
        ("flavour", REQUIRED),
        ("origin", "<policy>"),         # "file:line" of the rule
        ("prefer", ()),
        ("deny", ()),
        ("variants", True),
        ("fallback", "vfio_pci"),       # None: leave the device alone
        ("description", None),
        # Binding behaviour, used by the binder (see docs/policy).
        ("force", False),
        ("takeover", False),
        ("upgrade", False),
        ("group", "device"),
        ("sriov_drivers_autoprobe", None),
        ("allow_new_id", False),
        ("unbind_timeout", None)))):   # seconds; None: the binder's default (60)
    __slots__ = ()

    def __repr__(self) -> str:
        return f"<Rule {self.name} ({self.flavour}) at {self.origin}>"


class PolicyFile(record("PolicyFile", (
        ("path", REQUIRED),             # a Path
        ("layer", REQUIRED),            # the directory it was found in, or "command line"
        ("masks", ()),                  # same-named files in lower layers it hides
        ("disabled", False)))):         # empty or a link to /dev/null
    __slots__ = ()


class Policy:
    def __init__(self, rules: list | None = None, files: list | None = None):
        self.rules = [] if rules is None else rules
        self.files = [] if files is None else files     # PolicyFile records, for `explain`

    def __repr__(self) -> str:
        return f"<Policy {len(self.rules)} rules from {len(self.files)} files>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Policy) and (self.rules, self.files) == (other.rules, other.files)

    def first_match(self, dev: PciDevice) -> Rule | None:
        for rule in self.rules:
            if rule.match.matches(dev):
                return rule
        return None
