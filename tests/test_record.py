"""_record's tuples take arguments as a function with these parameters
would, and are what collections.namedtuple would make of them."""

import pickle
from collections import namedtuple

import pytest
from hypothesis import given, strategies as st

from vfio_flavourd._record import REQUIRED, record

FIELDS = (("a", REQUIRED), ("b", REQUIRED), ("c", 3), ("d", None))
Rec = record("Rec", FIELDS)
Ref = namedtuple("Ref", "a b c d", defaults=(3, None))


def build(cls, args, kw):
    try:
        return cls(*args, **kw)
    except TypeError:
        return TypeError


@given(st.lists(st.integers(), max_size=5),
       st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(), max_size=4))
def test_arguments_as_namedtuple_takes_them(args, kw):
    got, want = build(Rec, args, kw), build(Ref, args, kw)
    if want is TypeError:
        assert got is TypeError
    else:
        assert tuple(got) == tuple(want)
        assert got == Rec(*want) and hash(got) == hash(Rec(*want))
        assert got._asdict() == want._asdict()
        assert got._replace(c=9) == Rec(*want._replace(c=9))


def test_errors_name_what_is_wrong():
    with pytest.raises(TypeError, match=r"missing required arguments: 'a', 'b'"):
        Rec()
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'e'"):
        Rec(1, 2, e=3)
    with pytest.raises(TypeError, match=r"multiple values for argument 'a'"):
        Rec(1, 2, a=3)
    with pytest.raises(TypeError, match=r"takes 4 arguments but 5 were given"):
        Rec(1, 2, 3, 4, 5)
    with pytest.raises(TypeError, match=r"has no field 'x'"):
        Rec(1, 2)._replace(x=1)


class Sub(record("Sub", FIELDS)):
    __slots__ = ()


def test_subclasses_keep_their_class_through_replace_and_pickle():
    s = Sub(1, b=2)
    assert type(s._replace(d=4)) is Sub and s._replace(d=4).d == 4
    assert pickle.loads(pickle.dumps(s)) == s and type(pickle.loads(pickle.dumps(s))) is Sub
    assert repr(s) == "Sub(a=1, b=2, c=3, d=None)"
    with pytest.raises(AttributeError):
        s.a = 5
