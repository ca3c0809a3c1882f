"""`vfio-flavourd migrate` end to end on small machines, and the round trip:
the migrated policy, fed back to `plan`, claims the devices the old config
claimed, each now with its best VFIO driver."""

import json
import os
import shutil

import pytest
import yaml

from vfio_flavourd.commands.migrate import NOTHING

from tiny_sysfs import small_server

MIGRATED = "etc/vfio-flavourd/policy.d/50-migrated.yaml"


@pytest.fixture
def host(tmp_path):
    t = small_server(tmp_path)
    t.device("0000:00:04.0", 0x1AF4, 0x1041, sv=0x1AF4, sd=0x1100, driver="virtio-pci",
             module="virtio_pci")
    return t


def plan(host, capsys) -> dict:
    code, out, err = host.run(capsys, "plan", "--json")
    assert code == 0, err
    return {d["address"]: d for d in json.loads(out)}


def claimed(p: dict) -> dict:
    return {a: (d["rule"], d["module"], d["action"]) for a, d in p.items() if d["rule"]}


def test_nothing_to_migrate(host, capsys):
    assert host.run(capsys, "migrate") == (0, NOTHING + "\n", "")
    assert host.run(capsys, "migrate", "--write") == (0, NOTHING + "\n", "")
    assert not (host.root / MIGRATED).exists()
    code, out, _ = host.run(capsys, "migrate", "--json")
    assert code == 0
    assert json.loads(out) == {"root": str(host.root), "sources": [], "rules": [],
                               "problems": [], "notes": [], "devices": [], "steps": [],
                               "policy": None, "written": None}


def test_notes_are_shown_when_there_is_nothing_to_migrate(host, capsys):
    host.file("etc/modprobe.d/vfio.conf", "install vfio-pci /usr/local/sbin/vfio.sh\n")
    code, out, err = host.run(capsys, "migrate")
    assert (code, err) == (0, "")
    assert out == (NOTHING + "\nnote: /etc/modprobe.d/vfio.conf:1: 'install vfio-pci "
                   "/usr/local/sbin/vfio.sh' runs a command of its own when vfio-pci loads; "
                   "vfio-flavourd cannot translate it: read it, and write rules for the devices "
                   "it claims (match: address) by hand\n")


# -- the round trip, one source at a time, then all together ------------------------

SOURCES = {
    "driverctl": (
        {"etc/driverctl.d/pci-0000:3b:00.2": "vfio-pci\n",
         "etc/driverctl.d/pci-0000:3b:00.3": "mlx5_vfio_pci\n"},
        {"0000:3b:00.2": ("driverctl-0000:3b:00.2", "mlx5_vfio_pci", "bind"),
         "0000:3b:00.3": ("driverctl-0000:3b:00.3", "mlx5_vfio_pci", "bind")}),
    "cmdline": (
        {"proc/cmdline": "BOOT_IMAGE=/vmlinuz ro intel_iommu=on "
                         "vfio-pci.ids=10de:1b80,10de:10f0\n"},
        {"0000:65:00.0": ("vfio-pci-ids-10de:1b80", "vfio_pci", "bind"),
         "0000:65:00.1": ("vfio-pci-ids-10de:10f0", "vfio_pci", "bind")}),
    "modprobe": (
        {"etc/modprobe.d/vfio.conf": "options vfio-pci ids=15b3:101e,1af4:1041\n"
                                     "softdep mlx5_core pre: vfio-pci\n"},
        {"0000:3b:00.2": ("vfio-pci-ids-15b3:101e", "mlx5_vfio_pci", "bind"),
         "0000:3b:00.3": ("vfio-pci-ids-15b3:101e", "mlx5_vfio_pci", "bind"),
         "0000:00:04.0": ("vfio-pci-ids-1af4:1041", "virtio_vfio_pci", "bind")}),
}


@pytest.mark.parametrize("which", [["driverctl"], ["cmdline"], ["modprobe"],
                                   ["cmdline", "modprobe"]])
def test_round_trip_claims_the_same_devices_with_their_best_variant(host, capsys, which):
    want = {}
    for name in which:
        files, claims = SOURCES[name]
        for rel, text in files.items():
            host.file(rel, text)
        want.update(claims)
    code, out, err = host.run(capsys, "migrate", "--write")
    assert code == 0, err
    assert out.startswith(f"wrote {host.root / MIGRATED}: found ")
    # Old config retired: driverctl's files go, and nothing else changes the
    # devices, which sit on their host drivers as after a reboot.
    shutil.rmtree(host.root / "etc/driverctl.d", ignore_errors=True)
    assert claimed(plan(host, capsys)) == want


def test_driverctl_pin_to_a_host_driver_round_trips_as_host(host, capsys):
    host.driverctl("0000:03:00.1", "ixgbe")
    host.file("proc/cmdline", "ro vfio-pci.ids=8086:10fb\n")
    assert host.run(capsys, "migrate", "--write")[0] == 0
    p = plan(host, capsys)
    assert claimed(p) == {
        "0000:03:00.0": ("vfio-pci-ids-8086:10fb", "vfio_pci", "bind"),
        "0000:03:00.1": ("driverctl-0000:03:00.1", None, "none")}
    assert (p["0000:03:00.1"]["flavour"], p["0000:03:00.1"]["override_owner"]) == (
        "host", "driverctl")


# -- the live machine, before and after retiring driverctl -------------------------

def test_live_machine_coexists_until_driverctl_is_retired(host, capsys):
    host.device("0000:3b:00.2", 0x15B3, 0x101E, sv=0x15B3, sd=0x0016, driver="vfio-pci",
                module="vfio_pci", physfn="0000:3b:00.0")
    os.unlink(host.root / "sys/devices/pci0000:00/0000:3b:00.2/driver")
    os.symlink("../../../bus/pci/drivers/vfio-pci",
               host.root / "sys/devices/pci0000:00/0000:3b:00.2/driver")
    host.driverctl("0000:3b:00.2", "vfio-pci")
    assert host.run(capsys, "migrate", "--write")[0] == 0
    d = plan(host, capsys)["0000:3b:00.2"]
    assert (d["override_owner"], d["action"], d["reason"]) == (
        "driverctl", "none", "driver_override 'vfio-pci' was set by driverctl; leaving it "
        "alone ('takeover: true' takes it)")
    # What `driverctl --noprobe unset-override 0000:3b:00.2` does: forget the
    # file, clear the override, unbind.
    os.unlink(host.root / "etc/driverctl.d/pci-0000:3b:00.2")
    host.file("sys/devices/pci0000:00/0000:3b:00.2/driver_override", "(null)\n")
    os.unlink(host.root / "sys/devices/pci0000:00/0000:3b:00.2/driver")
    d = plan(host, capsys)["0000:3b:00.2"]
    assert (d["override_owner"], d["module"], d["action"]) == (None, "mlx5_vfio_pci", "bind")


# -- output modes ------------------------------------------------------------------

def test_text_mode_prints_the_policy_and_a_summary(host, capsys):
    host.file("etc/driverctl.d/pci-0000:3b:00.2", "vfio-pci\n")
    host.file("proc/cmdline", "ro vfio-pci.ids=zzzz:1,10de:1b80\n")
    code, out, err = host.run(capsys, "migrate")
    assert code == 0
    doc = yaml.safe_load(out)
    assert doc["version"] == 1
    assert [r["name"] for r in doc["rules"]] == ["driverctl-0000:3b:00.2",
                                                 "vfio-pci-ids-10de:1b80"]
    assert "#   /proc/cmdline:1: vfio-pci.ids: 'zzzz:1': vendor 'zzzz' is not a hex number; " \
           "skipped" in out.splitlines()
    assert err == ("vfio-flavourd: found 2 old settings, made 2 rules; 1 problem; nothing "
                   f"written (--write puts it in /{MIGRATED})\n")
    assert not (host.root / MIGRATED).exists()


def test_write_refuses_to_overwrite(host, capsys):
    host.file("proc/cmdline", "ro vfio-pci.ids=10de:1b80\n")
    assert host.run(capsys, "migrate", "--write")[0] == 0
    before = (host.root / MIGRATED).read_text()
    path = host.root / MIGRATED
    assert host.run(capsys, "migrate", "--write") == (1, "", (
        f"vfio-flavourd: error: {path} already exists; not overwriting it (move it away "
        f"first, or compare: vfio-flavourd --root {host.root} migrate | diff -u {path} -)\n"))
    assert path.read_text() == before
    # Run again without --write: the earlier migrated file does not make the
    # rule names look taken.
    code, out, _ = host.run(capsys, "migrate")
    assert [r["name"] for r in yaml.safe_load(out)["rules"]] == ["vfio-pci-ids-10de:1b80"]


def test_write_output_lists_problems_notes_and_steps(host, capsys):
    host.file("etc/modprobe.d/vfio.conf", "options vfio-pci ids=10de:1b80,10de:qq\n")
    code, out, _ = host.run(capsys, "migrate", "--write")
    assert code == 0
    assert out == (
        f"wrote {host.root / MIGRATED}: found 1 old setting, made 1 rule; 1 problem\n"
        "\nnot migrated:\n"
        "  /etc/modprobe.d/vfio.conf:1: ids: '10de:qq': device 'qq' is not a hex number; "
        "skipped\n"
        "\nto retire the old configuration:\n"
        "  1. vfio-flavourd check-config && vfio-flavourd plan   # see what it will do\n"
        "  2. edit /etc/modprobe.d/vfio.conf: delete line 1 (options vfio-pci "
        "ids=10de:1b80,10de:qq)\n"
        "  3. update-initramfs -u -k all   # the initramfs keeps its own copy of modprobe.d "
        "(Fedora/RHEL: dracut -f --regenerate-all)\n"
        "  4. reboot, then check: vfio-flavourd status\n")


def test_json(host, capsys):
    host.driverctl("0000:3b:00.2", "vfio-pci")
    host.file("etc/modprobe.d/vfio.conf", "softdep nouveau pre: vfio-pci\n"
              "options vfio-pci ids=10de:1b80 disable_vga=1\n")
    code, out, err = host.run(capsys, "migrate", "--json")
    assert (code, err) == (0, "")
    j = json.loads(out)
    assert j["sources"] == [
        {"kind": "driverctl", "origin": "/etc/driverctl.d/pci-0000:3b:00.2:1",
         "text": "0000:3b:00.2 -> vfio-pci", "address": "0000:3b:00.2", "driver": "vfio-pci"},
        {"kind": "softdep", "origin": "/etc/modprobe.d/vfio.conf:1",
         "text": "softdep nouveau pre: vfio-pci", "module": "nouveau"},
        {"kind": "modprobe", "origin": "/etc/modprobe.d/vfio.conf:2",
         "text": "options vfio-pci ids=10de:1b80 disable_vga=1", "ids": ["10de:1b80"],
         "other_options": ["disable_vga=1"]}]
    assert j["rules"][0] == {
        "name": "driverctl-0000:3b:00.2", "flavour": "vfio", "match": {"address": "0000:3b:00.2"},
        "prefer": [], "fallback": "vfio_pci", "sources": ["/etc/driverctl.d/pci-0000:3b:00.2:1"],
        "summary": "driverctl: 0000:3b:00.2 -> vfio-pci",
        "now": "its best VFIO variant driver, else vfio_pci"}
    assert [(d["address"], d["ok"], d["module"]) for d in j["devices"]] == [
        ("0000:3b:00.2", True, "mlx5_vfio_pci"), ("0000:65:00.0", True, "vfio_pci")]
    assert j["problems"] == [] and j["written"] is None
    assert yaml.safe_load(j["policy"])["version"] == 1
    assert j["steps"][2] == ("driverctl --noprobe unset-override 0000:3b:00.2   # forgets the "
                             "override and unbinds the device: shut down any VM using it first")
    assert "edit /etc/modprobe.d/vfio.conf: delete line 1 (softdep nouveau pre: vfio-pci); on " \
           "line 2, remove ids=10de:1b80 and keep disable_vga=1" in j["steps"]


def test_only_broken_config_exits_1(host, capsys):
    host.file("proc/cmdline", "ro vfio-pci.ids=zzzz:1\n")
    code, out, err = host.run(capsys, "migrate")
    assert code == 1
    assert "rules: []" in out
    assert err == "vfio-flavourd: found 1 old setting, migrated none of them; 1 problem\n"


def test_softdep_alone_is_migrated_by_retiring_it(host, capsys):
    host.file("etc/modprobe.d/vfio.conf", "softdep nouveau pre: vfio-pci\n")
    code, out, err = host.run(capsys, "migrate", "--write")
    assert code == 0
    assert not (host.root / MIGRATED).exists()
    assert out.startswith("nothing written: found 1 old setting, made 0 rules\n")
    assert "  1. edit /etc/modprobe.d/vfio.conf: delete line 1 (softdep nouveau pre: vfio-pci)\n" \
        in out


def test_names_taken_by_the_installed_policy_are_avoided(host, capsys):
    host.file("etc/vfio-flavourd/policy.d/10-site.yaml", "version: 1\nrules:\n"
              "  - {name: vfio-pci-ids-10de:1b80, match: {vendor: 0x10de}, flavour: vfio}\n")
    host.file("proc/cmdline", "ro vfio-pci.ids=10de:1b80\n")
    code, out, _ = host.run(capsys, "migrate", "--write")
    assert code == 0
    assert [r["name"] for r in yaml.safe_load((host.root / MIGRATED).read_text())["rules"]] \
        == ["vfio-pci-ids-10de:1b80-2"]
    assert host.run(capsys, "check-config")[0] == 0
