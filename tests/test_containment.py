"""No write outside the root, ever: device directories, run-directory
entries and policy.d linked out of a copied root, and the udev callout
given a path instead of a PCI name.  A sentinel directory outside the root
must come out unchanged."""

from __future__ import annotations

import io
import os
import shutil

import pytest
from hostile import VF, no_traceback, run_cli, small_root, snapshot

from vfio_flavourd import udev_callout
from vfio_flavourd.errors import FlavourdError, SysfsError
from vfio_flavourd.root import Root
from vfio_flavourd.state import DeviceLock, State
from vfio_flavourd.sysfs import Sysfs


@pytest.fixture
def layout(tmp_path):
    root = small_root(tmp_path / "root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("sentinel\n")
    return root, outside


def _move_device_out(root, outside, how: str):
    """Move the VF's directory outside the root and link it back in."""
    link = root / "sys/bus/pci/devices" / VF
    real = os.path.realpath(link)
    moved = outside / VF
    shutil.move(real, moved)
    os.unlink(link)
    if how == "absolute":
        os.symlink(moved, link)
    else:
        os.symlink(os.path.relpath(moved, link.parent), link)
    return moved


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_simulate_never_writes_through_a_device_link_out_of_the_root(layout, how):
    root, outside = layout
    _move_device_out(root, outside, how)
    before = snapshot(outside)
    code, out, err = run_cli("--root", str(root), "--simulate", "apply")
    assert snapshot(outside) == before
    assert code in (1, 2) and no_traceback(err)
    assert "outside the root" in err
    assert "bound" not in out.split()


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_sysfs_write_refuses_a_device_link_out_of_the_root(layout, how):
    root, outside = layout
    _move_device_out(root, outside, how)
    before = snapshot(outside)
    with pytest.raises(SysfsError, match="outside the root"):
        Sysfs(Root(root)).write(f"sys/bus/pci/devices/{VF}/driver_override", "vfio-pci")
    assert snapshot(outside) == before


def test_sysfs_write_does_not_follow_a_linked_attribute(layout):
    root, outside = layout
    attr = root / "sys/bus/pci/devices" / VF / "driver_override"
    os.unlink(attr)
    os.symlink(outside / "keep", attr)
    with pytest.raises(SysfsError):
        Sysfs(Root(root)).write(f"sys/bus/pci/devices/{VF}/driver_override", "vfio-pci")
    assert (outside / "keep").read_text() == "sentinel\n"


def test_simulate_never_writes_through_a_linked_attribute(layout):
    root, outside = layout
    attr = root / "sys/bus/pci/devices" / VF / "driver_override"
    os.unlink(attr)
    (outside / "driver_override").write_text("(null)\n")
    os.symlink(outside / "driver_override", attr)
    before = snapshot(outside)
    code, out, err = run_cli("--root", str(root), "--simulate", "apply")
    assert snapshot(outside) == before
    assert code in (1, 2) and no_traceback(err)
    assert f"{VF}  failed" in out


def _link_run_dir_out(root, outside, sub) -> dict:
    """run/vfio-flavourd/SUB as a link to `outside`; its snapshot before."""
    run = root / "run/vfio-flavourd"
    run.mkdir(parents=True)
    os.symlink(outside, run / sub)
    return snapshot(outside)


@pytest.mark.parametrize("sub", ["devices", "locks", "udev"])
def test_run_dirs_linked_out_of_the_root_are_refused(layout, sub):
    root, outside = layout
    before = _link_run_dir_out(root, outside, sub)
    r = Root(root)
    with pytest.raises(FlavourdError, match="outside the root"):
        State(r).check_layout()
    with pytest.raises(FlavourdError):
        if sub == "locks":
            with DeviceLock(r, VF, timeout=1):
                pass
        elif sub == "devices":
            State(r).update(VF, {"module": "vfio_pci"})
        else:
            r.ensure_dir("run/vfio-flavourd/udev")
    State(r).update(VF, None)     # forgetting must not unlink outside either
    assert snapshot(outside) == before


@pytest.mark.parametrize("sub", ["devices", "locks"])
def test_simulate_apply_refuses_run_dirs_linked_out(layout, sub):
    root, outside = layout
    before = _link_run_dir_out(root, outside, sub)
    code, out, err = run_cli("--root", str(root), "--simulate", "apply")
    assert snapshot(outside) == before
    assert code == 1 and no_traceback(err) and "outside the root" in err
    assert "bound" not in out.split()


def test_the_run_dir_itself_linked_out_is_refused(layout):
    root, outside = layout
    (root / "run").mkdir()
    os.symlink(outside, root / "run/vfio-flavourd")
    before = snapshot(outside)
    code, out, err = run_cli("--root", str(root), "--simulate", "apply")
    assert snapshot(outside) == before
    assert code == 1 and no_traceback(err) and "outside the root" in err


def test_state_and_lock_files_that_are_links_are_not_followed(layout):
    root, outside = layout
    r = Root(root)
    devices = root / "run/vfio-flavourd/devices"
    locks = root / "run/vfio-flavourd/locks"
    devices.mkdir(parents=True)
    locks.mkdir()
    os.symlink(outside / "keep", devices / f"{VF}.json")
    os.symlink(outside / "keep", locks / f"{VF}.lock")
    with pytest.raises(FlavourdError, match="expected a lock file, found a symlink"):
        with DeviceLock(r, VF, timeout=1):
            pass
    State(r).update(VF, {"module": "vfio_pci"})   # replaces the link, never writes through it
    assert (outside / "keep").read_text() == "sentinel\n"
    assert not os.path.islink(devices / f"{VF}.json")


def test_migrate_write_refuses_policy_d_linked_out(layout):
    root, outside = layout
    shutil.rmtree(root / "etc/vfio-flavourd/policy.d")
    os.symlink(outside, root / "etc/vfio-flavourd/policy.d")
    (root / "etc/driverctl.d").mkdir()
    (root / "etc/driverctl.d" / f"pci-{VF}").write_text("vfio-pci\n")
    before = snapshot(outside)
    code, out, err = run_cli("--root", str(root), "migrate", "--write")
    assert snapshot(outside) == before
    assert code == 1 and no_traceback(err) and "outside the root" in err


@pytest.mark.parametrize("arg", ["/tmp/OUTSIDE/evil", "../../../../OUTSIDE/x", "0000:3b:00.2\n",
                                 "0000:3B:00.2", "0000:3b:00.2/../../x", "", "."])
def test_udev_callout_accepts_only_pci_kernel_names(layout, arg, monkeypatch):
    root, outside = layout
    arg = arg.replace("/tmp/OUTSIDE", str(outside)).replace("OUTSIDE", str(outside).lstrip("/"))
    monkeypatch.setenv("VFIO_FLAVOURD_ROOT", str(root))
    before = snapshot(outside)
    out, err = io.StringIO(), io.StringIO()
    rc = udev_callout.run([arg], out=out, err=err)
    out, err = out.getvalue(), err.getvalue()
    assert rc == 2 and out == ""
    assert "not a PCI kernel name" in err
    assert snapshot(outside) == before
    assert not (root / "run/vfio-flavourd/udev").exists()


def test_host_root_containment_costs_nothing(monkeypatch):
    """On "/" every path is inside: no realpath per write."""
    r = Root("/")
    calls = []
    monkeypatch.setattr(os.path, "realpath", lambda p, **kw: calls.append(p) or p)
    assert r.check_inside("/sys/bus/pci/devices/0000:00:00.0/driver_override")
    assert calls == []
