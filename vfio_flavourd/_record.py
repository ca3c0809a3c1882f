"""Immutable records as named tuples with defaults.

The udev callout imports the engine for every PCI add event.  dataclasses,
with inspect, ast and dis behind it, cost 7 ms of import there (plus the
generated methods of each class), most of the interpreter's own start
again.  A named tuple gives the engine's frozen records what they need:
fields with defaults, equality, hashing, immutability and cheap pickling.
"""

from __future__ import annotations

from collections import namedtuple

REQUIRED = object()


def record(name: str, fields) -> type:
    """A named tuple base class; `fields` are (name, default) pairs, the
    REQUIRED ones first.  Always subclass it, with __slots__ = (): pickle
    finds a class by its module, and this one's is _record."""
    names = [f for f, _ in fields]
    defaults = [d for _, d in fields if d is not REQUIRED]
    return namedtuple(name, names, defaults=defaults)
