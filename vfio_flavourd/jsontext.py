"""JSON as the standard has it, written and read without the json package.

`import json` brings re with it, through json.decoder and json.encoder:
9 ms here, most of a bare interpreter's start again, on every `apply` and
`release` (each writes or reads a device's state record) and every
`--json`.  The C module behind json, _json, has what is fast: its string
escaper and its scanner.  What json adds in Python is the indenting writer
and the checks around the scanner, which are these few lines.

The output is the same text json.dumps(obj, indent=N, sort_keys=...,
allow_nan=False) gives (tests/test_jsontext.py compares them), and loads
accepts what json.loads does, less NaN, Infinity and numbers beyond a
float's range: nothing read here may make `status --json` print something
that is not JSON.
"""

from __future__ import annotations

import _json

_quote = _json.encode_basestring_ascii
_WS = " \t\n\r"


def dumps(obj, indent: int | None = None, sort_keys: bool = False) -> str:
    """The JSON text of dicts, lists, tuples, strings, numbers, booleans and
    None; ValueError for NaN, an infinity or a cycle, TypeError for any
    other type."""
    out: list = []
    _write(obj, out, "\n" if indent is not None else None, " " * (indent or 0),
           sort_keys, set())
    return "".join(out)


def _scalar(o) -> str | None:
    if isinstance(o, str):
        return _quote(o)
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if isinstance(o, int):
        return int.__repr__(o)
    if isinstance(o, float):
        if o != o or o in (float("inf"), float("-inf")):
            raise ValueError(f"Out of range float values are not JSON compliant: {o!r}")
        return float.__repr__(o)
    return None


def _key(k) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, (int, float)) or k is None:
        # json's own conversion of non-string keys
        return _scalar(k)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(k).__name__}")


def _write(o, out: list, nl, step: str, sort_keys: bool, seen: set) -> None:
    text = _scalar(o)
    if text is not None:
        out.append(text)
        return
    if isinstance(o, dict):
        items = [(_key(k), v) for k, v in o.items()]
        opening, closing, empty = "{", "}", "{}"
        if sort_keys:
            items.sort(key=lambda kv: kv[0])
    elif isinstance(o, (list, tuple)):
        items = [(None, v) for v in o]
        opening, closing, empty = "[", "]", "[]"
    else:
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")
    if not items:
        out.append(empty)
        return
    if id(o) in seen:
        raise ValueError("Circular reference detected")
    seen.add(id(o))
    inner = nl + step if nl is not None else None
    sep = "," + inner if inner is not None else ", "
    out.append(opening)
    if inner is not None:
        out.append(inner)
    for i, (k, v) in enumerate(items):
        if i:
            out.append(sep)
        if k is not None:
            out.append(_quote(k))
            out.append(": ")
        _write(v, out, inner, step, sort_keys, seen)
    if nl is not None:
        out.append(nl)
    out.append(closing)
    seen.discard(id(o))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


class _Context:
    """What _json's scanner asks of its json.JSONDecoder."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = staticmethod(_finite)
    parse_int = int
    parse_constant = staticmethod(_reject_constant)


_scan = _json.make_scanner(_Context())


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def loads(data):
    """One JSON value from `data` (str, or UTF-8 bytes): ValueError, with
    the position, for anything else; RecursionError for deep nesting."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    if text.startswith("\ufeff"):
        raise ValueError("Unexpected UTF-8 BOM")
    start = _skip_ws(text, 0)
    try:
        obj, end = _scan(text, start)
    except StopIteration as e:
        raise ValueError(f"Expecting value: char {e.value}") from None
    except SystemError:
        # _json reports a malformed document with json.decoder's
        # JSONDecodeError, which it looks up in sys.modules and does not
        # import: without it, it fails with SystemError.  Only a bad
        # document pays for the import.
        import json.decoder  # noqa: F401
        obj, end = _scan(text, start)
    end = _skip_ws(text, end)
    if end != len(text):
        raise ValueError(f"Extra data: char {end}")
    return obj
