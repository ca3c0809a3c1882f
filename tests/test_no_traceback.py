"""No traceback and no dead daemon: deeply nested YAML and JSON, corrupt
and non-finite state records, an unexpected run-directory layout, and a
read-only /run for a dry run."""

from __future__ import annotations

import errno
import json
import os
import time

import pytest
from hostile import no_traceback, run_cli, small_root
from test_daemon import POLICY, harness  # noqa: F401  (the fixture)
from tiny_sysfs import small_server

from vfio_flavourd import cli
from vfio_flavourd.policy_load import parse_file

VF = "0000:3b:00.2"
DEEP_LIST = "version: 1\nrules: " + "[" * 500 + "]" * 500 + "\n"
DEEP_MAP = "version: 1\nrules:\n  - " + "{a: " * 500 + "1" + "}" * 500 + "\n"


def _reject(name):
    raise ValueError(f"{name} in output")


def strict_json(text):
    return json.loads(text, parse_constant=_reject)


@pytest.mark.parametrize("text", [DEEP_LIST, DEEP_MAP], ids=["lists", "mappings"])
def test_deep_yaml_is_a_clear_error(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    problems = []
    assert parse_file(path, problems) == []
    assert [str(p) for p in problems] == [
        f"{path}:{'2:39' if text is DEEP_LIST else '3:122'}: YAML syntax error: nested more than "
        "32 levels deep"]
    t = small_server(tmp_path / "root")
    for argv in (["--policy", str(path), "plan"], ["check-config", str(path)]):
        code, out, err = run_cli("--root", str(t.root), *argv, timeout=30)
        assert code == 1 and no_traceback(err), err
        assert "nested more than 32 levels deep" in err


def _reloaded(h, predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_reload_keeps_the_old_policy_on_deep_yaml(harness, tmp_path):  # noqa: F811
    h = harness().start()
    (tmp_path / "etc/vfio-flavourd/policy.d/50-deep.yaml").write_text(DEEP_LIST)
    h.daemon.request_reload()
    assert _reloaded(h, lambda: any("old one stays in force" in m for m in h.log_text()))
    assert [r.name for r in h.daemon.ctx.policy.rules] == ["mlx5-vfs", "virtio"]
    assert h.thread.is_alive()


@pytest.mark.parametrize("exc", [RecursionError("deep"), MemoryError(), ZeroDivisionError(),
                                 OSError(errno.EIO, "I/O error")])
def test_reload_survives_any_failure_to_load(harness, exc):  # noqa: F811
    h = harness().start()
    old = h.daemon.ctx

    def broken(_old):
        raise exc
    h.daemon.make_context = broken
    h.daemon.request_reload()
    assert _reloaded(h, lambda: any("old policy stays in force" in m for m in h.log_text()))
    assert h.daemon.ctx is old and h.thread.is_alive()
    assert [r.name for r in h.daemon.ctx.policy.rules] == ["mlx5-vfs", "virtio"]


@pytest.mark.parametrize("record", [
    "[" * 100000 + "]" * 100000,                                   # nested too deeply
    '{"version": 1, "record": {"module": NaN, "driver": "vfio-pci"}}',
    '{"version": 1, "record": {"module": "vfio_pci", "since": Infinity}}',
    '{"version": 1, "record": {"module": "vfio_pci", "since": -1e999}}',
    '{"version": 1, "record": {"module": ' + "[" * 600 + "]" * 600 + "}}",
    '{"version": 1, "record": {"module": "vfio_pci"',               # truncated
    '\xff\xfe garbage',
], ids=["deep", "nan", "infinity", "overflow", "nested-value", "truncated", "binary"])
def test_corrupt_state_reads_as_absent_with_a_warning(tmp_path, record):
    t = small_server(tmp_path / "root")
    path = tmp_path / f"root/run/vfio-flavourd/devices/{VF}.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(record.encode("utf-8", "surrogateescape"))
    good = path.parent / "0000:3b:00.3.json"
    good.write_text('{"version": 1, "record": {"module": "vfio_pci", "driver": "vfio-pci"}}')
    code, out, err = run_cli("--root", str(t.root), "status", "--json", timeout=30)
    assert code == 0 and no_traceback(err), err
    rows = strict_json(out)
    assert [r["address"] for r in rows] == ["0000:3b:00.3"]
    assert f"{path}: " in err and "treating as empty" in err
    for argv in (["status"], ["plan"], ["plan", "--json"]):
        code, out, err = run_cli("--root", str(t.root), *argv, timeout=30)
        assert code == 0 and no_traceback(err), (argv, err)


@pytest.mark.parametrize("what", ["file-at-run-dir", "file-at-locks", "file-at-devices",
                                  "dir-at-lock", "dir-at-record"])
def test_unexpected_run_layout_fails_before_any_device_is_touched(tmp_path, what):
    root = small_root(tmp_path / "root")
    run = root / "run/vfio-flavourd"
    if what == "file-at-run-dir":
        run.parent.mkdir(parents=True)
        run.write_text("")
    else:
        run.mkdir(parents=True)
        if what == "file-at-locks":
            (run / "locks").write_text("")
        elif what == "file-at-devices":
            (run / "devices").write_text("")
        elif what == "dir-at-lock":
            (run / f"locks/{VF}.lock").mkdir(parents=True)
        else:
            (run / f"devices/{VF}.json").mkdir(parents=True)
    code, out, err = run_cli("--root", str(root), "--simulate", "apply", timeout=60)
    assert code == 1 and no_traceback(err), err
    assert "bound" not in out and "failed" not in out
    lines = [x for x in err.splitlines() if x.startswith("vfio-flavourd: error: ")]
    assert "/run/vfio-flavourd" in lines[0] and "expected a" in lines[0]
    # One problem: a file at run/vfio-flavourd also hides run/.../policy.d,
    # and the policy loader says so first, with the policy's summary line.
    assert len(lines) == (2 if what == "file-at-run-dir" else 1), lines


def test_dry_run_works_on_a_read_only_run(tmp_path, monkeypatch, capsys):
    t = small_server(tmp_path / "root")
    t.file("etc/vfio-flavourd/policy.d/10.yaml",
           "version: 1\nrules:\n  - {name: vfs, match: {device: 0x101e}, flavour: vfio}\n")
    run = str(t.root / "run")
    real_open, real_mkdir = os.open, os.mkdir

    def ro_open(path, flags, *a, **kw):
        if str(path).startswith(run) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **kw)

    def ro_mkdir(path, *a, **kw):
        if str(path).startswith(run):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *a, **kw)
    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)
    code = cli.main(["--root", str(t.root), "apply", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{VF}  dry-run" in out
