"""The vfio_pci aliases a kernel offers, and which of them match a device.

Variant drivers mark their ids override-only; scripts/mod/file2alias.c then
publishes them in modules.alias as "alias vfio_pci:vXXXXXXXXdXXXXXXXX... MOD"
instead of "pci:".  kmod matches "vfio_" + the device's modalias against
these patterns as fnmatch globs, and so do we.
"""

from __future__ import annotations

from . import globs
from ._record import REQUIRED, record
from .modprobe import normalise_module, valid_module_name

PREFIX = "vfio_pci:"
CATCH_ALL = "vfio_pci"

# The seven fields of a pci/vfio_pci alias, in file2alias's order.  Vendor and
# device ids are upper-case hex, so the lower-case field letters never clash.
FIELDS_PATTERN = (
    r"^v(?P<v>[^d]*)d(?P<d>.*?)sv(?P<sv>.*?)sd(?P<sd>.*?)bc(?P<bc>.*?)sc(?P<sc>.*?)i(?P<i>.*)$")
FIELD_NAMES = ("v", "d", "sv", "sd", "bc", "sc", "i")
_FIELDS_RE = []


def _fields(pattern: str):
    """The pattern's seven fields as a match object, or None.  Only building
    the index needs this; a command that reads the index from the cache
    never imports `re`."""
    if not _FIELDS_RE:
        import re
        _FIELDS_RE.append(re.compile(FIELDS_PATTERN))
    return _FIELDS_RE[0].match(pattern)


class Alias(record("Alias", (
        ("module", REQUIRED),       # as modules.alias names it, normalised ('-' -> '_')
        ("pattern", REQUIRED),      # without the "vfio_pci:" prefix
        ("wildcards", REQUIRED),    # fields that are a bare "*"
        ("origin", REQUIRED)))):    # "path:line" it came from
    __slots__ = ()

    def matches(self, modalias: str) -> bool:
        """`modalias` as sysfs gives it ("pci:v...")."""
        if not modalias.startswith("pci:"):
            return False
        return globs.fnmatchcase(modalias[4:], self.pattern)

    @property
    def is_catch_all(self) -> bool:
        return self.module == CATCH_ALL


def wildcard_count(pattern: str) -> int:
    """How many of the seven fields are "*" (any).  file2alias appends a
    trailing "*" to patterns that do not end in one; that star belongs to no
    field choice, so a field like "i00*" counts as specific."""
    m = _fields(pattern)
    if not m:
        return pattern.count("*")
    return sum(1 for name in FIELD_NAMES if m.group(name) == "*")


def make_alias(module: str, pattern: str, origin: str) -> Alias:
    return Alias(module=normalise_module(module), pattern=pattern,
                 wildcards=wildcard_count(pattern), origin=origin)


def _vendor_key(pattern: str) -> str | None:
    """The exact vendor field, or None when the pattern matches any vendor."""
    m = _fields(pattern)
    if m and "*" not in m.group("v") and "?" not in m.group("v") and "[" not in m.group("v"):
        return m.group("v")
    return None


class VariantIndex:
    """Every vfio_pci alias of one kernel, looked up by device."""

    def __init__(self, aliases, source: Path | None = None, warnings=()):
        self.aliases = list(aliases)
        self.source = source
        self.warnings = list(warnings)
        self._modules = frozenset(a.module for a in self.aliases)
        self._by_vendor: dict = {}
        self._any_vendor: list = []
        for a in self.aliases:
            key = _vendor_key(a.pattern)
            if key is None:
                self._any_vendor.append(a)
            else:
                self._by_vendor.setdefault(key, []).append(a)

    def __repr__(self) -> str:
        return f"<VariantIndex {len(self.aliases)} aliases from {self.source}>"

    def __len__(self) -> int:
        return len(self.aliases)

    def matching(self, modalias: str) -> list:
        """The aliases that match, most specific first (fewest wildcards),
        then by module name so the order never depends on file order."""
        vendor = modalias[5:13] if modalias.startswith("pci:v") else None
        found = [a for a in self._by_vendor.get(vendor, ()) if a.matches(modalias)]
        found += [a for a in self._any_vendor if a.matches(modalias)]
        found.sort(key=lambda a: (a.wildcards, a.module, a.pattern))
        return found

    def modules(self) -> frozenset:
        return self._modules


def parse_modules_alias(text: str, origin: str) -> tuple:
    """(aliases, warnings) from modules.alias text.  Only vfio_pci: lines
    count; a malformed vfio_pci line is a warning, never fatal."""
    aliases, warnings = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.startswith("alias vfio_pci:"):
            continue
        parts = line.split()
        if len(parts) != 3 or not valid_module_name(parts[2]):
            warnings.append(f"{origin}:{lineno}: ignoring malformed alias line: {line.strip()!r}")
            continue
        aliases.append(make_alias(parts[2], parts[1][len(PREFIX):], f"{origin}:{lineno}"))
    return aliases, warnings


def parse_builtin_modinfo(data: bytes, origin: str) -> list:
    """Aliases of built-in modules, from modules.builtin.modinfo: NUL-separated
    "module.alias=value" records (built-in modules have no modules.alias line)."""
    aliases = []
    for n, entry in enumerate(data.split(b"\0"), 1):
        if b".alias=vfio_pci:" not in entry:
            continue
        text = entry.decode("ascii", "replace")
        module, _, value = text.partition(".alias=")
        if valid_module_name(module):
            aliases.append(make_alias(module, value[len(PREFIX):], f"{origin}:record {n}"))
    return aliases


def load_index(modules_dir: Path) -> VariantIndex:
    """Read modules.alias (and modules.builtin.modinfo when present).  A
    missing or unreadable modules.alias is not fatal: the index is empty and
    carries a warning naming the path, and every vfio decision falls back to
    the catch-all."""
    alias_path = modules_dir / "modules.alias"
    warnings = []
    try:
        text = alias_path.read_text(encoding="ascii", errors="replace")
    except OSError as e:
        reason = e.strerror or str(e)
        return VariantIndex([], alias_path, [
            f"{alias_path}: cannot read ({reason}); no vfio variants known, "
            f"falling back to {CATCH_ALL} (run depmod?)"])
    aliases, warnings = parse_modules_alias(text, str(alias_path))
    builtin = modules_dir / "modules.builtin.modinfo"
    try:
        data = builtin.read_bytes()
    except OSError:
        data = b""
    aliases += parse_builtin_modinfo(data, str(builtin))
    return VariantIndex(aliases, alias_path, warnings)
