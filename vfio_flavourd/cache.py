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

import os

from . import __version__
from .root import POLICY_LAYERS, RUN_DIR

CACHE_NAME = "callout-cache.pickle"
# Bumped when the pickled classes change shape (2: named tuples, not dataclasses).
FORMAT = 2

try:
    # The C unpickler alone: pickle.py imports re, struct and codecs, a
    # quarter of a one-shot command's imports, to load a file it only reads.
    from _pickle import load as _load
except ImportError:        # not CPython
    from pickle import load as _load


def _stat_key(path) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), None)
    return (str(path), st.st_mtime_ns, st.st_size, st.st_ino)


def input_key(root, policy_paths=()) -> tuple:
    """Everything the cached objects were built from."""
    parts = [__version__, FORMAT, root.kernel_release]
    if policy_paths:
        parts += [_stat_key(p) for p in policy_paths]
    else:
        for d in (root.fspath(p) for p in POLICY_LAYERS):
            parts.append(_stat_key(d))
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            parts += [_stat_key(os.path.join(d, n)) for n in names if n.endswith(".yaml")]
    mdir = root.modules_fspath()
    parts.append(_stat_key(mdir + "/modules.alias"))
    parts.append(_stat_key(mdir + "/modules.builtin.modinfo"))
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


def load_cached(root, policy_paths=(), path: str | None = None):
    """(policy, index) from the cache when it is current, else None.
    `path`: the cache file (default: the root's run/vfio-flavourd/)."""
    path = path or root.fspath(f"{RUN_DIR}/{CACHE_NAME}")
    try:
        st = os.stat(path)
        # Only ever unpickle a file that we own and nobody else can write.
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        with open(path, "rb") as f:
            key, policy, index = _load(f)
    except Exception:   # noqa: BLE001  any unreadable or stale cache is a miss
        return None
    if key != input_key(root, policy_paths):
        return None
    return policy, index


def _without_pathlib(policy, index) -> tuple:
    """The policy and index with their file names as strings: unpickling a
    Path imports pathlib, with re behind it, into every command that reads
    the cache.  The names print the same."""
    from .aliases import VariantIndex
    from .policy import Policy
    files = [f._replace(path=str(f.path), masks=tuple(str(m) for m in f.masks))
             for f in policy.files]
    source = None if index.source is None else str(index.source)
    return Policy(policy.rules, files), VariantIndex(index.aliases, source, index.warnings)


def store(root, policy, index, policy_paths=(), path: str | None = None) -> None:
    """Write the cache atomically; failure to cache is never an error."""
    import pickle
    path = path or root.fspath(f"{RUN_DIR}/{CACHE_NAME}")
    policy, index = _without_pathlib(policy, index)
    d = os.path.dirname(path)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}")
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        with open(tmp, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            pickle.dump((input_key(root, policy_paths), policy, index), f,
                        protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except (OSError, pickle.PicklingError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
