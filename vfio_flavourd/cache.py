"""A compiled cache of the policy and the variant index.

The udev callout runs on the boot path of every PCI device, and a one-shot
command such as `apply ADDRESS` is compared with driverctl: parsing YAML
and modules.alias each time would cost more than the interpreter's start.
The cache is keyed by the stat of every input (policy directories and
files, modules.alias, modules.builtin.modinfo), so any edit, added or
masked file, or new kernel package invalidates it.

Where it lives: the managed machine's run/vfio-flavourd/ (on a real host
/run/vfio-flavourd/, shared by the callout and the commands).  A command
on a copy of another machine (`--root DIR`) does not write into DIR: its
cache goes to the user's cache directory instead.
"""

from __future__ import annotations

import marshal
import os
import sys

from . import __version__, safeio
from .root import POLICY_LAYERS, RUN_DIR

CACHE_NAME = "callout-cache.marshal"
# Bumped when the cached classes change shape (2: named tuples, not
# dataclasses; 3: aliases matched as glibc fnmatch, malformed ones left
# out; 4: marshal of plain values, not pickle; 5: the index's and the
# policy's keys apart, and the variant modules as plain names; 6: the
# index keeps what matched each modalias).
FORMAT = 6

# marshal, not pickle: marshal is built in, while even the C unpickler
# imports copyreg and _compat_pickle, which under QEMU/TCG cost `apply` a
# tenth of its time.  The objects go in as plain tuples and dicts, each
# tagged with its class's name, and come back as the classes below; like
# pickle, an object's __dict__ is restored without calling __init__.


def _classes(policy_too: bool = True) -> dict:
    from .aliases import Alias, VariantIndex
    if not policy_too:
        return {"Alias": Alias, "VariantIndex": VariantIndex}
    from .policy import ClassPrefix, Match, Policy, PolicyFile, Rule
    return {c.__name__: c for c in (Alias, VariantIndex, ClassPrefix, Match, Policy, PolicyFile,
                                    Rule)}


_TAG = "\0vfio-flavourd:"


def _plain(obj, classes: dict):
    kind = type(obj)
    if kind in (str, int, bool, float, type(None), bytes):
        return obj
    name = kind.__name__
    if classes.get(name) is kind:
        if isinstance(obj, tuple):
            return (_TAG + name, tuple(_plain(x, classes) for x in obj))
        return (_TAG + name, _plain(vars(obj), classes))
    if kind in (tuple, list, set, frozenset):
        return kind(_plain(x, classes) for x in obj)
    if kind is dict:
        return {k: _plain(v, classes) for k, v in obj.items()}
    raise TypeError(f"cannot cache a {name}")


def _restore(obj, classes: dict):
    kind = type(obj)
    if kind is tuple and len(obj) == 2 and type(obj[0]) is str and obj[0].startswith(_TAG):
        cls = classes[obj[0][len(_TAG):]]
        if issubclass(cls, tuple):
            return cls(*(_restore(x, classes) for x in obj[1]))
        new = cls.__new__(cls)
        new.__dict__.update(_restore(obj[1], classes))
        return new
    if kind in (tuple, list, set, frozenset):
        return kind(_restore(x, classes) for x in obj)
    if kind is dict:
        return {k: _restore(v, classes) for k, v in obj.items()}
    return obj


def _stat_key(path) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), None)
    return (str(path), st.st_mtime_ns, st.st_size, st.st_ino)


def index_key(root) -> tuple:
    """Everything the variant index was built from."""
    mdir = root.modules_fspath()
    return (__version__, FORMAT, sys.version_info[:2], root.kernel_release,
            _stat_key(mdir + "/modules.alias"), _stat_key(mdir + "/modules.builtin.modinfo"))


def policy_key(root, policy_paths=()) -> tuple:
    """Everything the policy was built from: each layer's directory and
    files, or the files named on the command line."""
    if policy_paths:
        return tuple(_stat_key(p) for p in policy_paths)
    parts = []
    for d in (root.fspath(p) for p in POLICY_LAYERS):
        parts.append(_stat_key(d))
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        parts += [_stat_key(os.path.join(d, n)) for n in names if n.endswith(".yaml")]
    return tuple(parts)


def location(root, policy_paths=()) -> str | None:
    """Where a command keeps the cache for `root`; None: keep none (policy
    files named on the command line are one-off)."""
    return None if policy_paths else file_for(root, CACHE_NAME)


def file_for(root, name: str) -> str:
    """A cache file of `root`'s: in its run/vfio-flavourd/ on a real host,
    else in the user's cache directory, named after the root's path."""
    if root.is_host:
        return root.fspath(f"{RUN_DIR}/{name}")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    escaped = root.dirname.strip("/").replace("_", "__").replace("/", "_")
    return os.path.join(base, "vfio-flavourd", f"root_{escaped}.{name}")


# Any unreadable, stale or odd cache is a miss.
_MISS = (OSError, EOFError, ValueError, TypeError, KeyError, AttributeError, RecursionError,
         MemoryError)


def _read(root, path: str | None, policy_paths, policy_too: bool):
    """The cache file's (modules, warnings, policy, index) when what they
    were built from is unchanged (the policy's inputs only if policy_too),
    else None."""
    # Only ever load a file that we own and nobody else can write.
    data = safeio.read_private(path or root.fspath(f"{RUN_DIR}/{CACHE_NAME}"))
    if data is None:
        return None
    ikey, pkey, *rest = marshal.loads(data)
    if ikey != index_key(root) or (policy_too and pkey != policy_key(root, policy_paths)):
        return None
    return rest


def load_cached(root, policy_paths=(), path: str | None = None, policy_too: bool = True):
    """(policy, index) from the cache when it is current, else None.
    `path`: the cache file (default: the root's run/vfio-flavourd/).
    policy_too=False: (None, index), for a command that decides nothing,
    whatever the policy files' state, without the policy's classes."""
    try:
        got = _read(root, path, policy_paths, policy_too)
        if got is None:
            return None
        _modules, _warnings, policy, index = got
        classes = _classes(policy_too)
        return (_restore(policy, classes) if policy_too else None), _restore(index, classes)
    except _MISS:
        return None


def load_modules(root, path: str | None = None):
    """(modules, warnings) of the cached variant index when it is current,
    else None: the names of the modules with vfio_pci aliases (frozenset)
    and the index's warnings, without restoring the index, whose classes
    bring the alias matcher's modules: all that `release` needs of it."""
    try:
        got = _read(root, path, (), False)
        if got is None:
            return None
        modules, warnings, _policy, _index = got
        return frozenset(modules), list(warnings)
    except _MISS:
        return None


def _without_pathlib(policy, index) -> tuple:
    """The policy and index with their file names as strings: a Path would
    bring pathlib, with re behind it, into every command that reads the
    cache.  The names print the same."""
    from .aliases import VariantIndex
    from .policy import Policy
    files = [f._replace(path=str(f.path), masks=tuple(str(m) for m in f.masks))
             for f in policy.files]
    source = None if index.source is None else str(index.source)
    return Policy(policy.rules, files), VariantIndex(index.aliases, source, index.warnings)


def store(root, policy, index, policy_paths=(), path: str | None = None) -> None:
    """Write the cache atomically; failure to cache is never an error."""
    path = path or root.fspath(f"{RUN_DIR}/{CACHE_NAME}")
    policy, index = _without_pathlib(policy, index)
    classes = _classes()
    try:
        data = marshal.dumps((index_key(root), policy_key(root, policy_paths),
                              tuple(sorted(index.modules())), tuple(index.warnings),
                              _plain(policy, classes), _plain(index, classes)))
    except (TypeError, ValueError, RecursionError):
        return
    d = os.path.dirname(path)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}")
    from .errors import FlavourdError
    try:
        if root.is_host or path.startswith(root.fspath(RUN_DIR) + "/"):
            root.ensure_dir(RUN_DIR)        # inside the root, checked
        else:
            os.makedirs(d, mode=0o700, exist_ok=True)
        safeio.write_new(tmp, data, mode=0o600, exclusive=True)
        os.replace(tmp, path)
    except (OSError, FlavourdError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
