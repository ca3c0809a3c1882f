"""Alias matching exactly as kmod does it: glibc fnmatch(3) semantics on
the patterns depmod indexes, and wildcard ranking per field."""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tiny_sysfs import Tree

from vfio_flavourd import udev_callout
from vfio_flavourd.aliases import VariantIndex, depmod_normalise, parse_modules_alias
from vfio_flavourd.globmatch import Unsupported, compile

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_libc.fnmatch.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)

MODALIAS = "pci:v000015B3d0000101Esv000015B3sd00000016bc02sc00i00"
TAIL = "sv*sd*bc*sc*i*"


def libc_fnmatch(pattern: str, text: str) -> bool:
    return _libc.fnmatch(pattern.encode(), text.encode(), 0) == 0


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet="ab[]!^-\\*?", max_size=10), st.text(alphabet="ab[]!^-\\", max_size=6))
def test_globmatch_is_glibc_fnmatch(pattern, text):
    # Only what depmod indexes ever reaches the matcher: glibc's reading of
    # some unterminated brackets ("[[-" matches itself, "[a-" nothing)
    # follows no rule worth copying for patterns kmod never sees.
    assume(depmod_normalise(pattern) is not None)
    try:
        mine = compile(pattern).fullmatch(text) is not None
    except Unsupported:
        return
    assert mine == libc_fnmatch(pattern, text)


def test_examples_against_glibc():
    for pattern, text in [("[^a]", "b"), ("[!a]", "a"), ("\\*", "*"), ("\\*", "x"), ("a\\", "a"),
                          ("[]a]", "]"), ("[a-]", "-"), ("[z-a]", "m"), ("[\\]]", "]"),
                          ("[", "["), ("[a", "[a"), ("[a-", "[a-"), ("*[!0-9]", "12x")]:
        assert (compile(pattern).fullmatch(text) is not None) == libc_fnmatch(pattern, text), \
            (pattern, text)


def index_of(*lines):
    text = "".join(f"alias {line}\n" for line in lines)
    aliases, warnings = parse_modules_alias(text, "modules.alias")
    return VariantIndex(aliases), warnings


def test_caret_and_bang_negate():
    idx, w = index_of(f"vfio_pci:v000015B3d0000101[^F]{TAIL} caret_vfio",
                      f"vfio_pci:v000015B3d0000101[!F]{TAIL} bang_vfio",
                      f"vfio_pci:v000015B3d0000101[^E]{TAIL} not_e_vfio")
    assert w == []
    assert [a.module for a in idx.matching(MODALIAS)] == ["bang_vfio", "caret_vfio"]


def test_backslash_escapes():
    idx, w = index_of(f"vfio_pci:v000015B3d0000101\\E{TAIL} escaped_vfio")
    assert w == [] and [a.module for a in idx.matching(MODALIAS)] == ["escaped_vfio"]


def test_pattern_without_seven_fields_is_ignored_with_a_warning():
    idx, w = index_of("vfio_pci:* greedy_vfio", f"vfio_pci:v000015B3d0000101E{TAIL} mlx5_vfio_pci",
                      "vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci")
    assert [a.module for a in idx.matching(MODALIAS)] == ["mlx5_vfio_pci", "vfio_pci"]
    assert w == ["modules.alias:1: ignoring alias 'vfio_pci:*': not the seven fields v d sv sd "
                 "bc sc i of a PCI alias; it cannot be ranked against the others"]


def test_a_star_inside_a_field_counts_as_a_wildcard():
    idx, w = index_of(f"vfio_pci:v000015B3d000010*{TAIL} aaa_broad_vfio",
                      f"vfio_pci:v000015B3d0000101E{TAIL} zzz_exact_vfio")
    found = idx.matching(MODALIAS)
    assert [(a.module, a.wildcards) for a in found] == [("zzz_exact_vfio", 5),
                                                        ("aaa_broad_vfio", 6)]


def test_unbalanced_brackets_are_ignored_like_depmod_does():
    idx, w = index_of(f"vfio_pci:v000015B3d0000101[E{TAIL} open_vfio",
                      f"vfio_pci:v000015B3d0000101E]{TAIL} close_vfio",
                      f"vfio_pci:v000015B3d0000101[E]{TAIL} fine_vfio")
    assert [a.module for a in idx.aliases] == ["fine_vfio"]
    assert len(w) == 2 and all("unbalanced brackets: depmod does not index it" in x for x in w)


def test_dash_prefix_is_indexed_as_vfio_pci():
    idx, w = index_of(f"vfio-pci:v000015B3d0000101E{TAIL} dash_vfio")
    assert w == [] and [a.module for a in idx.matching(MODALIAS)] == ["dash_vfio"]


def _callout(root):
    out, err = io.StringIO(), io.StringIO()
    os.environ["VFIO_FLAVOURD_ROOT"] = str(root)
    try:
        udev_callout.run(["0000:3b:00.2"], out=out, err=err)
    finally:
        del os.environ["VFIO_FLAVOURD_ROOT"]
    return out.getvalue()


def test_callout_and_its_cache_ignore_a_greedy_alias(tmp_path, monkeypatch):
    monkeypatch.setenv("VFIO_FLAVOURD_MODPROBE", "true")
    alias = ("alias vfio_pci:* greedy_vfio\n"
             f"alias vfio_pci:v000015B3d0000101E{TAIL} mlx5_vfio_pci\n"
             "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n")
    t = Tree(tmp_path / "root", alias_text=alias)
    t.device("0000:3b:00.2", 0x15B3, 0x101E, sv=0x15B3, sd=0x0016, driver="mlx5_core")
    t.file("etc/vfio-flavourd/policy.d/10.yaml",
           "version: 1\nrules:\n  - {name: vfs, match: {device: 0x101e}, flavour: vfio}\n")
    first = _callout(t.root)                      # builds the cache
    assert (t.root / "run/vfio-flavourd/callout-cache.marshal").exists()
    second = _callout(t.root)                     # answers from it
    assert first == second
    assert "VFIO_FLAVOURD_MODULE=mlx5_vfio_pci" in first
