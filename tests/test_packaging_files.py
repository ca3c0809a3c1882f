"""The files the packages ship, checked without building a package: the
policy files, the bash completion and the man pages against the real
parser, and the packaging's install lists against the tree.

tests/test_packaging.py builds the .deb itself; this file needs nothing but
bash and runs everywhere.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vfio_flavourd import actions, cli, commands
from vfio_flavourd.context import Context
from vfio_flavourd.policy import FLAVOURS, GROUP_MODES
from vfio_flavourd.policy_load import MATCH_KEYS, RULE_KEYS, TOP_KEYS, PolicyFile, load
from vfio_flavourd.root import Root
from vfio_flavourd.sim.tree import HostBuilder

TOP = Path(__file__).resolve().parents[1]
VENDOR_POLICY = TOP / "data/policy/vendor/10-defaults.yaml"
ADMIN_POLICY = TOP / "data/policy/admin/50-local.yaml"
COMPLETION = TOP / "data/bash-completion/vfio-flavourd"
MAN8 = TOP / "docs/man/vfio-flavourd.8"
MAN5 = TOP / "docs/man/vfio-flavourd-policy.5"
DEBIAN = TOP / "packaging/debian"
SPEC = TOP / "packaging/rpm/vfio-flavourd.spec"


def uncomment_examples(text: str) -> str:
    """The admin file with its example rules switched on: after `rules:`,
    lines written as "#  - name: ..." / "#    key: ..." lose their "#"."""
    head, sep, rest = text.partition("\nrules:\n")
    assert sep, "the admin policy file has no 'rules:' line"
    return head + sep + re.sub(r"(?m)^#(  )", r"\1", rest)


def example_host(root: Path) -> Path:
    """A small server: bridges and an LPC bridge, a ConnectX PF with two VFs
    on mlx5_core, a virtio-net device on virtio-pci."""
    (HostBuilder(root, kernel_release="6.12.0-test")
     .host_bridge("0000:00:00.0")
     .bridge("0000:00:01.0", secondary=0x3b)
     .device("0000:00:1f.0", 0x8086, 0xA1C1, 0x060100, driver="lpc_ich")
     .device("0000:00:03.0", 0x1AF4, 0x1041, 0x020000, driver="virtio_pci")
     .sriov_pf("0000:3b:00.0", 0x15B3, 0x101D, 0x020000, vf_device=0x101E,
               numvfs=2, vf_driver="mlx5_core", driver="mlx5_core")
     .build())
    return root


def plan(root: Path, *policy_files) -> dict:
    ctx = Context(Root(root), policy_paths=[str(p) for p in policy_files])
    return {d.device.address: d for d in actions.decisions_for(ctx)}


# -- the shipped policy ---------------------------------------------------------


def test_shipped_policy_files_are_valid():
    policy = load([PolicyFile(VENDOR_POLICY, "vendor"), PolicyFile(ADMIN_POLICY, "admin")])
    assert [r.name for r in policy.rules] == ["vendor-default-platform-bridges"]
    assert {r.flavour for r in policy.rules} == {"ignore"}


def test_shipped_policy_binds_nothing(tmp_path):
    decisions = plan(example_host(tmp_path), VENDOR_POLICY, ADMIN_POLICY)
    assert {a: d.action for a, d in decisions.items() if d.action != "none"} == {}
    claimed = {a for a, d in decisions.items() if d.rule is not None}
    assert claimed == {"0000:00:00.0", "0000:00:01.0", "0000:00:1f.0"}


def test_admin_examples_are_valid_once_uncommented(tmp_path):
    on = tmp_path / "50-local.yaml"
    on.write_text(uncomment_examples(ADMIN_POLICY.read_text()))
    policy = load([PolicyFile(on, "admin")])
    assert [r.name for r in policy.rules] == [
        "keep-virtio-net", "mlx5-vfs", "nic0-vfs", "passthrough-gpu"]
    decisions = plan(example_host(tmp_path / "root"), VENDOR_POLICY, on)
    got = {a: (d.rule.name if d.rule else None, d.module, d.action)
           for a, d in decisions.items()}
    assert got["0000:3b:00.2"] == ("mlx5-vfs", "mlx5_vfio_pci", "bind")
    assert got["0000:3b:00.3"] == ("mlx5-vfs", "mlx5_vfio_pci", "bind")
    assert got["0000:00:03.0"] == ("keep-virtio-net", None, "none")
    assert got["0000:3b:00.0"] == (None, None, "none")


# -- bash completion against the parser -----------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _options(parser: argparse.ArgumentParser) -> set:
    return {o for a in parser._actions for o in a.option_strings}


def _complete(line: str, env=None) -> list:
    script = (f'source "{COMPLETION}"\n'
              'COMP_LINE=$1; COMP_POINT=${#1}\n'
              "COMP_WORDBREAKS=$' \\t\\n\"\\'><=;|&(:'\n"
              '_vfio_flavourd\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    out = subprocess.run(["bash", "-c", script, "complete", line], check=True,
                         capture_output=True, text=True, env=env)
    return [w for w in out.stdout.splitlines() if w]


needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")


@needs_bash
def test_completion_offers_every_command_and_global_option():
    parser = cli.build_parser()
    assert set(_complete("vfio-flavourd ")) == set(_subparsers(parser))
    assert set(_complete("vfio-flavourd -")) == _options(parser)


@needs_bash
@pytest.mark.parametrize("command", sorted(commands.COMMANDS))
def test_completion_offers_each_commands_options(command):
    sub = _subparsers(cli.build_parser())[command]
    assert set(_complete(f"vfio-flavourd --root /x {command} -")) == _options(sub)
    for action in sub._actions:
        if action.choices and action.option_strings:
            line = f"vfio-flavourd {command} {action.option_strings[-1]} "
            assert set(_complete(line)) == set(action.choices)


@needs_bash
def test_completion_offers_addresses_of_the_root(tmp_path):
    root = example_host(tmp_path)
    got = _complete(f"vfio-flavourd --root {root} explain 0000:3b:00")
    # bash replaces only the part after the last ':', so that is what it gets.
    assert got == ["00.0", "00.2", "00.3"]
    assert "0000:00:1f.0" in _complete(f"vfio-flavourd --root={root} apply ")


# -- man pages against the parser and the policy schema -----------------------------


def _man_text(path: Path) -> str:
    return path.read_text().replace("\\-", "-").replace("\\&", "")


def test_man8_documents_every_command_and_option():
    text = _man_text(MAN8)
    parser = cli.build_parser()
    for opt in _options(parser):
        assert opt in text, f"global option {opt} missing from {MAN8.name}"
    for name, sub in _subparsers(parser).items():
        assert re.search(rf'^\.SS "{re.escape(name)}\b', text, re.M), \
            f"command {name} has no .SS section in {MAN8.name}"
        for opt in _options(sub):
            assert opt in text, f"{name} {opt} missing from {MAN8.name}"


def test_man5_documents_every_policy_key_and_value():
    text = _man_text(MAN5)
    words = {w.strip('",.;()') for line in re.findall(r"^\.BR? (.*)$", text, re.M)
             for w in line.split()}
    for key in TOP_KEYS + RULE_KEYS + MATCH_KEYS + FLAVOURS + GROUP_MODES:
        assert key in words, f"'{key}' is not documented in {MAN5.name}"


@pytest.mark.skipif(shutil.which("man") is None, reason="no man")
@pytest.mark.parametrize("page", [MAN8, MAN5], ids=lambda p: p.name)
def test_man_pages_render_without_warnings(page):
    r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(page)],
                       capture_output=True, text=True,
                       env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"))
    assert r.returncode == 0
    assert r.stderr == ""


# -- install lists against the tree --------------------------------------------------


def _lines(path: Path) -> list:
    return [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def test_debian_install_lists_name_files_that_exist():
    for ln in _lines(DEBIAN / "vfio-flavourd.install"):
        src = ln.split()[0]
        assert glob.glob(str(TOP / src)), f"debian/vfio-flavourd.install: {src} matches nothing"
    for name in ("vfio-flavourd.manpages", "vfio-flavourd.bash-completion",
                 "vfio-flavourd.docs"):
        for ln in _lines(DEBIAN / name):
            assert (TOP / ln.split()[0]).is_file(), f"debian/{name}: {ln} is missing"


def test_rpm_spec_installs_files_that_exist():
    for m in re.finditer(r"^install -D\S* -t \S+ (.+)$", SPEC.read_text(), re.M):
        for src in m.group(1).split():
            assert glob.glob(str(TOP / src)), f"{SPEC.name}: {src} matches nothing"


def test_unit_and_udev_rule_call_the_paths_the_packages_install():
    exec_paths = set()
    for unit in (TOP / "systemd").glob("*.service"):
        exec_paths |= set(re.findall(r"^Exec\w+=[-@:+!]*(/\S+)", unit.read_text(), re.M))
    assert "/usr/sbin/vfio-flavourd" in exec_paths
    callouts = set()
    for rule in (TOP / "udev-rules").glob("*.rules"):
        callouts |= set(re.findall(r'(?:PROGRAM|RUN)[^=]*="(/usr/libexec/vfio-flavourd/[^ "]+)',
                                   rule.read_text(), re.I))
        # udev runs rules in file-name order: ours must beat 80-drivers.rules.
        assert rule.name < "80-drivers.rules"
    assert callouts, "the udev rule calls no callout under /usr/libexec/vfio-flavourd"
    for c in callouts:
        src = TOP / "udev-rules" / os.path.basename(c)
        assert src.is_file() and os.access(src, os.X_OK), f"{c}: no executable {src}"


# Python distribution -> Debian package, for what pyproject.toml requires.
DEBIAN_NAMES = {"pyyaml": "python3-yaml", "pyudev": "python3-pyudev",
                "systemd-python": "python3-systemd"}


def test_debian_depends_on_every_python_dependency_and_the_journal_extra():
    import tomllib
    project = tomllib.loads((TOP / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["journal"]]
    names = {re.split(r"[<>=!~ ;\[]", w, 1)[0].lower() for w in wanted}
    assert names == set(DEBIAN_NAMES), "a new dependency needs its Debian name here"
    control = (TOP / "packaging/debian/control").read_text()
    depends = control.split("\nPackage: vfio-flavourd\n")[1].split("\nDescription:")[0]
    for name in names:
        assert f" {DEBIAN_NAMES[name]}," in depends, DEBIAN_NAMES[name]
