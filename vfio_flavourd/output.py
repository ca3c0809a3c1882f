"""Text tables for people and JSON for scripts."""

from __future__ import annotations

import sys


def table(headers, rows, out=None) -> None:
    """Left-aligned columns, two spaces apart; None shows as '-'."""
    out = out or sys.stdout
    lines = [list(headers)] + [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(map(len, column)) for column in zip(*lines)]
    # One write for the table: each print() is two writes through the
    # escaping stream, and a plan of 4,000 devices made 8,000.
    out.write("".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n"
                      for r in lines))


def dump_json(obj, out=None) -> None:
    from .jsontext import dumps     # json's own text, without importing re
    out = out or sys.stdout
    # NaN and Infinity are not JSON: a value that cannot be written as JSON
    # is a bug to report (ValueError), never output to a parser.
    out.write(dumps(obj, indent=2))
    out.write("\n")


# Every C0 and C1 control character but the newline, and DEL, as a
# visible escape: names and values read from sysfs (a driver link, an
# override, a modalias) reach the terminal, and an escape sequence in them
# must not.  JSON output has none of these raw (json.dumps escapes them).
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if c != 0x0A}


def printable(text: str) -> str:
    return text.translate(_CONTROLS)


class Escaping:
    """A text stream that escapes control characters on their way out."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(text.translate(_CONTROLS))

    def __getattr__(self, name):
        return getattr(self.stream, name)


def shorten(text, width: int):
    if text is None or len(text) <= width:
        return text
    return text[: width - 1] + "…"
