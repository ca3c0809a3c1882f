"""globs.fnmatchcase answers as fnmatch.fnmatchcase does."""

import fnmatch

from hypothesis import given, settings, strategies as st

from vfio_flavourd.globs import fnmatchcase

ALPHABET = "ab*:.0"


@settings(max_examples=3000, deadline=None)
@given(st.text(ALPHABET.replace("*", ""), max_size=12), st.text(ALPHABET, max_size=10))
def test_star_globs_match_as_fnmatch_does(name, pattern):
    assert fnmatchcase(name, pattern) == fnmatch.fnmatchcase(name, pattern)


@given(st.text("ab?[]!*", max_size=8), st.text("ab", max_size=8))
def test_other_globs_are_fnmatchs(pattern, name):
    assert fnmatchcase(name, pattern) == fnmatch.fnmatchcase(name, pattern)


def test_modalias_patterns():
    modalias = "v000015B3d0000101Esv000015B3sd00000016bc02sc00i00"
    assert fnmatchcase(modalias, "v000015B3d0000101Esv*sd*bc*sc*i*")
    assert fnmatchcase(modalias, "v*d*sv*sd*bc*sc*i*")
    assert not fnmatchcase(modalias, "v00001AF4d00001041sv*sd*bc*sc*i*")
    assert fnmatchcase(modalias, "v*d*sv*sd*bc02sc00i00*")
    assert not fnmatchcase(modalias, "v*d*sv*sd*bc03*")
