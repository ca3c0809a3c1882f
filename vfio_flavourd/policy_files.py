"""Finding the policy files: the layered policy.d directories, masking and
disabling by file name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import PolicyError
from .policy import PolicyFile


def discover(policy_dirs) -> list:
    """PolicyFiles from the layered directories: a name in a later directory
    masks the same name in earlier ones; the survivors are read in order of
    file name."""
    chosen: dict = {}
    for d in policy_dirs:
        try:
            names = sorted(os.listdir(d))
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            # A file (or anything else) where a policy directory, or a
            # directory above it, should be is a broken policy, not an
            # empty one.
            raise PolicyError([_not_a_directory(Path(d))]) from None
        except OSError as e:
            from .policy_load import Problem
            raise PolicyError([Problem(str(d), 1, 1, "", e.strerror or str(e))]) from None
        for name in names:
            if not name.endswith(".yaml") or name.startswith("."):
                continue
            path = Path(d) / name
            masks = ()
            if name in chosen:
                masks = chosen[name].masks + (chosen[name].path,)
            disabled = _is_disabled(path)
            chosen[name] = PolicyFile(path, str(d), masks, disabled)
    return [chosen[n] for n in sorted(chosen)]


def _not_a_directory(d: Path):
    """The problem with `d`, or with the first thing above it that is not
    a directory (run/vfio-flavourd as a file hides run/.../policy.d)."""
    from .policy_load import Problem
    from .safeio import kind
    for p in (d, *d.parents):
        try:
            mode = os.stat(p).st_mode
        except OSError:
            continue
        if not stat.S_ISDIR(mode):
            what = "a directory of *.yaml files" if p == d else "a directory"
            return Problem(str(p), 1, 1, "", f"expected {what}, found {kind(mode)}")
    return Problem(str(d), 1, 1, "", "not a directory")


def _is_disabled(path: Path) -> bool:
    """An empty regular file or a link to /dev/null.  Anything else that
    is not a regular file (a FIFO has size 0 too) is read, and refused."""
    try:
        if path.is_symlink() and os.readlink(path) == "/dev/null":
            return True
        st = path.stat()
        return stat.S_ISREG(st.st_mode) and st.st_size == 0
    except OSError:
        return False
