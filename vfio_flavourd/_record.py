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
    n_fields = len(names)
    n_required = n_fields - len(defaults)
    index = {f: i for i, f in enumerate(names)}
    missing = object()

    def bind(args: tuple, kw: dict) -> tuple:
        """Positional and keyword arguments to the field values, with the
        errors Python gives for a function of these parameters."""
        if len(args) > n_fields:
            raise TypeError(f"{name}() takes {n_fields} arguments but {len(args)} were given")
        values = list(args) + [missing if i < n_required else defaults[i - n_required]
                               for i in range(len(args), n_fields)]
        for key, value in kw.items():
            i = index.get(key)
            if i is None:
                raise TypeError(f"{name}() got an unexpected keyword argument {key!r}")
            if i < len(args):
                raise TypeError(f"{name}() got multiple values for argument {key!r}")
            values[i] = value
        absent = [names[i] for i in range(n_required) if values[i] is missing]
        if absent:
            raise TypeError(f"{name}() missing required argument"
                            f"{'s' if len(absent) > 1 else ''}: {', '.join(map(repr, absent))}")
        return values

    # No generated code (namedtuple eval()s a constructor per class: 50 us
    # here, 3 ms a class under TCG, where apply defines ten of them): every
    # field given by position takes the direct way.
    def new(cls, *args, **kw):
        if kw or len(args) != n_fields:
            args = bind(args, kw)
        return tuple.__new__(cls, args)
    new.__qualname__ = f"{name}.__new__"

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
        "_field_defaults": dict(zip(names[n_required:], defaults)),
        "__new__": new, "_make": classmethod(_make), "_replace": _replace,
        "__repr__": __repr__, "_asdict": _asdict, "__getnewargs__": __getnewargs__,
        "__match_args__": names,
    }
    for i, f in enumerate(names):
        ns[f] = property(itemgetter(i), doc=f"field {i}")
    return type(name, (tuple,), ns)
