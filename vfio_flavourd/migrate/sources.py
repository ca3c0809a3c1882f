"""Reading the VFIO configuration a machine already has.

Three places hold it: driverctl's saved overrides, `vfio-pci.ids=` on the
kernel command line, and vfio-pci `options` and `softdep` lines in
modprobe.d.  Reading never stops at a bad file or line: each becomes a
Problem with its place, and the rest is read on.

Places are shown as the managed machine sees them ("/etc/modprobe.d/x.conf"),
also under --root, because the output is meant for that machine's admin.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from ..modprobe import normalise_module
from ..pci import ADDRESS_RE
from ..safeio import read_text
from .ids import parse_ids

DRIVERCTL_DIR = "etc/driverctl.d"
CMDLINE = "proc/cmdline"
# kmod's search path, highest precedence first: a file name found in an
# earlier directory hides the same name in the later ones (modprobe.d(5)).
MODPROBE_DIRS = ("etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d",
                 "usr/lib/modprobe.d", "lib/modprobe.d")
DRIVER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")
VFIO_PCI = "vfio_pci"
# Where `migrate --write` puts the policy.
MIGRATED_FILE = "etc/vfio-flavourd/policy.d/50-migrated.yaml"


@dataclass(frozen=True)
class Origin:
    path: str                   # as the managed machine sees it
    line: Optional[int] = None
    last: Optional[int] = None  # the last line, when a trailing backslash continued it

    def __str__(self) -> str:
        return self.path if self.line is None else f"{self.path}:{self.line}"

    @property
    def lines(self) -> str:
        """`line 3`, or `lines 3-4` for a continued line."""
        if self.last is None or self.last == self.line:
            return f"line {self.line}"
        return f"lines {self.line}-{self.last}"


@dataclass(frozen=True)
class Problem:
    """Something not migrated (or worth knowing), with where it is."""
    origin: Origin
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


@dataclass(frozen=True)
class DriverctlOverride:
    kind: ClassVar[str] = "driverctl"
    origin: Origin
    address: str
    driver: str                 # a driver name, as driverctl writes it to driver_override

    @property
    def text(self) -> str:
        return f"{self.address} -> {self.driver}"


@dataclass(frozen=True)
class IdsSetting:
    """One `ids=` value for vfio-pci, from the kernel command line
    (kind "cmdline") or an `options` line in modprobe.d (kind "modprobe")."""
    kind: str
    origin: Origin
    option: str                 # as written: "vfio-pci.ids=10de:1b80" or "ids=10de:1b80"
    text: str = ""              # the whole line, for modprobe.d
    ids: tuple = ()             # IdSpec, the entries that could be read
    other_options: tuple = ()   # the line's other vfio-pci options


@dataclass(frozen=True)
class Softdep:
    """`softdep MODULE pre: ... vfio-pci ...`: load vfio-pci before MODULE so
    that vfio-pci, with its ids=, claims the devices before MODULE can."""
    kind: ClassVar[str] = "softdep"
    origin: Origin
    module: str
    text: str


@dataclass
class Found:
    sources: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def problem(self, origin: Origin, message: str) -> None:
        self.problems.append(Problem(origin, message))

    def note(self, origin: Origin, message: str) -> None:
        self.notes.append(Problem(origin, message))


def shown(rel: str) -> str:
    return "/" + rel.strip("/")


def _read_text(root, rel: str, found: Found) -> Optional[str]:
    """A file's text, or None with a problem recorded.  A missing file is
    simply absent, not a problem."""
    try:
        return read_text(root.path(rel))
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        found.problem(Origin(shown(rel)), "not UTF-8 text; skipped")
    except OSError as e:
        found.problem(Origin(shown(rel)), f"cannot read: {e.strerror or e}; skipped")
    return None


def _listdir(root, rel: str, found: Found) -> list:
    try:
        return sorted(os.listdir(root.path(rel)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        found.problem(Origin(shown(rel)), f"cannot list: {e.strerror or e}; skipped")
        return []


# -- driverctl ---------------------------------------------------------------------

def read_driverctl(root, found: Found) -> None:
    """driverctl saves `set-override DEV DRV` as the file BUS-DEV in
    /etc/driverctl.d holding DRV and a newline; its udev rule and
    driverctl@.service write DRV to driver_override again at every boot."""
    for name in _listdir(root, DRIVERCTL_DIR, found):
        rel = f"{DRIVERCTL_DIR}/{name}"
        where = Origin(shown(rel), 1)
        bus, sep, address = name.partition("-")
        if not sep or not bus:
            found.note(Origin(shown(rel)), "not a driverctl override (BUS-DEVICE); ignored")
            continue
        if bus != "pci":
            found.note(Origin(shown(rel)), f"an override on bus {bus!r}: vfio-flavourd "
                       "handles PCI devices only; left to driverctl")
            continue
        if not ADDRESS_RE.match(address):
            found.problem(where, f"{address!r} is not a PCI address "
                          "(DOMAIN:BUS:SLOT.FUNCTION, lower-case); skipped")
            continue
        text = _read_text(root, rel, found)
        if text is None:
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            found.problem(where, "empty: driverctl does not load an empty override; skipped")
        elif len(lines) > 1:
            found.problem(where, f"expected one driver name, found {len(lines)} lines; skipped")
        elif not DRIVER_NAME_RE.match(lines[0]):
            found.problem(where, f"{lines[0]!r} is not a driver name; skipped")
        else:
            found.sources.append(DriverctlOverride(where, address, lines[0]))


# -- the kernel command line -------------------------------------------------------

def split_args(text: str) -> list:
    """Split a command line as the kernel's next_arg() does: on blanks
    outside double quotes, quotes removed.  Stops at "--", after which the
    arguments belong to init, not to modules."""
    args, cur, quoted, started = [], [], False, False
    for ch in text:
        if ch == '"':
            quoted, started = not quoted, True
        elif ch.isspace() and not quoted:
            if started:
                args.append("".join(cur))
            cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        args.append("".join(cur))
    return args[:args.index("--")] if "--" in args else args


def _ids_setting(kind, where, option, value, found, text="", other=()) -> IdsSetting:
    specs = []
    for entry, spec, reason in parse_ids(value):
        if spec is None:
            found.problem(where, f"{option.partition('=')[0]}: {entry!r}: {reason}; skipped")
        else:
            specs.append(spec)
    if not value.strip():
        found.note(where, f"{option}: empty value, no ids")
    return IdsSetting(kind, where, option, text, tuple(specs), tuple(other))


def read_cmdline(root, found: Found) -> None:
    text = _read_text(root, CMDLINE, found)
    if text is None:
        return
    where = Origin(shown(CMDLINE), 1)
    for arg in split_args(text):
        key, eq, value = arg.partition("=")
        # The kernel's parameq() treats '-' and '_' in names alike.
        if eq and key.replace("-", "_") == f"{VFIO_PCI}.ids":
            found.sources.append(_ids_setting("cmdline", where, arg, value, found))


# -- modprobe.d --------------------------------------------------------------------

def modprobe_files(root, found: Found) -> list:
    """[(rel, hidden)]: the *.conf files kmod reads, in the order it reads
    them (by file name), each with the same-named files it hides."""
    chosen: dict = {}
    for d in MODPROBE_DIRS:
        for name in _listdir(root, d, found):
            if not name.endswith(".conf"):
                continue
            rel = f"{d}/{name}"
            if name in chosen:
                if os.path.realpath(root.path(rel)) != os.path.realpath(
                        root.path(chosen[name][0])):
                    chosen[name][1].append(rel)
            else:
                chosen[name] = (rel, [])
    return [chosen[n] for n in sorted(chosen)]


def logical_lines(text: str):
    """(first line number, last line number, line) with backslash-newline
    continuations joined, as kmod reads modprobe.d files."""
    start, parts = None, []
    n = 0
    for n, raw in enumerate(text.splitlines(), 1):
        if start is None:
            start = n
        if raw.endswith("\\"):
            parts.append(raw[:-1])
            continue
        parts.append(raw)
        yield start, n, " ".join(p.strip() for p in parts).strip()
        start, parts = None, []
    if parts:
        yield start, n, " ".join(p.strip() for p in parts).strip()


def _modprobe_line(where: Origin, line: str, found: Found) -> None:
    words = line.split()
    if len(words) < 2 or (words[0] != "softdep" and normalise_module(words[1]) != VFIO_PCI):
        return
    cmd = words[0]
    if cmd == "options":
        opts = split_args(line.split(None, 2)[2]) if len(words) > 2 else []
        ids = [o for o in opts if o.partition("=")[0].replace("-", "_") == "ids"]
        other = [o for o in opts if o not in ids]
        for option in ids:
            found.sources.append(_ids_setting("modprobe", where, option,
                                              option.partition("=")[2], found, line, other))
    elif cmd == "softdep":
        pre = []
        for w in words[2:]:
            if w == "post:":
                break
            if w != "pre:":
                pre.append(w)
        if "pre:" in words and VFIO_PCI in (normalise_module(m) for m in pre):
            found.sources.append(Softdep(where, words[1], line))
    elif cmd == "install":
        found.note(where, f"{line!r} runs a command of its own when vfio-pci loads; "
                   "vfio-flavourd cannot translate it: read it, and write rules for "
                   "the devices it claims (match: address) by hand")


def read_modprobe(root, found: Found) -> None:
    for rel, hidden in modprobe_files(root, found):
        _read_modprobe_file(root, rel, found)
        for h in hidden:
            # Only worth a word when it holds vfio-pci settings that are
            # not in effect, and so not migrated.
            shadow = Found()
            _read_modprobe_file(root, h, shadow)
            if shadow.sources:
                found.note(Origin(shown(h)), f"hidden by {shown(rel)}, so modprobe does "
                           "not read it; its vfio-pci settings are not in effect and "
                           "were not migrated")


def _read_modprobe_file(root, rel: str, found: Found) -> None:
    text = _read_text(root, rel, found)
    if text is None:
        return
    for first, last, line in logical_lines(text):
        if line and not line.startswith("#"):
            _modprobe_line(Origin(shown(rel), first, last), line, found)


def read_all(root) -> Found:
    found = Found()
    read_driverctl(root, found)
    read_cmdline(root, found)
    read_modprobe(root, found)
    return found
