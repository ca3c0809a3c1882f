"""The initramfs-tools hook and the dracut module, run by their shells with
the initramfs builders' functions replaced by recorders; the record they
leave and the staleness warning check-config prints from it.

tests/vm builds a real image with Debian's mkinitramfs and boots it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vfio_flavourd.cli import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples/hosts/virt-server"
HOOK = REPO / "initramfs/initramfs-tools/vfio-flavourd"
DRACUT = REPO / "initramfs/dracut/90vfio-flavourd/module-setup.sh"
RELEASE = "6.12.38+deb13-amd64"
POLICY = "etc/vfio-flavourd/policy.d/50-example.yaml"
RECORD = f"var/lib/vfio-flavourd/initramfs/{RELEASE}.rules"

HOOK_FUNCTIONS = """\
manual_add_modules() { echo "$*" >> "$CALLS"; }
"""
DRACUT_FUNCTIONS = """\
require_binaries() { [ -x "$1" ]; }
dwarn() { echo "dwarn: $*" >&2; }
instmods() { echo "instmods hostonly=[$hostonly] $*" >> "$CALLS"; }
inst_simple() { mkdir -p "$DESTDIR${2%/*}"; cp "$1" "$DESTDIR$2"; }
"""


@pytest.fixture
def host(tmp_path):
    root = tmp_path / "host"
    shutil.copytree(EXAMPLE, root, symlinks=True)
    return root


def tool(tmp_path) -> Path:
    """/usr/sbin/vfio-flavourd for the scripts: this checkout's."""
    path = tmp_path / "tool-vfio-flavourd"     # not the hook copy's name
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vfio_flavourd "$@"\n')
    path.chmod(0o755)
    return path


def script_copy(src: Path, tmp_path: Path, functions_file: Path) -> Path:
    """The script with the tool's path and the builder's function library
    pointed at the test's; each is named exactly once."""
    text = src.read_text()
    assert text.count("/usr/sbin/vfio-flavourd") >= 1
    text = text.replace("/usr/sbin/vfio-flavourd", str(tool(tmp_path)))
    if src == HOOK:
        lib = ". /usr/share/initramfs-tools/hook-functions"
        assert text.count(lib) == 1
        text = text.replace(lib, f". {functions_file}")
    copy = tmp_path / f"under-test-{src.name}"
    copy.write_text(text)
    copy.chmod(0o755)
    return copy


def run_hook(host, tmp_path, script=HOOK):
    dest = tmp_path / "image"
    dest.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    functions = tmp_path / "functions"
    functions.write_text(HOOK_FUNCTIONS if script == HOOK else DRACUT_FUNCTIONS)
    copy = script_copy(script, tmp_path, functions)
    env = dict(os.environ, VFIO_FLAVOURD_ROOT=str(host), DESTDIR=str(dest), CALLS=str(calls),
               version=RELEASE, kernel=RELEASE, DRACUT_TMPDIR=str(tmp_path),
               udevrulesdir="/usr/lib/udev/rules.d", PYTHONPATH=str(REPO))
    if script == HOOK:
        argv = ["sh", str(copy)]
    else:
        argv = ["bash", "-c", f'. "{functions}"; . "{copy}"; check && installkernel && install']
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tmp_path)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return proc, dest, lines


def test_hook_prereqs():
    proc = subprocess.run(["sh", str(HOOK), "prereqs"], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, "udev\n")


def test_hook_puts_rules_and_their_modules_in_the_image(host, tmp_path):
    proc, dest, calls = run_hook(host, tmp_path)
    assert proc.returncode == 0, proc.stderr
    rules = (dest / "lib/udev/rules.d/70-vfio-flavourd.rules").read_text()
    assert "IMPORT" not in rules and "SYSTEMD_WANTS" not in rules
    assert 'RUN{builtin}+="kmod load mlx5_vfio_pci"' in rules
    assert calls == ["mlx5_vfio_pci pds_vfio_pci qat_vfio_pci vfio_pci vfio vfio_iommu_type1 "
                     "virtio_iommu"]
    assert (host / RECORD).read_text() == rules
    assert not (dest / ".vfio-flavourd.rules").exists()


def test_hook_with_nothing_to_claim_adds_nothing(host, tmp_path):
    (host / POLICY).write_text("version: 1\nrules:\n  - name: nics\n    match: {class: '02'}\n"
                               "    flavour: host\n")
    proc, dest, calls = run_hook(host, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert calls == []
    assert list(dest.rglob("*")) == []
    assert "# rules: 1 compiled, 0 left for the running system" in (host / RECORD).read_text()


def test_hook_with_a_broken_policy_adds_nothing_and_says_so(host, tmp_path):
    (host / POLICY).write_text("version: 1\nrules:\n  - name: x\n")
    proc, dest, calls = run_hook(host, tmp_path)
    assert proc.returncode == 0
    assert "W: vfio-flavourd: the policy did not compile (above); this initramfs claims no " \
           "device" in proc.stderr
    assert "missing required key 'match'" in proc.stderr
    assert calls == [] and list(dest.rglob("*")) == []
    assert not (host / RECORD).exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_dracut_module_does_the_same(host, tmp_path):
    proc, dest, calls = run_hook(host, tmp_path, DRACUT)
    assert proc.returncode == 0, proc.stderr
    rules = (dest / "usr/lib/udev/rules.d/70-vfio-flavourd.rules").read_text()
    assert 'ATTR{driver_override}="vfio-pci"' in rules and "IMPORT" not in rules
    assert calls == ["instmods hostonly=[] mlx5_vfio_pci pds_vfio_pci qat_vfio_pci vfio_pci "
                     "vfio vfio_iommu_type1 virtio_iommu"]
    assert (host / RECORD).read_text() == rules


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_dracut_module_with_nothing_to_claim_adds_nothing(host, tmp_path):
    (host / POLICY).write_text("version: 1\nrules: []\n")
    proc, dest, calls = run_hook(host, tmp_path, DRACUT)
    assert proc.returncode == 0, proc.stderr
    assert calls == [] and list(dest.rglob("*")) == []


def check_config(capsys, host):
    capsys.readouterr()
    rc = main(["--root", str(host), "check-config"])
    return rc, capsys.readouterr().err


def test_check_config_warns_when_the_initramfs_rules_are_stale(host, tmp_path, capsys):
    run_hook(host, tmp_path)
    assert check_config(capsys, host) == (0, "")
    policy = host / POLICY
    policy.write_text(policy.read_text().replace("variants: false", "variants: true"))
    rc, err = check_config(capsys, host)
    assert rc == 0
    assert err.startswith(f"vfio-flavourd: warning: the initramfs of kernel {RELEASE} holds "
                          "rules older than the policy (policy /etc/vfio-flavourd/policy.d/"
                          "50-example.yaml changed (sha256:")
    assert err.endswith("); run update-initramfs -u (or dracut -f) so that boot follows "
                        "today's policy\n")


def test_check_config_warns_when_a_hook_never_ran(host, capsys):
    hook = host / "usr/share/initramfs-tools/hooks/vfio-flavourd"
    assert check_config(capsys, host) == (0, "")      # no hook installed: no opinion
    hook.parent.mkdir(parents=True)
    hook.write_text("")
    rc, err = check_config(capsys, host)
    assert err == (f"vfio-flavourd: warning: the initramfs of kernel {RELEASE} has no "
                   "vfio-flavourd rules, but the policy claims devices there; run "
                   "update-initramfs -u (or dracut -f) so that boot follows today's policy\n")


def test_status_warns_as_check_config_does(host, tmp_path, capsys):
    run_hook(host, tmp_path)
    policy = host / POLICY
    policy.write_text(policy.read_text().replace("variants: false", "variants: true"))
    capsys.readouterr()
    assert main(["--root", str(host), "status"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"vfio-flavourd: warning: the initramfs of kernel {RELEASE} holds "
                          "rules older than the policy")


def test_a_broken_policy_gives_status_no_initramfs_warning(host, tmp_path, capsys):
    run_hook(host, tmp_path)
    (host / POLICY).write_text("version: 1\nrules:\n  - name: x\n")
    capsys.readouterr()
    assert main(["--root", str(host), "status"]) == 0
    assert "initramfs" not in capsys.readouterr().err
