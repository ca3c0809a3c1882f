"""No input can hang the tool: a FIFO (or a device node) where any file it
reads should be is an error or a warning naming the path, within seconds.
On main each of these blocked in open(2) for ever."""

from __future__ import annotations

import io
import os

import pytest
from hostile import no_traceback, run_cli, small_root
from tiny_sysfs import RELEASE, small_server

from vfio_flavourd import udev_callout

VF = "0000:3b:00.2"
POLICY = "version: 1\nrules:\n  - name: vfs\n    match: {vendor: 0x15b3, device: 0x101e}\n" \
         "    flavour: vfio\n"
T = 15   # seconds: far beyond what any of these needs


@pytest.fixture
def tree(tmp_path):
    t = small_server(tmp_path / "root")
    t.file("etc/vfio-flavourd/policy.d/10-vfs.yaml", POLICY)
    return t


def fifo(path) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    os.mkfifo(path)
    return path


def cli(t, *argv):
    return run_cli("--root", str(t.root), *argv, timeout=T)


def test_policy_option_naming_a_fifo(tree, tmp_path):
    path = fifo(tmp_path / "policy.yaml")
    for cmd in (["--policy", path, "plan"], ["check-config", path]):
        code, out, err = cli(tree, *cmd)
        assert code == 1 and no_traceback(err)
        assert f"{path}:1:1: cannot read: a FIFO, not a regular file" in err


def test_fifo_in_policy_d(tree):
    path = fifo(tree.root / "etc/vfio-flavourd/policy.d/20-pipe.yaml")
    code, out, err = cli(tree, "plan")
    assert code == 1 and no_traceback(err)
    assert f"{path}:1:1: cannot read: a FIFO" in err


@pytest.mark.parametrize("name", ["modules.alias", "modules.builtin.modinfo"])
def test_fifo_as_modules_alias_files(tree, name):
    path = fifo(tree.root / f"lib/modules/{RELEASE}/{name}")
    code, out, err = cli(tree, "variants")
    assert code in (0, 1) and no_traceback(err)
    assert path in err and "a FIFO, not a regular file" in err


def test_fifo_as_a_state_record(tree):
    path = fifo(tree.root / f"run/vfio-flavourd/devices/{VF}.json")
    code, out, err = cli(tree, "status", "--json")
    assert code == 0 and no_traceback(err)
    assert path in err and "a FIFO" in err


def test_fifo_as_the_legacy_state_file(tree):
    path = fifo(tree.root / "run/vfio-flavourd/state.json")
    code, out, err = cli(tree, "status")
    assert code == 0 and no_traceback(err)
    assert path in err


@pytest.mark.parametrize("rel", [f"etc/driverctl.d/pci-{VF}", "etc/modprobe.d/vfio.conf",
                                 "proc/cmdline"])
def test_fifo_among_the_files_migrate_reads(tree, rel):
    fifo(tree.root / rel)
    code, out, err = cli(tree, "migrate")
    assert code in (0, 1) and no_traceback(err)
    assert f"/{rel}" in out + err and "FIFO" in out + err


def test_fifo_as_pci_ids_and_osrelease(tree):
    fifo(tree.root / "usr/share/misc/pci.ids")
    code, out, err = cli(tree, "--kernel-release", RELEASE, "plan")
    assert code == 0 and no_traceback(err)
    fifo(tree.root / "proc/sys/kernel/osrelease")
    code, out, err = cli(tree, "plan")
    assert code in (0, 1) and no_traceback(err)


@pytest.mark.parametrize("attr", ["modalias", "driver_override", "vendor"])
def test_fifo_as_a_sysfs_attribute(tree, attr):
    fifo(tree.root / f"sys/devices/pci0000:00/{VF}/{attr}")
    code, out, err = cli(tree, "plan")
    assert code in (0, 1) and no_traceback(err)
    assert "0000:3b:00.3" in out     # the other devices are still planned


def test_fifo_as_the_callout_cache(tree, monkeypatch):
    fifo(tree.root / "run/vfio-flavourd/callout-cache.marshal")
    monkeypatch.setenv("VFIO_FLAVOURD_ROOT", str(tree.root))
    code, out, err = run_cli(VF, module="vfio_flavourd.udev_callout", timeout=T,
                             env={"VFIO_FLAVOURD_ROOT": str(tree.root),
                                  "VFIO_FLAVOURD_MODPROBE": "true"})
    assert no_traceback(err)


def test_fifo_as_a_lock_file(tree):
    path = fifo(tree.root / f"run/vfio-flavourd/locks/{VF}.lock")
    code, out, err = cli(tree, "apply", "--dry-run")
    assert code == 1 and no_traceback(err)
    assert f"{path}: expected a file written by vfio-flavourd, found a FIFO" in err


def test_fifo_anywhere_in_a_simulated_root(tmp_path):
    root = small_root(tmp_path / "root")
    path = fifo(root / "var/lib/some/pipe")
    code, out, err = run_cli("--root", str(root), "--simulate", "apply", timeout=T)
    assert code == 1 and no_traceback(err)
    assert f"{path}: a FIFO, not a regular file" in err


def test_fifo_as_the_initramfs_record(tmp_path):
    """status compares the initramfs record with the policy: a FIFO there
    is reported, never waited on."""
    import threading
    from types import SimpleNamespace
    from vfio_flavourd import initramfs_record
    from vfio_flavourd.root import Root
    root = Root(tmp_path, kernel_release="6.12.0-test")
    record = tmp_path / initramfs_record.RECORD_DIR / "6.12.0-test.rules"
    record.parent.mkdir(parents=True)
    os.mkfifo(record)
    got = []
    t = threading.Thread(target=lambda: got.append(
        initramfs_record.warnings(SimpleNamespace(root=root))), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "status blocked on a FIFO as the initramfs record"
    assert len(got[0]) == 1 and "not a regular file" in got[0][0], got
