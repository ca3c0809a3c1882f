import io
import os
import subprocess
import sys
import time

from vfio_flavourd import cache
from vfio_flavourd.root import Root
from vfio_flavourd.udev_callout import run

from simhost import VF0, build_host, write_policy

POLICY = """\
version: 1
rules:
  - {name: vfs, match: {vendor: 0x15b3, virtfn: true}, flavour: vfio}
"""


def callout(root, address, monkeypatch):
    monkeypatch.setenv("VFIO_FLAVOURD_ROOT", str(root))
    out, err = io.StringIO(), io.StringIO()
    rc = run([address], out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def unbound_vf_host(tmp_path):
    b = build_host(tmp_path)
    b.load("mlx5_vfio_pci")
    kernel = b.kernel()
    kernel.sysfs.write("sys/bus/pci/drivers/mlx5_core/unbind", VF0)
    return kernel


def test_prints_the_driver_name_for_an_unbound_device(tmp_path, monkeypatch):
    unbound_vf_host(tmp_path)
    write_policy(tmp_path, POLICY)
    rc, out, err = callout(tmp_path, VF0, monkeypatch)
    assert (rc, err) == (0, "")
    assert out == ("VFIO_FLAVOURD_RULE=vfs\nVFIO_FLAVOURD_MODULE=mlx5_vfio_pci\n"
                   "VFIO_FLAVOURD_DRIVER=mlx5_vfio_pci\n")
    # the override udev will write is recorded as ours
    assert (tmp_path / f"run/vfio-flavourd/udev/{VF0}").read_text() == "mlx5_vfio_pci\n"


def test_bound_device_gets_no_override_only_the_decision(tmp_path, monkeypatch):
    build_host(tmp_path).build()
    write_policy(tmp_path, POLICY)
    rc, out, _ = callout(tmp_path, VF0, monkeypatch)
    assert out == "VFIO_FLAVOURD_RULE=vfs\nVFIO_FLAVOURD_MODULE=mlx5_vfio_pci\n"


def test_unclaimed_device_prints_nothing(tmp_path, monkeypatch):
    build_host(tmp_path).build()
    write_policy(tmp_path, POLICY)
    assert callout(tmp_path, "0000:04:00.0", monkeypatch) == (0, "", "")


def test_errors_never_fail_the_udev_event(tmp_path, monkeypatch):
    build_host(tmp_path).build()
    write_policy(tmp_path, "version: 7\n")
    rc, out, err = callout(tmp_path, VF0, monkeypatch)
    assert (rc, out) == (0, "")
    assert err.startswith(f"vfio-flavourd-udev: {VF0}: ") and "version: expected 1" in err
    write_policy(tmp_path, POLICY)
    rc, out, err = callout(tmp_path, "0000:99:00.0", monkeypatch)
    assert (rc, out, err) == (0, "", "vfio-flavourd-udev: 0000:99:00.0: 0000:99:00.0: no such "
                                     "PCI device\n")


def test_cache_is_used_and_invalidated_by_policy_edits(tmp_path, monkeypatch):
    unbound_vf_host(tmp_path)
    f = write_policy(tmp_path, POLICY)
    callout(tmp_path, VF0, monkeypatch)
    root = Root(tmp_path)
    assert cache.load_cached(root) is not None
    # an edit (new mtime and size) invalidates it
    time.sleep(0.01)
    f.write_text(POLICY.replace("flavour: vfio", "flavour: ignore"))
    assert cache.load_cached(root) is None
    rc, out, _ = callout(tmp_path, VF0, monkeypatch)
    assert out == ""
    assert cache.load_cached(root) is not None
    # a new file in a policy directory invalidates it too
    (f.parent / "60-more.yaml").write_text("version: 1\n")
    assert cache.load_cached(root) is None


def test_cache_written_by_someone_else_is_ignored(tmp_path, monkeypatch):
    unbound_vf_host(tmp_path)
    write_policy(tmp_path, POLICY)
    callout(tmp_path, VF0, monkeypatch)
    path = tmp_path / "run/vfio-flavourd" / cache.CACHE_NAME
    os.chmod(path, 0o666)
    assert cache.load_cached(Root(tmp_path)) is None


def test_main_flushes_its_answer_before_it_exits(tmp_path):
    # main() ends with os._exit(), which skips the flush at shutdown.
    build_host(tmp_path).build()
    write_policy(tmp_path, POLICY)
    env = dict(os.environ, VFIO_FLAVOURD_ROOT=str(tmp_path),
               PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run([sys.executable, "-c", "from vfio_flavourd.udev_callout import main; "
                        "main()", VF0], env=env, capture_output=True, text=True)
    assert (p.returncode, p.stdout, p.stderr) == (
        0, "VFIO_FLAVOURD_RULE=vfs\nVFIO_FLAVOURD_MODULE=mlx5_vfio_pci\n", "")
