"""The state records' JSON without the json package.

json.decoder and json.encoder import re (with enum, functools and the
regex compiler behind it): under QEMU/TCG that was a fifth of what
`release` spent importing (tests/vm, `imports` in figure 7), to read and
write one small record.  The records are objects of strings, integers,
booleans and null; this writes them exactly as json.dumps(obj, indent=1,
sort_keys=True) does and reads them back with the C string scanner json
itself uses.  Anything else (floats, lists, odd spacing in a hand-edited
file, an error to report) goes to the json package, so the answers never
differ.
"""

from __future__ import annotations

try:
    from _json import encode_basestring_ascii as _quote, scanstring as _scanstring
except ImportError:     # not CPython: json for everything
    _quote = _scanstring = None


class _Other(Exception):
    """Not a shape handled here: ask json."""


def dumps(obj) -> str:
    """json.dumps(obj, indent=1, sort_keys=True)."""
    if _quote is not None:
        try:
            return _dump(obj, 0)
        except _Other:
            pass
    import json
    return json.dumps(obj, indent=1, sort_keys=True)


def _dump(obj, depth: int) -> str:
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if type(obj) is int:
        return str(obj)
    if type(obj) is str:
        return _quote(obj)
    if type(obj) is dict and all(type(k) is str for k in obj):
        if not obj:
            return "{}"
        inner = "\n" + " " * (depth + 1)
        items = [f"{_quote(k)}: {_dump(obj[k], depth + 1)}" for k in sorted(obj)]
        return "{" + inner + ("," + inner).join(items) + "\n" + " " * depth + "}"
    raise _Other


def loads(text: str):
    """json.loads(text), ValueError and all."""
    if _scanstring is not None:
        try:
            value, end = _value(text, _skip(text, 0))
            if _skip(text, end) == len(text):
                return value
        except (_Other, ValueError, IndexError):
            pass
    import json
    return json.loads(text)


_SPACE = " \t\n\r"
_WORDS = (("null", None), ("true", True), ("false", False))


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return i


def _value(text: str, i: int):
    c = text[i]
    if c == '"':
        return _scanstring(text, i + 1, True)
    if c == "{":
        return _object(text, i + 1)
    for word, value in _WORDS:
        if text.startswith(word, i):
            return value, i + len(word)
    j = i + 1 if c == "-" else i
    k = j
    while k < len(text) and text[k].isdigit() and text[k].isascii():
        k += 1
    # JSON integers: no leading zeros, and nothing of a float after them.
    if k == j or (text[j] == "0" and k - j > 1) or (k < len(text) and text[k] in ".eE"):
        raise _Other
    return int(text[i:k]), k


def _object(text: str, i: int):
    out = {}
    i = _skip(text, i)
    if text[i] == "}":
        return out, i + 1
    while True:
        if text[i] != '"':
            raise _Other
        key, i = _scanstring(text, i + 1, True)
        i = _skip(text, i)
        if text[i] != ":":
            raise _Other
        out[key], i = _value(text, _skip(text, i + 1))
        i = _skip(text, i)
        if text[i] == "}":
            return out, i + 1
        if text[i] != ",":
            raise _Other
        i = _skip(text, i + 1)
