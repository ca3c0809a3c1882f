"""The compiled cache gives back what was stored, as the same classes."""

import os
import shutil
import pathlib

from vfio_flavourd import cache
from vfio_flavourd.aliases import load_index
from vfio_flavourd.policy_load import load_policy
from vfio_flavourd.root import Root

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples/hosts/virt-server"


def test_round_trip_of_the_example_hosts_policy_and_index(tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "h", symlinks=True)
    root = Root(tmp_path / "h")
    policy, index = load_policy(root), load_index(root.modules_dir())
    assert any(r.match.class_ for r in policy.rules)        # ClassPrefix records too
    cache.store(root, policy, index)
    assert os.path.exists(root.fspath(f"run/vfio-flavourd/{cache.CACHE_NAME}"))
    got_policy, got_index = cache.load_cached(root)
    assert got_policy.rules == policy.rules
    assert [type(r.match).__name__ for r in got_policy.rules] == ["Match"] * len(policy.rules)
    assert [(str(f.path), f.layer) for f in got_policy.files] == [
        (str(f.path), f.layer) for f in policy.files]
    modalias = "pci:v000015B3d0000101Esv000015B3sd00000016bc02sc00i00"
    assert got_index.matching(modalias) == index.matching(modalias)
    assert got_index.modules() == index.modules() and got_index.source == str(index.source)


def test_a_damaged_cache_is_a_miss(tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "h", symlinks=True)
    root = Root(tmp_path / "h")
    cache.store(root, load_policy(root), load_index(root.modules_dir()))
    path = root.fspath(f"run/vfio-flavourd/{cache.CACHE_NAME}")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    assert cache.load_cached(root) is None
