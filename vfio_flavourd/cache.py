"""A compiled cache of the policy and the variant index, for the udev callout.

The callout runs on the boot path of every PCI device; parsing YAML and
modules.alias each time would cost more than the interpreter's start.  The
cache lives in run/vfio-flavourd/ and is keyed by the stat of every input
(policy directories and files, modules.alias, modules.builtin.modinfo), so
any edit, added or masked file, or new kernel package invalidates it.
"""

from __future__ import annotations

import os
import pickle

from . import __version__, safeio

CACHE_NAME = "callout-cache.pickle"
# Bumped when the pickled classes change shape (2: named tuples, not
# dataclasses) or what they mean (3: aliases matched as glibc fnmatch,
# malformed ones left out).
FORMAT = 3


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
        for d in root.policy_dirs():
            parts.append(_stat_key(d))
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            parts += [_stat_key(os.path.join(d, n)) for n in names if n.endswith(".yaml")]
    mdir = root.modules_dir()
    parts.append(_stat_key(mdir / "modules.alias"))
    parts.append(_stat_key(mdir / "modules.builtin.modinfo"))
    return tuple(parts)


def load_cached(root, policy_paths=()):
    """(policy, index) from the cache when it is current, else None."""
    path = root.run_dir() / CACHE_NAME
    try:
        fd = safeio.open_regular(path, os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            # Only ever unpickle a file that we (root) own and nobody else can write.
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return None
            key, policy, index = pickle.load(f)
    except (OSError, pickle.PickleError, EOFError, ValueError, TypeError, AttributeError,
            RecursionError):
        return None
    if key != input_key(root, policy_paths):
        return None
    return policy, index


def store(root, policy, index, policy_paths=()) -> None:
    """Write the cache atomically; failure to cache is never an error."""
    from .errors import FlavourdError
    from .root import RUN_DIR
    try:
        d = root.ensure_dir(RUN_DIR)
        tmp = os.path.join(d, f".{CACHE_NAME}.{os.getpid()}")
        with os.fdopen(safeio.create(tmp, mode=0o600), "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            pickle.dump((input_key(root, policy_paths), policy, index), f,
                        protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, os.path.join(d, CACHE_NAME))
    except (OSError, FlavourdError, RecursionError):
        pass
