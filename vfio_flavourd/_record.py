"""Immutable records: tuples with named fields and defaults.

The udev callout imports the engine for every PCI add event, and `apply`,
`status` and `plan` are one-shot commands.  dataclasses (inspect, ast and
dis behind it) cost the callout 7 ms of import; collections.namedtuple
costs collections, operator, keyword, reprlib and functools, 3 ms on top
of a 10 ms interpreter start here.  A record needs less than either gives:
fields with defaults, equality, hashing, immutability, _replace and cheap
pickling, which is what this builds from builtins alone.
"""

from __future__ import annotations

from _operator import itemgetter   # the C module: operator.py is an import

REQUIRED = object()


def record(name: str, fields) -> type:
    """A tuple base class; `fields` are (name, default) pairs, the REQUIRED
    ones first.  Always subclass it, with __slots__ = (): pickle finds a
    class by its module and name, and this one's is _record."""
    names = tuple(f for f, _ in fields)
    defaults = tuple(d for _, d in fields if d is not REQUIRED)
    for n in names:
        if not n.isidentifier() or n.startswith("_"):
            raise ValueError(f"{name}: bad field name {n!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: a field is named twice")
    if any(d is REQUIRED for _, d in fields[len(names) - len(defaults):]):
        raise ValueError(f"{name}: a required field after one with a default")
    args = ", ".join(names)
    # One generated constructor, as namedtuple makes: positional and
    # keyword arguments both work and Python itself checks them.
    env = {"_new": tuple.__new__}
    new = eval(f"lambda _cls, {args}: _new(_cls, ({args}{',' if len(names) == 1 else ''}))",
               env)
    new.__defaults__ = defaults or None
    new.__name__ = "__new__"
    new.__qualname__ = f"{name}.__new__"
    n_fields = len(names)

    def _make(cls, iterable):
        values = tuple.__new__(cls, iterable)
        if len(values) != n_fields:
            raise TypeError(f"{name} takes {n_fields} values, got {len(values)}")
        return values

    def _replace(self, **changes):
        values = self._make(changes.pop(f, v) for f, v in zip(names, self))
        if changes:
            raise TypeError(f"{name} has no field {', '.join(map(repr, changes))}")
        return values

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(
            f"{f}={v!r}" for f, v in zip(names, self)) + ")"

    def _asdict(self):
        return dict(zip(names, self))

    def __getnewargs__(self):
        return tuple(self)

    ns = {
        "__slots__": (), "_fields": names,
        "_field_defaults": dict(zip(names[n_fields - len(defaults):], defaults)),
        "__new__": new, "_make": classmethod(_make), "_replace": _replace,
        "__repr__": __repr__, "_asdict": _asdict, "__getnewargs__": __getnewargs__,
        "__match_args__": names,
    }
    for i, f in enumerate(names):
        ns[f] = property(itemgetter(i), doc=f"field {i}")
    return type(name, (tuple,), ns)
