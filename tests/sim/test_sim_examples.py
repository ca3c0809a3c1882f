"""The bundled example host: regenerating it gives the committed tree, and
the simulator runs over the committed copy."""

import importlib.machinery
import importlib.util
import os
from pathlib import Path

import pytest
import yaml

from vfio_flavourd.root import Root
from vfio_flavourd.sim import SimKernel
from vfio_flavourd.sysfs import Sysfs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HOST = EXAMPLES / "hosts/virt-server"


def make_hosts():
    loader = importlib.machinery.SourceFileLoader("make_hosts", str(EXAMPLES / "make-hosts"))
    spec = importlib.util.spec_from_loader("make_hosts", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def snapshot(root: Path) -> dict:
    """Every file's bytes and every link's target.  Empty directories and
    file modes are left out: git keeps neither."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = ("file", p.read_bytes())
    return out


def test_regenerating_the_example_gives_the_committed_tree(tmp_path):
    make_hosts().build("virt-server", tmp_path)
    fresh, committed = snapshot(tmp_path / "virt-server"), snapshot(HOST)
    missing = sorted(set(fresh) - set(committed))
    extra = sorted(set(committed) - set(fresh))
    changed = sorted(k for k in set(fresh) & set(committed) if fresh[k] != committed[k])
    assert (missing, extra, changed) == ([], [], []), (
        "examples/hosts is stale: run examples/make-hosts and commit the result")


@pytest.fixture
def kernel(tmp_path):
    """A writable copy of the committed example, as git checks it out."""
    import shutil
    shutil.copytree(HOST, tmp_path / "host", symlinks=True)
    return SimKernel(tmp_path / "host")


def test_the_example_reads_like_the_server_it_describes(kernel):
    s = Sysfs(Root(HOST))
    assert Root(HOST).kernel_release == "6.12.38+deb13-amd64"
    assert s.read("sys/bus/pci/devices/0000:02:00.0/net/eno1/operstate") == "up"
    assert s.read("sys/bus/pci/devices/0000:03:00.0/boot_vga") == "1"
    assert s.link("sys/bus/pci/devices/0000:3b:00.2/physfn") == "0000:3b:00.0"
    assert s.link("sys/bus/pci/devices/0000:3b:02.2/physfn") == "0000:3b:00.1"   # offset 17
    assert s.link("sys/bus/pci/devices/0000:5e:01.0/driver") == "iavf"
    assert s.link("sys/bus/pci/devices/0000:6b:00.1/driver") is None
    assert s.link("sys/bus/pci/devices/0000:9a:00.1/driver") == "ionic"
    assert s.link("sys/bus/pci/devices/0000:ca:00.0/driver") is None
    assert s.read("sys/bus/pci/devices/0000:e3:00.0/numa_node") == "1"
    groups = {kernel.device(a).iommu_group for a in ("0000:00:1f.0", "0000:00:1f.4", "0000:00:1f.5")}
    assert len(groups) == 1
    vfs = [d for d in kernel.devices.values() if d.physfn]
    assert len(vfs) == 8 + 8 + 4 + 4 + 4
    assert len({d.iommu_group for d in vfs}) == len(vfs)
    assert " 259:2 / / " in (HOST / "proc/self/mountinfo").read_text()


def test_the_example_policy_is_version_1_yaml():
    text = (HOST / "etc/vfio-flavourd/policy.d/50-example.yaml").read_text()
    assert text == (EXAMPLES / "policy/50-example.yaml").read_text()
    policy = yaml.safe_load(text)
    assert policy["version"] == 1
    assert [r["name"] for r in policy["rules"]][:2] == ["management-nic", "boot-disk"]


def test_every_vfio_candidate_in_the_example_can_be_bound(kernel):
    s = kernel.sysfs
    cases = {"0000:3b:00.2": "mlx5_vfio_pci", "0000:5e:01.0": "vfio_pci",
             "0000:6b:00.1": "qat_vfio_pci", "0000:9a:00.1": "pds_vfio_pci",
             "0000:ca:00.0": "vfio_pci"}
    for addr, module in cases.items():
        kernel.loader.load(module)
        driver = kernel.catalog[module].driver
        s.write(f"sys/bus/pci/devices/{addr}/driver_override", driver)
        if s.link(f"sys/bus/pci/devices/{addr}/driver"):
            s.write(f"sys/bus/pci/devices/{addr}/driver/unbind", addr)
        s.write("sys/bus/pci/drivers_probe", addr)
        assert s.link(f"sys/bus/pci/devices/{addr}/driver") == driver, addr
