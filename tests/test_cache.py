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


def test_the_variant_modules_outlive_a_policy_edit_but_not_a_new_modules_alias(tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "h", symlinks=True)
    root = Root(tmp_path / "h")
    index = load_index(root.modules_dir())
    cache.store(root, load_policy(root), index)
    modules, warnings = cache.load_modules(root)
    assert modules == index.modules() and "mlx5_vfio_pci" in modules
    assert warnings == index.warnings
    # An edited policy makes the policy stale, not the index.
    policy_file = next(f.path for f in load_policy(root).files)
    os.utime(policy_file, ns=(1, 1))
    assert cache.load_cached(root) is None
    assert cache.load_cached(root, policy_too=False)[1].modules() == index.modules()
    assert cache.load_modules(root)[0] == index.modules()
    # A new modules.alias (a kernel package, a depmod) makes both stale.
    alias = root.modules_fspath() + "/modules.alias"
    with open(alias, "a") as f:
        f.write("alias vfio_pci:v00001234d00005678sv*sd*bc*sc*i* new_vfio_pci\n")
    assert cache.load_modules(root) is None
    assert cache.load_cached(root, policy_too=False) is None


def test_release_reads_the_variant_modules_without_the_alias_matcher(tmp_path):
    """What `release` imports once the cache is warm (the first run warms
    it): not the engine, the alias matcher or the policy."""
    import subprocess
    import sys
    shutil.copytree(EXAMPLE, tmp_path / "h", symlinks=True)
    code = ("import sys; from vfio_flavourd.cli import main; rc = main(); "
            "print(sorted(m for m in sys.modules if m.startswith('vfio_flavourd')), "
            "file=sys.stderr); sys.exit(rc)")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code, "--root", str(tmp_path / "h"), "release",
                            "--dry-run", "0000:3b:00.2"],
                           capture_output=True, text=True, env=env,
                           cwd=pathlib.Path(__file__).resolve().parents[1])
        assert r.returncode == 0, r.stderr
    assert "0000:3b:00.2" in r.stdout, r.stdout
    loaded = r.stderr.strip().splitlines()[-1]
    for name in ("engine", "aliases", "globmatch", "policy", "actions", "commands.apply"):
        assert f"'vfio_flavourd.{name}'" not in loaded, loaded
    assert "'vfio_flavourd.binder'" in loaded and "'vfio_flavourd.cache'" in loaded, loaded
