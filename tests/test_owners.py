"""Coexistence: a driver_override someone else set (driverctl, libvirt) is
left alone unless the rule says `takeover: true`, and plan, explain and
apply say who set it.  On small sysfs trees under a temp root."""

import json

import pytest

from vfio_flavourd.owners import DRIVERCTL, OURS, UNKNOWN, override_owner
from vfio_flavourd.pci import read_device
from vfio_flavourd.root import Root
from vfio_flavourd.state import State
from vfio_flavourd.sysfs import Sysfs

from tiny_sysfs import Tree

VF = "0000:3b:00.2"
POLICY = "etc/vfio-flavourd/policy.d/10-vfs.yaml"


def rules(takeover=False, flavour="vfio"):
    extra = "\n    takeover: true" if takeover else ""
    return f"""\
version: 1
rules:
  - name: connectx-vfs
    match: {{vendor: 0x15b3, virtfn: true}}
    flavour: {flavour}{extra}
"""


@pytest.fixture
def tree(tmp_path):
    t = Tree(tmp_path)
    t.device("0000:3b:00.0", 0x15B3, 0x101D, sv=0x15B3, sd=0x0016, driver="mlx5_core")
    t.driver("vfio-pci", "vfio_pci")
    return t


def vf(tree, override=None, driver="mlx5_core", module=None):
    tree.device(VF, 0x15B3, 0x101E, sv=0x15B3, sd=0x0016, driver=driver, module=module,
                override=override, physfn="0000:3b:00.0")


def owner(tree, state=None):
    root = Root(tree.root)
    sysfs = Sysfs(root)
    return override_owner(sysfs, state or {}, read_device(sysfs, VF))


def plan_of(tree, capsys, address=VF) -> dict:
    code, out, err = tree.run(capsys, "plan", "--json")
    assert code == 0, err
    return next(d for d in json.loads(out) if d["address"] == address)


# -- who set it ----------------------------------------------------------------------

def test_no_override_has_no_owner(tree):
    vf(tree)
    assert owner(tree) is None


def test_driverctl_is_known_by_its_saved_file(tree):
    # `driverctl --noprobe set-override`: the override is set, the device
    # stays where it was.
    vf(tree, override="vfio-pci")
    tree.file(f"etc/driverctl.d/pci-{VF}", "vfio-pci\n")
    assert owner(tree) == DRIVERCTL == "driverctl"


def test_any_other_override_is_another_tools(tree):
    vf(tree, override="vfio-pci", driver="vfio-pci", module="vfio_pci")
    assert owner(tree) == UNKNOWN == "another tool (libvirt?)"


def test_ours_only_while_it_says_what_we_wrote(tree):
    vf(tree, override="mlx5_vfio_pci", driver="mlx5_vfio_pci")
    assert owner(tree, {VF: {"override": "mlx5_vfio_pci"}}) == OURS
    # Someone rewrote it since: no longer ours.
    assert owner(tree, {VF: {"override": "vfio-pci"}}) == UNKNOWN


# -- plan, explain, apply ------------------------------------------------------------

def test_plan_leaves_a_driverctl_device_alone(tree, capsys):
    vf(tree, override="vfio-pci")
    tree.file(f"etc/driverctl.d/pci-{VF}", "vfio-pci\n")
    tree.file(POLICY, rules())
    d = plan_of(tree, capsys)
    assert (d["rule"], d["override_owner"], d["module"], d["action"], d["reason"]) == (
        "connectx-vfs", "driverctl", None, "none",
        "driver_override 'vfio-pci' was set by driverctl; leaving it alone "
        "('takeover: true' takes it)")


def test_takeover_lets_the_rule_have_it(tree, capsys):
    vf(tree, override="vfio-pci")
    tree.file(f"etc/driverctl.d/pci-{VF}", "vfio-pci\n")
    tree.file(POLICY, rules(takeover=True))
    d = plan_of(tree, capsys)
    assert (d["override_owner"], d["module"], d["action"]) == (
        "driverctl", "mlx5_vfio_pci", "bind")


def test_libvirt_device_is_left_alone_and_explain_names_the_owner(tree, capsys):
    vf(tree, override="vfio-pci", driver="vfio-pci", module="vfio_pci")
    tree.file(POLICY, rules())
    d = plan_of(tree, capsys)
    assert (d["override_owner"], d["action"]) == ("another tool (libvirt?)", "none")
    code, out, _ = tree.run(capsys, "explain", VF)
    assert code == 0
    lines = out.splitlines()
    assert "  driver_override set by: another tool (libvirt?)" in lines
    assert lines[-1] == ("decision: none: driver_override 'vfio-pci' was set by another tool "
                         "(libvirt?); leaving it alone ('takeover: true' takes it)")
    code, out, _ = tree.run(capsys, "explain", VF, "--json")
    j = json.loads(out)
    assert (j["override_owner"], j["action"]) == ("another tool (libvirt?)", "none")


def test_a_host_rule_does_not_release_another_tools_device(tree, capsys):
    vf(tree, override="vfio-pci", driver="vfio-pci", module="vfio_pci")
    tree.file(POLICY, rules(flavour="host"))
    assert plan_of(tree, capsys)["action"] == "none"
    tree.file(POLICY, rules(flavour="host", takeover=True))
    assert plan_of(tree, capsys)["action"] == "release"


def test_our_own_override_is_planned_normally(tree, capsys):
    vf(tree, override="vfio-pci", driver="vfio-pci", module="vfio_pci")
    tree.file(POLICY, rules())
    State(Root(tree.root)).update(VF, {"override": "vfio-pci", "driver": "vfio-pci"})
    d = plan_of(tree, capsys)
    assert (d["override_owner"], d["action"], d["module"]) == (
        "vfio-flavourd", "keep", "mlx5_vfio_pci")


def test_plan_names_the_owner_even_when_no_rule_claims_the_device(tree, capsys):
    vf(tree, override="vfio-pci")
    tree.file(f"etc/driverctl.d/pci-{VF}", "vfio-pci\n")
    d = plan_of(tree, capsys)
    assert (d["rule"], d["override_owner"], d["action"]) == (None, "driverctl", "none")


def test_apply_skips_what_plan_leaves_alone(tree, capsys):
    vf(tree, override="vfio-pci")
    tree.file(f"etc/driverctl.d/pci-{VF}", "vfio-pci\n")
    tree.file(POLICY, rules())
    code, out, _ = tree.run(capsys, "apply", "--dry-run", "--json", VF)
    (o,) = json.loads(out)
    assert (code, o["result"], o["message"]) == (
        0, "skipped", "driver_override 'vfio-pci' was set by driverctl; leaving it alone "
        "('takeover: true' takes it)")
    tree.file(POLICY, rules(takeover=True))
    code, out, _ = tree.run(capsys, "apply", "--dry-run", "--json", VF)
    (o,) = json.loads(out)
    assert (code, o["result"], o["module"]) == (0, "dry-run", "mlx5_vfio_pci")
