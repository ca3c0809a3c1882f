"""Shell patterns as glibc's fnmatch(3) reads them with flags 0, compiled
to Python regular expressions.

kmod matches modaliases against modules.alias patterns with fnmatch(3).
Python's fnmatch module differs from it: it reads "[^...]" as a literal
caret where glibc negates, and a backslash as a literal where glibc
escapes the next character.  This follows glibc (posix/fnmatch_loop.c):

- "*" any string, "?" any one character ("/" and "." are not special
  without FNM_PATHNAME/FNM_PERIOD);
- "\\c" is c; a pattern ending in a lone backslash matches nothing;
- "[...]": "!" or "^" first negates; a "]" right after "[" (or "[!") is a
  member; "a-z" is a range by byte value (an inverted one is empty); a
  backslash escapes inside too;
- an unterminated "[" is a literal "[", unless the pattern ends inside a
  range or right after a backslash there, which fails the match.
POSIX classes ("[:alpha:]", "[=a=]", "[.a.]") are not supported: no alias
uses them, and translate() raises Unsupported rather than guess.
"""

from __future__ import annotations


NEVER = "(?!)"


class Unsupported(ValueError):
    pass


def _member_class(items) -> str:
    """A regex character class for (lo, hi) byte ranges (no negation)."""
    parts = []
    for lo, hi in items:
        if lo > hi:
            continue
        parts.append(_code(lo) if lo == hi else f"{_code(lo)}-{_code(hi)}")
    return "".join(parts)


def _code(cp: int) -> str:
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


def _bracket(pat: str, i: int):
    """Parse the bracket whose "[" is at pat[i].  Returns (regex, next index)
    where next index is where the pattern continues."""
    n = len(pat)
    j = i + 1
    negate = j < n and pat[j] in "!^"
    if negate:
        j += 1
    items = []               # (lo, hi) code points
    poisoned = False         # the text ends inside a range or after a backslash
    first = True
    while True:
        if j >= n:
            break                                    # unterminated
        c = pat[j]
        if not first and c == "]":
            cls = _member_class(items)
            if negate:
                return (f"[^{cls}]" if cls else "(?s:.)"), j + 1
            return (f"[{cls}]" if cls else NEVER), j + 1
        first = False
        if c == "[" and j + 1 < n and pat[j + 1] in ":=.":
            raise Unsupported(f"bracket class {pat[j:j + 2]!r} in {pat!r}")
        if c == "\\":
            if j + 1 >= n:
                poisoned = True
                break
            j += 1
            c = pat[j]
        j += 1
        # A range: "-" next, and the one after it neither the end nor "]".
        if j < n and pat[j] == "-" and (j + 1 >= n or pat[j + 1] != "]"):
            if j + 1 >= n:
                items.append((ord(c), ord(c)))
                poisoned = True
                break
            end = pat[j + 1]
            j += 2
            if end == "\\":
                if j >= n:
                    items.append((ord(c), ord(c)))
                    poisoned = True
                    break
                end = pat[j]
                j += 1
            items.append((ord(c), ord(end)))
        else:
            items.append((ord(c), ord(c)))
    # Unterminated: "[" stands for itself, unless the text ended inside a
    # range or after a backslash, where glibc gives up on the match.
    if poisoned:
        return NEVER, i + 1
    return "\\[", i + 1


def translate(pat: str) -> str:
    """A regular expression (for re.fullmatch) equivalent to fnmatch(pat, s, 0)."""
    import re       # here, not at the top: most commands match '*'-only globs
    out = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            while i < n and pat[i] == "*":
                i += 1
            out.append("(?s:.*)")
            continue
        if c == "?":
            out.append("(?s:.)")
        elif c == "\\":
            if i + 1 >= n:
                out.append(NEVER)            # "Trailing \ loses."
            else:
                i += 1
                out.append(re.escape(pat[i]))
        elif c == "[":
            regex, i = _bracket(pat, i)
            out.append(regex)
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile(pat: str) -> "re.Pattern":
    import re
    return re.compile(translate(pat), re.DOTALL)
