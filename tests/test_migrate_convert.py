import pytest

from vfio_flavourd.migrate.convert import Drivers, convert
from vfio_flavourd.migrate.ids import parse_id
from vfio_flavourd.migrate.sources import (DriverctlOverride, Found, IdsSetting, Origin,
                                           Softdep)
from vfio_flavourd.root import Root
from vfio_flavourd.sysfs import Sysfs

from conftest import make_device
from tiny_sysfs import RELEASE, Tree


@pytest.fixture
def drivers(tmp_path, real_index):
    t = Tree(tmp_path)
    t.driver("ixgbe", "ixgbe").driver("vfio-pci", "vfio_pci").driver("pci-stub", "pci_stub")
    t.file(f"lib/modules/{RELEASE}/modules.dep",
           "kernel/drivers/net/ethernet/intel/igb/igb.ko.xz: kernel/drivers/dca/dca.ko.xz\n")
    t.file(f"lib/modules/{RELEASE}/modules.builtin", "kernel/drivers/nvme/host/nvme.ko\n")
    root = Root(tmp_path)
    return Drivers(Sysfs(root), root.modules_dir(), real_index)


def dc(address, driver):
    return DriverctlOverride(Origin(f"/etc/driverctl.d/pci-{address}", 1), address, driver)


def ids(kind, where, *entries, line=1):
    option = ("vfio-pci.ids=" if kind == "cmdline" else "ids=") + ",".join(entries)
    return IdsSetting(kind, Origin(where, line), option, "",
                      tuple(parse_id(e) for e in entries))


def rules_of(conv):
    return [(r.name, r.flavour, r.match, r.prefer, r.fallback) for r in conv.rules]


def test_drivers_know_names_from_sysfs_modules_and_aliases(drivers):
    assert drivers.module_of("ixgbe") == "ixgbe"
    assert drivers.module_of("vfio-pci") == "vfio_pci"
    assert drivers.module_of("vfio_pci") == "vfio_pci"
    assert drivers.module_of("mlx5_vfio_pci") == "mlx5_vfio_pci"   # from modules.alias
    assert drivers.module_of("igb") == "igb"                        # modules.dep
    assert drivers.module_of("nvme") == "nvme"                      # modules.builtin
    assert drivers.module_of("igb_uoi") is None


def test_driverctl_vfio_pci_becomes_best_variant_with_catch_all_fallback(drivers):
    found = Found([dc("0000:3b:00.2", "vfio-pci")])
    conv = convert(found, drivers)
    assert rules_of(conv) == [("driverctl-0000:3b:00.2", "vfio", {"address": "0000:3b:00.2"},
                               (), "vfio_pci")]
    assert conv.rules[0].now == "its best VFIO variant driver, else vfio_pci"
    assert found.problems == [] and found.notes == []
    (claim,) = conv.claims
    assert (claim.flavour, claim.what) == ("vfio", "driverctl bound it to vfio-pci")
    assert claim.matches(make_device(address="0000:3b:00.2"))
    assert not claim.matches(make_device(address="0000:3b:00.3"))


def test_driverctl_variant_is_preferred(drivers):
    conv = convert(Found([dc("0000:3b:00.3", "mlx5_vfio_pci")]), drivers)
    assert rules_of(conv) == [("driverctl-0000:3b:00.3", "vfio", {"address": "0000:3b:00.3"},
                               ("mlx5_vfio_pci",), "vfio_pci")]


def test_driverctl_naming_the_module_not_the_driver(drivers):
    found = Found([dc("0000:3b:00.2", "vfio_pci")])
    conv = convert(found, drivers)
    assert rules_of(conv)[0][1:] == ("vfio", {"address": "0000:3b:00.2"}, (), "vfio_pci")
    assert [str(n) for n in found.notes] == [
        "/etc/driverctl.d/pci-0000:3b:00.2:1: the override names 'vfio_pci', but the driver "
        "is called 'vfio-pci': the kernel binds no driver to an override naming another, so "
        "0000:3b:00.2 has been left without one; the rule gives it to VFIO as intended"]


def test_driverctl_host_driver_becomes_host_rule_and_stays_with_driverctl(drivers):
    found = Found([dc("0000:03:00.1", "ixgbe")])
    conv = convert(found, drivers)
    assert rules_of(conv) == [("driverctl-0000:03:00.1", "host", {"address": "0000:03:00.1"},
                               (), None)]
    assert [str(n) for n in found.notes] == [
        "/etc/driverctl.d/pci-0000:03:00.1:1: keep driverctl's override of 0000:03:00.1 to "
        "ixgbe: vfio-flavourd does not choose among host drivers; its 'host' rule keeps vfio "
        "rules off the device"]
    assert conv.claims[0].flavour == "host"


def test_driverctl_none_and_pci_stub_become_ignore(drivers):
    found = Found([dc("0000:01:00.0", "none"), dc("0000:01:00.1", "pci-stub")])
    conv = convert(found, drivers)
    assert [(r.name, r.flavour) for r in conv.rules] == [
        ("driverctl-0000:01:00.0", "ignore"), ("driverctl-0000:01:00.1", "ignore")]
    assert [str(n) for n in found.notes] == [
        "/etc/driverctl.d/pci-0000:01:00.0:1: driverctl keeps 0000:01:00.0 without any driver "
        "('none'); vfio-flavourd has no such flavour, so keep driverctl's override; the rule "
        "says 'ignore' so vfio-flavourd never touches the device",
        "/etc/driverctl.d/pci-0000:01:00.1:1: driverctl parks 0000:01:00.1 on pci-stub; keep "
        "driverctl's override (the rule says 'ignore'); if the device is meant for a VM, make "
        "the rule 'flavour: vfio' and retire the override"]


def test_driverctl_unknown_driver_is_a_problem(drivers):
    found = Found([dc("0000:03:00.0", "igb_uoi")])
    conv = convert(found, drivers)
    assert conv.rules == [] and conv.claims == []
    assert [str(p) for p in found.problems] == [
        "/etc/driverctl.d/pci-0000:03:00.0:1: unknown driver 'igb_uoi': no PCI driver or "
        "kernel module of that name on this machine; skipped"]


def test_driverctl_rules_come_first_in_address_order(drivers):
    found = Found([ids("cmdline", "/proc/cmdline", "15b3:101e"),
                   dc("0000:3b:00.3", "vfio-pci"), dc("0000:3b:00.2", "vfio-pci")])
    assert [r.name for r in convert(found, drivers).rules] == [
        "driverctl-0000:3b:00.2", "driverctl-0000:3b:00.3", "vfio-pci-ids-15b3:101e"]


def test_same_id_in_several_places_is_one_rule_citing_all(drivers):
    found = Found([ids("cmdline", "/proc/cmdline", "10de:1b80", "10de:10f0"),
                   ids("modprobe", "/etc/modprobe.d/vfio.conf", "0x10DE:1B80", line=2)])
    conv = convert(found, drivers)
    assert rules_of(conv) == [
        ("vfio-pci-ids-10de:1b80", "vfio", {"vendor": "0x10de", "device": "0x1b80"}, (),
         "vfio_pci"),
        ("vfio-pci-ids-10de:10f0", "vfio", {"vendor": "0x10de", "device": "0x10f0"}, (),
         "vfio_pci")]
    assert [str(o) for o in conv.rules[0].origins] == [
        "/proc/cmdline:1", "/etc/modprobe.d/vfio.conf:2"]
    assert conv.rules[0].summary == "vfio-pci.ids= entry 10de:1b80"
    assert [str(n) for n in found.notes] == [
        "/etc/modprobe.d/vfio.conf:2: vfio-pci takes one ids= value; with several "
        "(/proc/cmdline:1, /etc/modprobe.d/vfio.conf:2) the kernel used only the last one it "
        "was given, so the old config may not have claimed all of these devices; the "
        "migrated policy claims them all"]
    assert len(conv.claims) == 3


def test_names_already_in_the_policy_are_not_reused(drivers):
    found = Found([dc("0000:3b:00.2", "vfio-pci"), ids("cmdline", "/proc/cmdline", "10de:1b80")])
    conv = convert(found, drivers, taken={"driverctl-0000:3b:00.2", "vfio-pci-ids-10de:1b80",
                                          "vfio-pci-ids-10de:1b80-2"})
    assert [r.name for r in conv.rules] == ["driverctl-0000:3b:00.2-2", "vfio-pci-ids-10de:1b80-3"]


def test_softdep_needs_no_rule(drivers):
    found = Found([Softdep(Origin("/etc/modprobe.d/vfio.conf", 3), "nouveau",
                           "softdep nouveau pre: vfio-pci")])
    conv = convert(found, drivers)
    assert conv.rules == []
    assert [str(n) for n in found.notes] == [
        "/etc/modprobe.d/vfio.conf:3: softdep ... pre: vfio-pci only orders module loading; "
        "with no vfio-pci ids= anywhere it claimed no device"]
