import pytest

from vfio_flavourd.context import Context
from vfio_flavourd.errors import PolicyError
from vfio_flavourd.migrate.convert import OldClaim
from vfio_flavourd.migrate.ids import parse_id
from vfio_flavourd.migrate.sources import Origin
from vfio_flavourd.migrate.verify import check
from vfio_flavourd.root import Root

from tiny_sysfs import Tree

DC = Origin("/etc/driverctl.d/pci-0000:3b:00.2", 1)
CMD = Origin("/proc/cmdline", 1)

MIGRATED = """\
version: 1
rules:
  - name: driverctl-0000:3b:00.2
    match: {address: "0000:3b:00.2"}
    flavour: vfio
    fallback: vfio_pci
  - name: vfio-pci-ids-8086:2030
    match: {vendor: 0x8086, device: 0x2030}
    flavour: vfio
"""
NAMES = {"driverctl-0000:3b:00.2", "vfio-pci-ids-8086:2030"}


@pytest.fixture
def tree(tmp_path):
    t = Tree(tmp_path)
    t.device("0000:3b:00.0", 0x15B3, 0x101D, driver="mlx5_core")
    t.device("0000:3b:00.2", 0x15B3, 0x101E, driver="vfio-pci", module="vfio_pci",
             physfn="0000:3b:00.0")
    t.driverctl("0000:3b:00.2", "vfio-pci")
    t.device("0000:00:1c.0", 0x8086, 0x2030, class_code=0x060400, driver="pcieport")
    return t


def ctx_of(tree, policy_paths=None):
    return Context(Root(tree.root), policy_paths=policy_paths)


CLAIMS = [OldClaim("vfio", "driverctl bound it to vfio-pci", DC, address="0000:3b:00.2"),
          OldClaim("vfio", "vfio-pci claimed it by id", CMD, spec=parse_id("8086:2030"))]


def test_each_claimed_device_is_judged_without_the_old_override(tree):
    checks, problems, note = check(ctx_of(tree), MIGRATED, CLAIMS, NAMES)
    assert note is None
    vf = checks[1]
    assert (vf.address, vf.ok, vf.rule, vf.module, vf.action) == (
        "0000:3b:00.2", True, "driverctl-0000:3b:00.2", "mlx5_vfio_pci", "keep")
    # A bridge claimed by id: vfio-pci's probe would not have taken it either,
    # but the difference is shown, not hidden.
    bridge = checks[0]
    assert (bridge.address, bridge.ok) == ("0000:00:1c.0", False)
    assert [str(p) for p in problems] == [
        "/proc/cmdline:1: 0000:00:1c.0 (8086:2030): the old config gave it to VFIO (vfio-pci "
        "claimed it by id), but under the new policy rule vfio-pci-ids-8086:2030 decides: "
        "bridges are never bound to vfio"]


def test_an_installed_rule_that_claims_first_is_a_mismatch(tree):
    site = tree.file("etc/vfio-flavourd/policy.d/10-site.yaml", """\
        version: 1
        rules:
          - name: mellanox-stays-host
            match: {vendor: 0x15b3}
            flavour: host
        """)
    tree.file("etc/vfio-flavourd/policy.d/50-migrated.yaml", "version: 1\nrules:\n"
              "  - {name: old, match: {vendor: 0x15b3}, flavour: ignore}\n")
    checks, problems, note = check(ctx_of(tree), MIGRATED, CLAIMS[:1], NAMES)
    assert [(c.address, c.ok, c.rule, c.flavour) for c in checks if c.old] == [
        ("0000:3b:00.2", False, "mellanox-stays-host", "host")]
    assert [str(p) for p in problems if "3b:00.2" in str(p)] == [
        f"/etc/driverctl.d/pci-0000:3b:00.2:1: 0000:3b:00.2 (15b3:101e): the old config gave "
        f"it to VFIO (driverctl bound it to vfio-pci), but under the new policy rule "
        f"mellanox-stays-host ({site}:3) claims it first, with flavour host"]


def test_policy_given_on_the_command_line_is_used(tree, tmp_path):
    other = tree.file("elsewhere.yaml", "version: 1\nrules:\n"
                      "  - {name: nothing-for-vfs, match: {virtfn: true}, flavour: ignore}\n")
    checks, problems, _ = check(ctx_of(tree, [str(other)]), MIGRATED, CLAIMS[:1], NAMES)
    assert [(c.rule, c.ok) for c in checks if c.old] == [("nothing-for-vfs", False)]


def test_a_broken_installed_policy_is_noted_and_ours_checked_alone(tree):
    tree.file("etc/vfio-flavourd/policy.d/10-site.yaml", "version: 2\n")
    checks, problems, note = check(ctx_of(tree), MIGRATED, CLAIMS[:1], NAMES)
    assert str(note) == ("/etc/vfio-flavourd/policy.d: the installed policy has 1 problem(s) "
                         "(see vfio-flavourd check-config); the migrated rules were checked "
                         "on their own")
    assert [(c.rule, c.ok) for c in checks if c.old] == [("driverctl-0000:3b:00.2", True)]


def test_a_rule_claiming_what_the_old_config_did_not_is_reported(tree):
    checks, problems, _ = check(ctx_of(tree), MIGRATED, [], NAMES)
    assert [str(p) for p in problems] == [
        "/etc/vfio-flavourd/policy.d/50-migrated.yaml: 0000:00:1c.0 (8086:2030): rule "
        "vfio-pci-ids-8086:2030 claims it, but the old config did not",
        "/etc/vfio-flavourd/policy.d/50-migrated.yaml: 0000:3b:00.2 (15b3:101e): rule "
        "driverctl-0000:3b:00.2 claims it, but the old config did not"]


def test_an_invalid_migrated_text_is_an_internal_error(tree):
    with pytest.raises(PolicyError) as e:
        check(ctx_of(tree), "version: 1\nrules:\n  - name: x\n", [], set())
    assert str(e.value).startswith("internal error: the migrated policy does not validate: ")
