"""Text tables for people and JSON for scripts."""

from __future__ import annotations

import sys


def table(headers, rows, out=None) -> None:
    """Left-aligned columns, two spaces apart; None shows as '-'."""
    out = out or sys.stdout
    cells = [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    for r in [list(headers)] + cells:
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip(), file=out)


def dump_json(obj, out=None) -> None:
    import json
    out = out or sys.stdout
    json.dump(obj, out, indent=2, sort_keys=False)
    out.write("\n")


def shorten(text, width: int):
    if text is None or len(text) <= width:
        return text
    return text[: width - 1] + "…"
