"""The scratch copy `--simulate` works on.

A copy of a machine holds directories, regular files and symlinks.  Anything
else would hang or mislead the copy: shutil's default copy opens a FIFO for
reading (blocking until a writer comes) and reads a character device for
ever.  Symlinks are copied as links, never followed; where they lead is
checked when the tree is scanned and at every write.
"""

from __future__ import annotations

import os
import shutil
import stat

from ..errors import UsageError
from ..safeio import kind


def _copy_regular(src: str, dst: str) -> str:
    st = os.lstat(src)
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{src}: {kind(st.st_mode)}, not a regular file; a copy of a "
                         "machine for --simulate holds only directories, files and links")
    return shutil.copy2(src, dst, follow_symlinks=False)


def copy_tree(src, dst) -> None:
    try:
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True,
                        copy_function=_copy_regular)
    except shutil.Error as e:
        first = e.args[0][0] if e.args and e.args[0] else None
        what = f"{first[0]}: {first[2]}" if first and len(first) == 3 else str(e)
        raise UsageError(f"cannot copy the root for --simulate: {what}") from None
    except OSError as e:
        raise UsageError(f"cannot copy the root for --simulate: "
                         f"{e.filename or src}: {e.strerror or e}") from None
