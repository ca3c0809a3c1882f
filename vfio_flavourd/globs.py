"""Shell-style globs as fnmatch.fnmatchcase matches them, without `re`.

The globs a one-shot command meets (modules.alias patterns, a policy's
address and driver globs) use only '*'.  fnmatch compiles each to a regex,
and `re` with the enum and functools behind it costs a command such as
`apply ADDRESS` a good part of the interpreter's own start; a '*'-only glob
is matched here with str.find.  Anything else ('?', '[...]') goes to
fnmatch, so the meaning never changes.
"""

from __future__ import annotations


def fnmatchcase(name: str, pattern: str) -> bool:
    if "?" in pattern or "[" in pattern:
        import fnmatch
        return fnmatch.fnmatchcase(name, pattern)
    parts = pattern.split("*")
    if len(parts) == 1:
        return name == pattern
    first, last = parts[0], parts[-1]
    end = len(name) - len(last)
    if end < len(first) or not name.startswith(first) or not name.endswith(last):
        return False
    # Each piece between stars at its leftmost place after the one before:
    # if any placement fits, that one does.
    pos = len(first)
    for piece in parts[1:-1]:
        i = name.find(piece, pos, end)
        if i < 0:
            return False
        pos = i + len(piece)
    return True
