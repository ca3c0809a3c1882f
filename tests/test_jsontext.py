"""jsontext writes the very text json.dumps writes and reads what
json.loads reads, less what is not standard JSON."""

import json
import math

import pytest
from hypothesis import given, strategies as st

from vfio_flavourd import jsontext

scalars = st.none() | st.booleans() | st.integers() | st.text() \
    | st.floats(allow_nan=False, allow_infinity=False)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(), inner, max_size=4), max_leaves=30)


@given(values, st.sampled_from([None, 0, 1, 2, 4]), st.booleans())
def test_dumps_is_json_dumps(obj, indent, sort_keys):
    assert jsontext.dumps(obj, indent=indent, sort_keys=sort_keys) == \
        json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False)


@given(values, st.sampled_from([None, 2]))
def test_loads_reads_what_json_writes(obj, indent):
    text = json.dumps(obj, indent=indent)
    assert jsontext.loads(text) == json.loads(text)
    assert jsontext.loads(" \n" + text.encode().decode() + "\r\n\t") == json.loads(text)
    assert jsontext.loads(text.encode()) == json.loads(text)


def test_tuples_and_non_string_keys_as_json_has_them():
    obj = {"t": (1, "a"), 3: None, True: 1.5, None: [], 2.5: {}}
    assert jsontext.dumps(obj, indent=1) == json.dumps(obj, indent=1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, [1, {"x": math.nan}]])
def test_dumps_refuses_what_is_not_json(bad):
    with pytest.raises(ValueError, match="not JSON compliant"):
        jsontext.dumps(bad, indent=2)


def test_dumps_refuses_other_types_and_cycles():
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        jsontext.dumps({"a": {1}})
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        jsontext.dumps(loop)
    shared = [1]
    assert jsontext.dumps([shared, shared]) == "[[1], [1]]"   # no cycle


@pytest.mark.parametrize("text", ["", "   ", "NaN", "[Infinity]", "-Infinity", "1e999",
                                  "[1e400]", "{} x", "[1,]", "{'a': 1}", "\ufeff{}",
                                  '"\\x"', "[1] [2]", b"\xff\xfe"])
def test_loads_refuses(text):
    with pytest.raises(ValueError):
        jsontext.loads(text)


def test_loads_deep_nesting_is_a_recursion_error_not_a_crash():
    with pytest.raises(RecursionError):
        jsontext.loads("[" * 100_000 + "]" * 100_000)


def test_loads_numbers_as_json_reads_them():
    assert jsontext.loads("[1, -0, 2.5, 1e3, 12345678901234567890]") == \
        [1, 0, 2.5, 1000.0, 12345678901234567890]
    assert type(jsontext.loads("1")) is int and type(jsontext.loads("1.0")) is float


def test_malformed_documents_are_value_errors_without_json_imported():
    """_json needs json.decoder to report a syntax error; jsontext must not
    rely on someone else having imported it (a one-shot command has not)."""
    import subprocess
    import sys
    code = ("import sys\n"
            "from vfio_flavourd import jsontext\n"
            "assert 'json.decoder' not in sys.modules\n"
            "for bad in ['{\"a\": 1', '[1,]', '{\"a\" 1}', '\"abc', '[1, 2', '{1: 2}']:\n"
            "    try:\n"
            "        jsontext.loads(bad)\n"
            "    except ValueError as e:\n"
            "        print(type(e).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=__import__("pathlib").Path(__file__).parent.parent)
    assert out.stderr == ""
    assert len(out.stdout.split()) == 6
    assert set(out.stdout.split()) <= {"JSONDecodeError", "ValueError"}
