"""Validation holes: values anchored at the very end, policy.d that is a
file, control characters from sysfs in human output, one unreadable
attribute, and odd bytes and links in a simulated root."""

from __future__ import annotations

import os

import pytest
from hostile import VF, no_traceback, run_cli, small_root
from tiny_sysfs import small_server

from vfio_flavourd.errors import PolicyError
from vfio_flavourd.policy import PolicyFile
from vfio_flavourd.policy_load import load

RULE = {"name": '"vfs"', "vendor": "0x15b3", "class": '"0200"', "address": '"0000:3b:*"',
        "prefer": '["mlx5_vfio_pci"]', "fallback": '"vfio_pci"'}


def policy_text(**over):
    v = dict(RULE, **over)
    return (f"version: 1\nrules:\n  - name: {v['name']}\n"
            f"    match: {{vendor: {v['vendor']}, class: {v['class']}, address: {v['address']}}}\n"
            f"    flavour: vfio\n    prefer: {v['prefer']}\n    fallback: {v['fallback']}\n")


def test_the_base_rule_is_valid(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text(policy_text())
    assert [r.name for r in load([PolicyFile(p, "t")]).rules] == ["vfs"]


@pytest.mark.parametrize("key,value", [
    ("name", '"gpus\\n"'), ("vendor", '"15b3\\n"'), ("class", '"0200\\n"'),
    ("address", '"0000:3b:*\\n"'), ("prefer", '["mlx5_vfio_pci\\n"]'),
    ("fallback", '"vfio_pci\\n"')])
def test_a_trailing_newline_is_not_part_of_a_valid_value(tmp_path, key, value):
    p = tmp_path / "nl.yaml"
    p.write_text(policy_text(**{key: value}))
    with pytest.raises(PolicyError) as e:
        load([PolicyFile(p, "t")])
    assert len(e.value.problems) == 1 and "\\n" in str(e.value.problems[0])


def test_policy_d_that_is_a_file_is_an_error(tmp_path):
    t = small_server(tmp_path / "root")
    t.file("etc/vfio-flavourd/policy.d", "version: 1\n")
    path = t.root / "etc/vfio-flavourd/policy.d"
    for cmd in ("check-config", "plan"):
        code, out, err = run_cli("--root", str(t.root), cmd, timeout=30)
        assert code == 1 and no_traceback(err)
        assert f"{path}:1:1: expected a directory of *.yaml files, found a regular file" in err
        assert "ok:" not in out


def test_control_characters_from_sysfs_are_escaped(tmp_path):
    t = small_server(tmp_path / "root")
    evil = "\x1b]0;pwned\x07\x1b[2J"
    t.file(f"sys/devices/pci0000:00/{VF}/driver_override", evil + "\n")
    os.symlink("../../../bus/pci/drivers/bad\x1b[31m", t.root / "sys/devices/pci0000:00/0000:03:00.0/drv")
    os.unlink(t.root / "sys/devices/pci0000:00/0000:03:00.0/driver")
    os.rename(t.root / "sys/devices/pci0000:00/0000:03:00.0/drv",
              t.root / "sys/devices/pci0000:00/0000:03:00.0/driver")
    t.file("etc/vfio-flavourd/policy.d/10.yaml",
           "version: 1\nrules:\n  - {name: vfs, match: {device: 0x101e}, flavour: vfio}\n")
    for argv in (["plan"], ["explain", VF], ["explain", "0000:03:00.0"], ["apply", "--dry-run"]):
        code, out, err = run_cli("--root", str(t.root), *argv, timeout=30)
        assert no_traceback(err), err
        assert not any(c in out + err for c in "\x1b\x07"), (argv, out)
    code, out, err = run_cli("--root", str(t.root), "explain", VF, timeout=30)
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in out
    code, out, err = run_cli("--root", str(t.root), "plan", timeout=30)
    assert "bad\\x1b[31m" in out


def test_a_symlink_loop_skips_one_device_with_a_warning(tmp_path):
    t = small_server(tmp_path / "root")
    attr = t.root / f"sys/devices/pci0000:00/{VF}/modalias"
    os.unlink(attr)
    os.symlink("modalias", attr)
    code, out, err = run_cli("--root", str(t.root), "plan", timeout=30)
    assert code == 0 and no_traceback(err)
    assert f"vfio-flavourd: warning: {VF}: skipped: sys/bus/pci/devices/{VF}/modalias: " \
           "Too many levels of symbolic links" in err
    assert "0000:3b:00.3" in out and VF not in out


def test_simulate_binary_class_is_a_clear_error(tmp_path):
    root = small_root(tmp_path / "root")
    path = root / f"sys/bus/pci/devices/{VF}/class"
    path.write_bytes(b"\xff\xfe\x00\x01")
    code, out, err = run_cli("--root", str(root), "--simulate", "plan", timeout=60)
    assert code == 1 and no_traceback(err), err
    assert "/class: expected a hex number, found b'\\xff\\xfe\\x00\\x01'" in err


def test_simulate_non_numeric_iommu_group_is_a_clear_error(tmp_path):
    root = small_root(tmp_path / "root")
    link = root / f"sys/bus/pci/devices/{VF}/iommu_group"
    target = os.readlink(link)
    os.unlink(link)
    os.symlink(target.rsplit("/", 1)[0] + "/not-a-number", link)
    code, out, err = run_cli("--root", str(root), "--simulate", "plan", timeout=60)
    assert code == 1 and no_traceback(err), err
    assert "/iommu_group: links to 'not-a-number', not to a numbered group" in err
