"""The command line as people and scripts use it, on the bundled example host."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from vfio_flavourd.cli import main

REPO = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = str(REPO / "examples/hosts/virt-server")


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_plan_json_on_the_example_host(capsys):
    rc, out, err = run(capsys, "--root", EXAMPLE, "plan", "--json")
    assert rc == 0 and err == ""
    rows = {r["address"]: r for r in json.loads(out)}
    assert len(rows) == 62
    # Read from each device's numa_node (two sockets: 45 on 0, 17 on 1).
    assert sorted(r["numa_node"] for r in rows.values()) == [0] * 45 + [1] * 17
    for r in rows.values():
        assert set(r) >= {"address", "vendor", "device", "current_driver", "rule", "module",
                          "action"}
    want = {
        "0000:3b:00.2": ("mlx5-vfs", "mlx5_vfio_pci", "bind"),
        "0000:5e:01.0": ("e810-vfs", "vfio_pci", "bind"),
        "0000:6b:00.1": ("qat-vfs", "qat_vfio_pci", "bind"),
        "0000:9a:00.1": ("pds-vfs", "pds_vfio_pci", "bind"),
        "0000:ca:00.0": ("gpus", "vfio_pci", "bind"),
        "0000:9b:00.0": ("dsc-virtio-net", None, "none"),
        "0000:02:00.0": ("management-nic", None, "none"),
        "0000:03:00.0": ("bmc-vga", None, "none"),
        "0000:3b:00.0": (None, None, "none"),
    }
    for address, (rule, module, action) in want.items():
        r = rows[address]
        assert (r["rule"], r["module"], r["action"]) == (rule, module, action), address
    assert rows["0000:3b:00.2"]["vendor"] == "15b3" and rows["0000:3b:00.2"]["device"] == "101e"
    # every VF of the ConnectX PFs gets the variant
    vfs = [r for r in rows.values() if r["device"] == "101e"]
    assert len(vfs) == 16 and {r["module"] for r in vfs} == {"mlx5_vfio_pci"}


def test_plan_table_for_people(capsys):
    rc, out, _ = run(capsys, "--root", EXAMPLE, "plan")
    lines = out.splitlines()
    assert lines[0].split() == ["ADDRESS", "ID", "NAME", "DRIVER", "RULE", "MODULE", "ACTION"]
    assert lines[-1] == "62 devices: 30 bind, 32 none"


def test_explain_shows_every_candidate(capsys):
    rc, out, _ = run(capsys, "--root", EXAMPLE, "explain", "3b:00.2")
    assert rc == 0
    assert "mlx5-vfs  [" in out and "MATCHED" in out
    assert "mlx5_vfio_pci            v000015B3d0000101Esv*sd*bc*sc*i*" in out
    assert "5 wildcards  preferred" in out
    assert "vfio_pci                 v*d*sv*sd*bc*sc*i*" in out and "7 wildcards  catch-all" in out
    assert out.rstrip().endswith("decision: bind mlx5_vfio_pci: rule mlx5-vfs wants mlx5_vfio_pci")


def test_explain_json_lists_rules_and_candidates(capsys):
    rc, out, _ = run(capsys, "--root", EXAMPLE, "explain", "0000:9b:00.0", "--json")
    d = json.loads(out)
    assert d["rule"] == "dsc-virtio-net" and d["action"] == "none"
    assert [t["rule"] for t in d["rules_tried"]][-1] == "dsc-virtio-net"
    assert d["rules_tried"][0]["matched"] is False


def test_variants(capsys):
    rc, out, _ = run(capsys, "--root", EXAMPLE, "variants", "--json")
    mods = {a["module"] for a in json.loads(out)}
    assert {"vfio_pci", "mlx5_vfio_pci", "qat_vfio_pci", "pds_vfio_pci"} <= mods


def test_check_config_reports_all_errors_with_lines(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - name: a\n    match: {vendor: xyz}\n    flavour: vfio\n"
                   "  - name: b\n    match: {device: 1}\n    flavour: nope\n")
    rc, out, err = run(capsys, "check-config", str(bad))
    assert rc == 1
    assert err.splitlines() == [
        f"vfio-flavourd: error: {bad}:4:21: rules[0].match.vendor: expected a 16-bit hex id "
        "such as 0x15b3 or \"15b3\", found xyz",
        f"vfio-flavourd: error: {bad}:8:14: rules[1].flavour: expected one of vfio, host, "
        "ignore, found nope",
        "2 problems found",
    ]


def test_check_config_on_the_search_path(capsys):
    rc, out, _ = run(capsys, "--root", EXAMPLE, "check-config")
    assert rc == 0 and out.startswith("ok: 9 rules in 1 file")


def test_a_broken_policy_never_yields_a_plan(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules: [{name: a, match: {vendor: 1}, flavour: vfio, extra: 1}]\n")
    rc, out, err = run(capsys, "--root", EXAMPLE, "--policy", str(bad), "plan")
    assert rc == 1 and out == ""
    assert err.splitlines()[-1] == ("vfio-flavourd: error: the policy has 1 problem; nothing "
                                    "was done")


@pytest.mark.parametrize("argv,message", [
    (["--root", EXAMPLE, "explain", "zz:00.0"],
     "vfio-flavourd: error: 'zz:00.0' is not a PCI address (expected DOMAIN:BUS:SLOT.FUNC, "
     "e.g. 0000:3b:00.1)"),
    (["--root", EXAMPLE, "explain", "0000:77:00.0"],
     "vfio-flavourd: error: 0000:77:00.0: no such PCI device"),
    (["--root", "/nonexistent-root", "plan"],
     "vfio-flavourd: error: root /nonexistent-root: not a directory"),
    (["--simulate", "plan"],
     "vfio-flavourd: error: --simulate needs --root DIR: a copy of a machine, such as "
     "examples/hosts/virt-server"),
])
def test_user_errors_are_one_line_not_tracebacks(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 1
    assert err.strip() == message


def test_missing_modules_alias_warns_once_and_falls_back(capsys, tmp_path):
    import shutil
    root = tmp_path / "host"
    shutil.copytree(EXAMPLE, root, symlinks=True)
    for p in root.glob("lib/modules/*/modules.alias"):
        p.unlink()
    rc, out, err = run(capsys, "--root", str(root), "plan", "--json")
    assert rc == 0
    assert err.count("warning:") == 1 and "modules.alias: cannot read" in err
    rows = {r["address"]: r for r in json.loads(out)}
    assert rows["0000:3b:00.2"]["module"] == "vfio_pci"


def test_simulated_apply_then_status_on_a_copy(capsys):
    rc, out, err = run(capsys, "--root", EXAMPLE, "--simulate", "apply", "--json")
    assert rc == 0
    res = json.loads(out)
    bound = {o["address"]: o["driver"] for o in res if o["result"] == "bound"}
    assert bound["0000:3b:00.2"] == "mlx5_vfio_pci" and bound["0000:ca:00.0"] == "vfio-pci"
    assert len(bound) == 30
    # the example tree itself was not touched
    assert not (pathlib.Path(EXAMPLE) / "run/vfio-flavourd").exists()


def test_python_dash_m_works_like_the_command():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "vfio_flavourd", "--root", EXAMPLE, "variants"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "mlx5_vfio_pci" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "vfio_flavourd", "explain"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: the following arguments are required: address" in proc.stderr


def test_plan_table_from_the_lean_read_is_the_full_reads(capsys, monkeypatch):
    """plan's table reads no IOMMU group or SR-IOV field (pci.read_device
    full=False): what it prints must be what a full read decides."""
    from vfio_flavourd import pci
    rc, lean, _ = run(capsys, "--root", EXAMPLE, "plan")
    real = pci.read_device
    fulls = []

    def always_full(sysfs, address, modules=None, full=True):
        fulls.append(full)
        return real(sysfs, address, modules, True)
    monkeypatch.setattr(pci, "read_device", always_full)
    rc2, full, _ = run(capsys, "--root", EXAMPLE, "plan")
    assert rc == rc2 == 0
    assert fulls and not any(fulls)             # plan asked for the lean read ...
    assert lean == full                         # ... and it shows the same
    rc, out, _ = run(capsys, "--root", EXAMPLE, "plan", "--json")
    groups = [r["iommu_group"] for r in json.loads(out)]
    assert all(g is not None for g in groups) and len(set(groups)) > 10
