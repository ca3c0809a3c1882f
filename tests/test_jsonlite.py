"""jsonlite answers exactly as json does."""

import json

import pytest
from hypothesis import given, settings, strategies as st

from vfio_flavourd import jsonlite

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.text())
records = st.recursive(scalars, lambda inner: st.dictionaries(st.text(), inner, max_size=6),
                       max_leaves=20)
anything = st.recursive(scalars | st.floats(allow_nan=False),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(), inner, max_size=4), max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(records)
def test_records_are_written_as_json_writes_them(obj):
    assert jsonlite.dumps(obj) == json.dumps(obj, indent=1, sort_keys=True)


@settings(max_examples=500, deadline=None)
@given(anything)
def test_anything_reads_back_as_json_reads_it(obj):
    for text in (json.dumps(obj), json.dumps(obj, indent=1), json.dumps(obj, ensure_ascii=False)):
        assert jsonlite.loads(text) == json.loads(text)
    assert jsonlite.dumps(obj) == json.dumps(obj, indent=1, sort_keys=True)


@given(st.text(" {}[]\":,0123456789-.eEtrufalsn\\ux", max_size=20))
def test_any_text_is_read_or_refused_as_json_does(text):
    try:
        want = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            jsonlite.loads(text)
    else:
        assert jsonlite.loads(text) == want


def test_a_state_record():
    doc = {"version": 1, "record": {"module": "mlx5_vfio_pci", "driver": "mlx5_vfio_pci",
                                    "previous_override": None, "message": "bound to \"x\"\n"}}
    text = jsonlite.dumps(doc)
    assert text == json.dumps(doc, indent=1, sort_keys=True)
    assert jsonlite.loads(text) == doc
