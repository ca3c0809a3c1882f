from vfio_flavourd.migrate import Migration
from vfio_flavourd.migrate.convert import MigratedRule
from vfio_flavourd.migrate.render import policy_text, rule_lines
from vfio_flavourd.migrate.sources import (DriverctlOverride, Found, IdsSetting, Origin,
                                           Problem)
from vfio_flavourd.migrate.verify import DeviceCheck
from vfio_flavourd.policy import ClassPrefix
from vfio_flavourd.policy_load import PolicyFile, load

DC = Origin("/etc/driverctl.d/pci-0000:3b:00.3", 1)
CMD = Origin("/proc/cmdline", 1)

VARIANT = MigratedRule("driverctl-0000:3b:00.3", "vfio", {"address": "0000:3b:00.3"}, [DC],
                       "driverctl: 0000:3b:00.3 -> mlx5_vfio_pci", "mlx5_vfio_pci as before",
                       prefer=("mlx5_vfio_pci",), fallback="vfio_pci")
BY_CLASS = MigratedRule("vfio-pci-ids-any:any:any:any:030000:ff0000", "vfio",
                        {"class": "03"}, [CMD, Origin("/etc/modprobe.d/vfio.conf", 2)],
                        "vfio-pci.ids= entry ffffffff:ffffffff:ffffffff:ffffffff:030000:ff0000",
                        "its best VFIO variant driver, else vfio_pci", fallback="vfio_pci")
HOST = MigratedRule("driverctl-0000:03:00.1", "host", {"address": "0000:03:00.1"},
                    [Origin("/etc/driverctl.d/pci-0000:03:00.1", 1)],
                    "driverctl: 0000:03:00.1 -> ixgbe", "left to driverctl")


def test_rule_lines():
    assert rule_lines(VARIANT) == [
        "  # driverctl: 0000:3b:00.3 -> mlx5_vfio_pci",
        "  #   from /etc/driverctl.d/pci-0000:3b:00.3:1",
        "  # now: mlx5_vfio_pci as before",
        '  - name: "driverctl-0000:3b:00.3"',
        '    description: "migrated from /etc/driverctl.d/pci-0000:3b:00.3:1"',
        "    match:",
        '      address: "0000:3b:00.3"',
        "    flavour: vfio",
        "    prefer: [mlx5_vfio_pci]",
        "    fallback: vfio_pci"]
    assert rule_lines(BY_CLASS)[7:] == ['      class: "03"', "    flavour: vfio",
                                        "    fallback: vfio_pci"]


def migration(tmp_path, rules, **kw):
    found = Found(
        [DriverctlOverride(DC, "0000:3b:00.3", "mlx5_vfio_pci"),
         IdsSetting("cmdline", CMD,
                    "vfio-pci.ids=ffffffff:ffffffff:ffffffff:ffffffff:030000:ff0000")],
        [Problem(CMD, "vfio-pci.ids: 'zzzz:1': vendor 'zzzz' is not a hex number; skipped")],
        [Problem(DC, "a note")])
    return Migration(kw.pop("root", "/"), found, rules, **kw)


def test_the_text_is_a_valid_policy_with_its_story_in_comments(tmp_path):
    m = migration(tmp_path, [HOST, VARIANT, BY_CLASS], steps=["do this", "then that"],
                  devices=[DeviceCheck("0000:3b:00.3", "15b3:101e", "driverctl bound it", "vfio",
                                       str(DC), VARIANT.name, "vfio", "mlx5_vfio_pci", "bind",
                                       "", True)])
    text = policy_text(m)
    path = tmp_path / "50-migrated.yaml"
    path.write_text(text)
    policy = load([PolicyFile(path, "test")])
    assert [(r.name, r.flavour) for r in policy.rules] == [
        ("driverctl-0000:03:00.1", "host"), ("driverctl-0000:3b:00.3", "vfio"),
        ("vfio-pci-ids-any:any:any:any:030000:ff0000", "vfio")]
    assert policy.rules[1].prefer == ("mlx5_vfio_pci",)
    assert policy.rules[2].match.class_ == (ClassPrefix(0x03, 2),)
    assert policy.rules[2].description == (
        "migrated from /proc/cmdline:1, /etc/modprobe.d/vfio.conf:2")
    lines = text.splitlines()
    assert lines[:14] == [
        "# vfio-flavourd policy migrated by `vfio-flavourd migrate` from this machine's",
        "# earlier VFIO configuration.",
        "#",
        "# Read:",
        "#   driverctl: 0000:3b:00.3 -> mlx5_vfio_pci   [/etc/driverctl.d/pci-0000:3b:00.3:1]",
        "#   kernel command line: vfio-pci.ids=ffffffff:ffffffff:ffffffff:ffffffff:030000:ff0000"
        "   [/proc/cmdline:1]",
        "#",
        "# Not migrated (fix these and run migrate again, or write rules by hand):",
        "#   /proc/cmdline:1: vfio-pci.ids: 'zzzz:1': vendor 'zzzz' is not a hex number; skipped",
        "#",
        "# Notes:",
        "#   /etc/driverctl.d/pci-0000:3b:00.3:1: a note",
        "#",
        "# Rules are tried in order and the first match wins.  driverctl's"]
    assert lines[-6:] == [
        "# The devices on this machine, once the old config is retired:",
        "#   0000:3b:00.3  15b3:101e  ok: driverctl bound it; now driverctl-0000:3b:00.3 -> "
        "mlx5_vfio_pci",
        "",
        "# To retire the old configuration:",
        "#   1. do this",
        "#   2. then that"]


def test_no_rules_is_still_a_valid_file(tmp_path):
    text = policy_text(migration(tmp_path, [], root="/srv/copy"))
    assert "# (read under the root /srv/copy)" in text.splitlines()
    assert text.endswith("version: 1\nrules: []\n")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    assert load([PolicyFile(path, "test")]).rules == []
