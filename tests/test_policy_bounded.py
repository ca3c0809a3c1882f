"""Bounded work on hostile policies: an anchored mapping with 2,000 unknown
keys referenced 250 times is validated once and reported in 100 lines; a
"billion laughs" document is cheap; aliases are capped."""

from __future__ import annotations

import time

import pytest
from hostile import no_traceback, run_cli
from tiny_sysfs import small_server

from vfio_flavourd.errors import PolicyError
from vfio_flavourd.policy import PolicyFile
from vfio_flavourd.policy_load import load

MAX_SHOWN = 100          # problems shown before "... and N more"

KEYS = 2000
REFS = 250


def anchored(as_match: bool) -> str:
    body = ", ".join(f"k{i}: {i}" for i in range(KEYS))
    if as_match:
        head = f"version: 1\nx: &bad {{{body}}}\nrules:\n"
        items = "".join(f"  - {{name: r{i}, match: *bad, flavour: vfio}}\n" for i in range(REFS))
    else:
        head = f"version: 1\nrules:\n  - &bad {{{body}}}\n"
        items = "  - *bad\n" * (REFS - 1)
    return head + items


@pytest.mark.parametrize("as_match", [False, True], ids=["rule", "match"])
def test_aliased_node_is_validated_once_and_reported_capped(tmp_path, as_match):
    path = tmp_path / "p.yaml"
    path.write_text(anchored(as_match))
    t0 = time.monotonic()
    with pytest.raises(PolicyError) as e:
        load([PolicyFile(path, "test")])
    elapsed = time.monotonic() - t0
    unknown = [p for p in e.value.problems[:-1] if "unknown key" in str(p)]
    # every key is reported once, not once per reference
    expected = KEYS + (1 if as_match else 3)   # 'x' at the top, or name/match/flavour missing
    assert e.value.total == expected
    assert len(e.value.problems) == MAX_SHOWN + 1
    assert len(unknown) >= MAX_SHOWN - 4
    assert str(e.value.problems[-1]) == f"... and {expected - MAX_SHOWN} more problems not shown"
    assert elapsed < 5, elapsed     # a generous bound: it was 7 s and 480 MB


def test_cli_prints_the_first_hundred_and_a_count(tmp_path):
    t = small_server(tmp_path / "root")
    path = tmp_path / "p.yaml"
    path.write_text(anchored(False))
    code, out, err = run_cli("--root", str(t.root), "--policy", str(path), "plan", timeout=60)
    lines = err.splitlines()
    assert code == 1 and no_traceback(err)
    assert len(lines) == MAX_SHOWN + 2
    assert lines[-2] == f"vfio-flavourd: error: ... and {KEYS + 3 - MAX_SHOWN} more problems " \
                        "not shown"
    assert lines[-1] == f"vfio-flavourd: error: the policy has {KEYS + 3} problems; " \
                        "nothing was done"


def test_billion_laughs_is_cheap(tmp_path):
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("rules:")
    lines.append("  - {name: lol, match: {vendor: *a9, device: *a9}, flavour: vfio}")
    lines.append("  - *a9")
    path = tmp_path / "lol.yaml"
    path.write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    with pytest.raises(PolicyError) as e:
        load([PolicyFile(path, "test")])
    assert time.monotonic() - t0 < 5
    assert e.value.total < 50


def test_aliases_are_capped(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text("version: 1\nx: &x 1\ny: [" + ", ".join(["*x"] * 10001) + "]\n")
    with pytest.raises(PolicyError) as e:
        load([PolicyFile(path, "test")])
    assert [str(p).split(": ", 1)[1] for p in e.value.problems] == [
        "YAML syntax error: more than 10000 aliases"]
