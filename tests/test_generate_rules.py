"""`generate-rules`: the file it writes, its header, and --check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import make_device
from udev_eval import UdevDevice, evaluate, parse
from vfio_flavourd.cli import main
from vfio_flavourd.modprobe import expected_driver_name
from vfio_flavourd.policy import Match, Policy, Rule
from vfio_flavourd.rules_compile import compile_rules

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples/hosts/virt-server"
POLICY_DIR = "etc/vfio-flavourd/policy.d"


@pytest.fixture
def host(tmp_path):
    root = tmp_path / "host"
    shutil.copytree(EXAMPLE, root, symlinks=True)
    return root


def run(capsys, *argv):
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_driver_names_known_before_loading():
    assert expected_driver_name("vfio_pci") == "vfio-pci"
    assert expected_driver_name("vfio-pci") == "vfio-pci"
    assert expected_driver_name("mlx5_vfio_pci") == "mlx5_vfio_pci"
    assert expected_driver_name("xe_vfio_pci") == "xe-vfio-pci"


def test_header_names_sources_and_left_out_rules(host, capsys):
    rc, out, _ = run(capsys, "--root", str(host), "generate-rules")
    assert rc == 0
    lines = out.splitlines()
    assert "# source: kernel-release 6.12.38+deb13-amd64" in lines
    assert any(ln.startswith("# source: modules.alias /lib/modules/6.12.38+deb13-amd64/"
                             "modules.alias sha256:") for ln in lines)
    assert any(ln.startswith("# source: policy /etc/vfio-flavourd/policy.d/50-example.yaml "
                             "sha256:") for ln in lines)
    assert "# rules: 8 compiled, 1 left to the callout" in lines
    assert ("#   e810-vfs (/etc/vfio-flavourd/policy.d/50-example.yaml:36): 'physfn' is a "
            "glob on the PF's address, which udev cannot test on a VF") in lines
    assert 'IMPORT{program}="/usr/libexec/vfio-flavourd/vfio-flavourd-udev %k"' in lines


def test_policy_udev_can_express_gives_no_callout(host, capsys):
    (host / POLICY_DIR / "50-example.yaml").write_text(
        "version: 1\nrules:\n  - name: vfs\n    match: {vendor: 0x15b3, virtfn: true}\n"
        "    flavour: vfio\n")
    rc, out, _ = run(capsys, "--root", str(host), "generate-rules")
    assert rc == 0
    assert "IMPORT" not in out and "vfio-flavourd-udev" not in out
    assert "# rules: 1 compiled, 0 left to the callout" in out.splitlines()
    assert 'RUN{builtin}+="kmod load mlx5_vfio_pci"' in out


def test_initramfs_rules_run_nothing_but_kmod(host, capsys):
    rc, out, _ = run(capsys, "--root", str(host), "generate-rules", "--initramfs")
    assert rc == 0
    assert "IMPORT" not in out and "SYSTEMD_WANTS" not in out
    assert "# rules: 8 compiled, 1 left for the running system" in out.splitlines()
    assert 'ATTR{vendor}=="0x8086", ATTR{device}=="0x1889", GOTO="vfio_flavourd_end"' in out


def test_output_then_check(host, tmp_path, capsys):
    out_file = tmp_path / "run/udev/rules.d/70-vfio-flavourd.rules"
    rc, _, err = run(capsys, "--root", str(host), "generate-rules", "--output", str(out_file))
    assert rc == 0
    assert err == (f"{out_file}: 8 rules compiled, 1 left to the callout; loads "
                   "mlx5_vfio_pci, pds_vfio_pci, qat_vfio_pci, vfio_pci\n")
    assert out_file.stat().st_mode & 0o777 == 0o644
    rc, out, _ = run(capsys, "--root", str(host), "generate-rules", "--check", str(out_file))
    assert (rc, out) == (0, f"{out_file}: current\n")

    policy = host / POLICY_DIR / "50-example.yaml"
    policy.write_text(policy.read_text().replace("variants: false", "variants: true"))
    rc, out, _ = run(capsys, "--root", str(host), "generate-rules", "--check", str(out_file))
    assert rc == 1
    lines = out.splitlines()
    assert lines[0] == f"{out_file}: stale:"
    assert lines[1].startswith("  policy /etc/vfio-flavourd/policy.d/50-example.yaml changed "
                               "(sha256:")
    assert len(lines) == 2


def test_check_names_new_kernel_and_new_files(host, tmp_path, capsys):
    out_file = tmp_path / "rules"
    run(capsys, "--root", str(host), "generate-rules", "--output", str(out_file))
    (host / POLICY_DIR / "60-more.yaml").write_text("version: 1\nrules: []\n")
    rel = "6.12.38+deb13-amd64"
    newmods = host / "lib/modules/6.13.0-test"
    shutil.copytree(host / "lib/modules" / rel, newmods)
    rc, out, _ = run(capsys, "--root", str(host), "--kernel-release", "6.13.0-test",
                     "generate-rules", "--check", str(out_file))
    assert rc == 1
    assert "  kernel release is now 6.13.0-test" in out.splitlines()
    assert any(ln.startswith("  new source: policy /etc/vfio-flavourd/policy.d/60-more.yaml")
               for ln in out.splitlines())
    assert any(ln.startswith("  new source: modules.alias /lib/modules/6.13.0-test/")
               for ln in out.splitlines())


def test_check_of_a_missing_file(host, tmp_path, capsys):
    rc, out, _ = run(capsys, "--root", str(host), "generate-rules", "--check",
                     str(tmp_path / "none"))
    assert (rc, out) == (1, f"{tmp_path / 'none'}: stale: it does not exist\n")


def test_output_and_check_together_is_a_usage_error(host, capsys):
    rc, _, err = run(capsys, "--root", str(host), "generate-rules", "--output", "a",
                     "--check", "b")
    assert rc == 1
    assert err == "vfio-flavourd: error: --output and --check: give one of them\n"


def rules_for(policy, index):
    return parse("\n".join(compile_rules(policy, index).lines))


def test_first_matching_rule_wins_in_udev(real_index):
    """A host rule before a vfio rule keeps its devices from the vfio rule."""
    policy = Policy([
        Rule(name="keep-one", match=Match(address=("0000:3b:00.2",)), flavour="host"),
        Rule(name="vfs", match=Match(vendor=(0x15B3,)), flavour="vfio")])
    rules = rules_for(policy, real_index)
    kept = evaluate(rules, UdevDevice.from_pci(make_device(address="0000:3b:00.2")))
    taken = evaluate(rules, UdevDevice.from_pci(make_device(address="0000:3b:00.3")))
    assert kept.driver_override is None and kept.run == []
    assert taken.driver_override == "mlx5_vfio_pci"
    assert taken.run == ["kmod load mlx5_vfio_pci"]


def test_prefer_deny_and_fallback_compile(real_index):
    dev = UdevDevice.from_pci
    nv = make_device(vendor=0x10DE, device=0x2342, class_code=0x030200)
    deny = Policy([Rule(name="g", match=Match(vendor=(0x10DE,)), flavour="vfio",
                        deny=("nvgrace_gpu_vfio_pci",))])
    assert evaluate(rules_for(deny, real_index), dev(nv)).driver_override == "vfio-pci"
    none = Policy([Rule(name="g", match=Match(vendor=(0x10DE,)), flavour="vfio",
                        variants=False, fallback=None)])
    assert evaluate(rules_for(none, real_index), dev(nv)).driver_override is None
    plain = Policy([Rule(name="g", match=Match(vendor=(0x10DE,)), flavour="vfio")])
    assert evaluate(rules_for(plain, real_index), dev(nv)).driver_override == \
        "nvgrace_gpu_vfio_pci"


def test_bound_overridden_and_boot_vga_devices_go_to_the_daemon(real_index):
    policy = Policy([Rule(name="vfs", match=Match(vendor=(0x15B3,)), flavour="vfio")])
    rules = rules_for(policy, real_index)
    for dev in (make_device(driver="mlx5_core"), make_device(driver_override="vfio-pci"),
                make_device(boot_vga=True)):
        r = evaluate(rules, UdevDevice.from_pci(dev))
        assert r.driver_override is None and r.run == [], dev
        assert r.tags == ["systemd"], dev


def test_bridges_get_nothing(real_index):
    policy = Policy([Rule(name="all", match=Match(vendor=(0x8086,)), flavour="vfio")])
    bridge = make_device(vendor=0x8086, device=0x2030, class_code=0x060400)
    r = evaluate(rules_for(policy, real_index), UdevDevice.from_pci(bridge))
    assert r.driver_override is None and r.tags == []
