"""The vfio_pci aliases a kernel offers, and which of them match a device.

Variant drivers mark their ids override-only; scripts/mod/file2alias.c then
publishes them in modules.alias as "alias vfio_pci:vXXXXXXXXdXXXXXXXX... MOD"
instead of "pci:".  kmod matches "vfio_" + the device's modalias against
these patterns with glibc's fnmatch(3), and so do we (globmatch), on the
patterns depmod would index: depmod normalises each alias ('-' to '_'
outside brackets) and drops one with unbalanced brackets.
"""

from __future__ import annotations

from . import globmatch, globs
from ._record import REQUIRED, record
from .modprobe import CATCH_ALL, normalise_module, valid_module_name
from .safeio import read_bytes, read_text

PREFIX = "vfio_pci:"

# The seven fields of a pci/vfio_pci alias, in file2alias's order.  Vendor and
# device ids are upper-case hex, so the lower-case field letters never clash.
# \Z, not $: "$" also matches before a trailing newline.
FIELDS_PATTERN = (
    r"v(?P<v>[^d]*)d(?P<d>.*?)sv(?P<sv>.*?)sd(?P<sd>.*?)bc(?P<bc>.*?)sc(?P<sc>.*?)i(?P<i>.*)\Z")
_FIELDS_RE = []


def _fields_re():
    """The fields regex, compiled when first needed: only building the
    index needs it, and a command that reads the index from the cache
    never imports `re`."""
    if not _FIELDS_RE:
        import re
        _FIELDS_RE.append(re.compile(FIELDS_PATTERN, re.DOTALL))
    return _FIELDS_RE[0]


FIELD_NAMES = ("v", "d", "sv", "sd", "bc", "sc", "i")


# Each pattern's regex, compiled when first needed: a udev callout tries
# one or two of the aliases, so compiling them all at load would be waste.
_REGEX: dict = {}


class Alias(record("Alias", (
        ("module", REQUIRED),       # as modules.alias names it, normalised ('-' -> '_')
        ("pattern", REQUIRED),      # without the "vfio_pci:" prefix
        ("wildcards", REQUIRED),    # fields with a "*" in them
        ("origin", REQUIRED)))):    # "path:line" it came from
    __slots__ = ()

    def matches(self, modalias: str) -> bool:
        """`modalias` as sysfs gives it ("pci:v...")."""
        if not modalias.startswith("pci:"):
            return False
        pattern = self.pattern
        if "[" not in pattern and "?" not in pattern and "\\" not in pattern:
            # '*' alone means the same to glibc and to globs, which needs no re.
            return globs.fnmatchcase(modalias[4:], pattern)
        regex = _REGEX.get(pattern)
        if regex is None:
            regex = _REGEX[pattern] = globmatch.compile(pattern)
        return regex.fullmatch(modalias[4:]) is not None

    @property
    def is_catch_all(self) -> bool:
        return self.module == CATCH_ALL


def fields(pattern: str):
    """The seven fields of a pattern, or None when it has not got them."""
    m = _fields_re().match(pattern)
    return None if m is None else [m.group(name) for name in FIELD_NAMES]


def wildcard_count(pattern: str) -> int:
    """How many of the seven fields hold a "*" ("d000010*" is as loose as
    "*" for ranking: the count is per field, unweighted, as in the commit
    that added these aliases).  file2alias appends a trailing "*" to a
    pattern that does not end in one; that star belongs to no field choice,
    so a last field like "i00*" counts as specific."""
    parts = fields(pattern)
    if parts is None:
        raise ValueError(f"not a seven-field pci alias: {pattern!r}")
    last = parts[-1]
    if len(last) > 1 and last.endswith("*"):
        parts[-1] = last[:-1]
    return sum(1 for f in parts if "*" in f)


def alias_fields(pattern: str) -> dict | None:
    """{"v": ..., "d": ..., ..., "i": ...}: the pattern's seven fields as
    written, or None when it is not shaped like a pci alias."""
    m = _fields_re().match(pattern)
    return None if m is None else {name: m.group(name) for name in FIELD_NAMES}


def make_alias(module: str, pattern: str, origin: str) -> Alias:
    return Alias(module=normalise_module(module), pattern=pattern,
                 wildcards=wildcard_count(pattern), origin=origin)


def _vendor_key(pattern: str) -> str | None:
    """The exact vendor field, or None when the pattern matches any vendor."""
    m = _fields_re().match(pattern)
    if m and not any(c in m.group("v") for c in "*?[\\"):
        return m.group("v")
    return None


class VariantIndex:
    """Every vfio_pci alias of one kernel, looked up by device."""

    KEEP = 4096         # modaliases whose matching() is kept

    def __init__(self, aliases, source: Path | None = None, warnings=()):
        self.aliases = list(aliases)
        self.source = source
        self.warnings = list(warnings)
        self._modules = frozenset(a.module for a in self.aliases)
        self._by_vendor: dict = {}
        self._any_vendor: list = []
        self._matching: dict = {}       # modalias -> matching() (a tuple)
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
        then by module name so the order never depends on file order.
        Kept per modalias for this index: the daemon asks again for every
        device of a kind (VFs, a card plugged again), and under QEMU/TCG
        the fnmatch of each alias was on the way to each hotplug's unbind."""
        found = self._matching.get(modalias)
        if found is None:
            vendor = modalias[5:13] if modalias.startswith("pci:v") else None
            found = [a for a in self._by_vendor.get(vendor, ()) if a.matches(modalias)]
            found += [a for a in self._any_vendor if a.matches(modalias)]
            found.sort(key=lambda a: (a.wildcards, a.module, a.pattern))
            if len(self._matching) >= self.KEEP:
                self._matching.clear()
            self._matching[modalias] = found = tuple(found)
        return list(found)

    def modules(self) -> frozenset:
        return self._modules


def depmod_normalise(alias: str):
    """The alias as depmod indexes it (kmod's alias_normalize): '-' becomes
    '_' outside brackets; None when a bracket is unbalanced, which depmod
    refuses to index ("Unmatched bracket"), so kmod never matches it."""
    out, i, n = [], 0, len(alias)
    while i < n:
        c = alias[i]
        if c == "]":
            return None
        if c == "[":
            end = alias.find("]", i)
            if end < 0:
                return None
            out.append(alias[i:end + 1])
            i = end + 1
            continue
        out.append("_" if c == "-" else c)
        i += 1
    return "".join(out)


def checked_alias(module: str, value: str, origin: str):
    """(Alias, None) for a vfio_pci alias kmod would use, else (None, why)."""
    norm = depmod_normalise(value)
    if norm is None:
        return None, "unbalanced brackets: depmod does not index it, so kmod never matches it"
    pattern = norm[len(PREFIX):]
    if fields(pattern) is None:
        return None, ("not the seven fields v d sv sd bc sc i of a PCI alias; it cannot be "
                      "ranked against the others")
    try:
        globmatch.translate(pattern)
    except globmatch.Unsupported as e:
        return None, f"unsupported pattern: {e}"
    return make_alias(module, pattern, origin), None


# depmod reads "vfio-pci:" as "vfio_pci:" too.
_LINE_PREFIXES = ("alias vfio_pci:", "alias vfio-pci:")


def parse_modules_alias(text: str, origin: str) -> tuple:
    """(aliases, warnings) from modules.alias text.  Only vfio_pci: lines
    count; a malformed vfio_pci line is a warning, never fatal."""
    aliases, warnings = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.startswith(_LINE_PREFIXES):
            continue
        parts = line.split()
        if len(parts) != 3 or not valid_module_name(parts[2]):
            warnings.append(f"{origin}:{lineno}: ignoring malformed alias line: {line.strip()!r}")
            continue
        alias, why = checked_alias(parts[2], parts[1], f"{origin}:{lineno}")
        if alias is None:
            warnings.append(f"{origin}:{lineno}: ignoring alias {parts[1]!r}: {why}")
            continue
        aliases.append(alias)
    return aliases, warnings


def parse_builtin_modinfo(data: bytes, origin: str, warnings=None) -> list:
    """Aliases of built-in modules, from modules.builtin.modinfo: NUL-separated
    "module.alias=value" records (built-in modules have no modules.alias line)."""
    aliases = []
    for n, entry in enumerate(data.split(b"\0"), 1):
        if b".alias=vfio_pci:" not in entry and b".alias=vfio-pci:" not in entry:
            continue
        text = entry.decode("ascii", "replace")
        module, _, value = text.partition(".alias=")
        if not valid_module_name(module):
            continue
        alias, why = checked_alias(module, value, f"{origin}:record {n}")
        if alias is None:
            if warnings is not None:
                warnings.append(f"{origin}:record {n}: ignoring alias {value!r}: {why}")
            continue
        aliases.append(alias)
    return aliases


def load_index(modules_dir: Path) -> VariantIndex:
    """Read modules.alias (and modules.builtin.modinfo when present).  A
    missing or unreadable modules.alias is not fatal: the index is empty and
    carries a warning naming the path, and every vfio decision falls back to
    the catch-all."""
    alias_path = modules_dir / "modules.alias"
    warnings = []
    try:
        text = read_text(alias_path, "ascii", "replace")
    except OSError as e:
        reason = e.strerror or str(e)
        return VariantIndex([], alias_path, [
            f"{alias_path}: cannot read ({reason}); no vfio variants known, "
            f"falling back to {CATCH_ALL} (run depmod?)"])
    aliases, warnings = parse_modules_alias(text, str(alias_path))
    builtin = modules_dir / "modules.builtin.modinfo"
    try:
        data = read_bytes(builtin)
    except FileNotFoundError:
        data = b""
    except OSError as e:
        warnings.append(f"{builtin}: cannot read ({e.strerror or e}); built-in variants "
                        "are not known")
        data = b""
    aliases += parse_builtin_modinfo(data, str(builtin), warnings)
    return VariantIndex(aliases, alias_path, warnings)
