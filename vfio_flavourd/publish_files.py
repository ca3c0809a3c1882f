"""Writing a published file so that its reader never sees half of it: a
dot-file in the same directory (node_exporter reads only *.prom, NFD skips
dot-files, CDI reads only *.json and *.yaml), fsync, then rename over the
old one.  Mode 0644 whatever the umask: the unit runs with UMask=0077, and
node_exporter, nfd-worker and the container runtime are other users."""

from __future__ import annotations

import os

from . import safeio
from .errors import FlavourdError

MODE = 0o644


def write_atomic(path: str, text: str) -> None:
    directory, name = os.path.split(os.path.abspath(path))
    if not name:
        raise FlavourdError(f"{path}: a file name is needed, not a directory")
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        safeio.replace_whole(path, tmp, text.encode(), MODE)
    except OSError as e:
        raise FlavourdError(f"{e.filename or path}: cannot write: "
                            f"{e.strerror or e}") from None
