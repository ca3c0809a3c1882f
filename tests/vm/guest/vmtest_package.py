"""Scenario 8: the Debian package installs and works in the guest.

The host built the .deb from this checkout (tests/vm/debs.py); the
session fixture `installed_package` (vm_plugin.py) installs it with
`dpkg -i` into the guest's overlay. Everything here runs the INSTALLED
files: /usr/sbin/vfio-flavourd under Debian's python3 with the package in
/usr/lib/python3/dist-packages, the unit's Exec lines, the udev rule in
/lib/udev/rules.d and its callout. Never the checkout or the venv.
"""

import json
import os
import signal
import subprocess
import time

import pytest

import vmguest as g
import vmpkg
from vmtest_scenarios import (POLICY, START, addrs, all_bound_as_policy_says,  # noqa: F401
                              assert_viable, clean_slate)

DIST = "/usr/lib/python3/dist-packages"
VENDOR_POLICY = "/usr/lib/vfio-flavourd/policy.d/10-defaults.yaml"
ADMIN_POLICY = "/etc/vfio-flavourd/policy.d/50-local.yaml"
VM_POLICY = os.path.join(vmpkg.ETC_POLICY, "60-vm-test.yaml")


@pytest.fixture
def etc_policy(installed_package):
    """The scenarios' policy as an administrator would install it: a file
    in /etc/vfio-flavourd/policy.d, read by default (no --policy)."""
    with open(VM_POLICY, "w") as f:
        f.write(POLICY)
    yield VM_POLICY
    os.unlink(VM_POLICY)


def installed_daemon(slate):
    return vmpkg.start_unit(lambda argv, env, pre: slate.daemon(argv=argv, env=env,
                                                                preexec_fn=pre))


def wait_ready(notify, t0, timeout=60):
    t = g.wait_for(notify.ready_at, timeout=timeout, what="READY=1 on NOTIFY_SOCKET")
    return t - t0


def test_scenario_8_package_installs_in_the_guest(installed_package):
    info = installed_package
    assert vmpkg.dpkg_status(vmpkg.PKG).startswith("install ok installed "), info["dpkg_output"]
    for path in (vmpkg.SBIN, vmpkg.CALLOUT, vmpkg.UNIT, vmpkg.RULE, VENDOR_POLICY, ADMIN_POLICY):
        assert os.path.exists(path), f"{path} missing after dpkg -i"
    for path in (vmpkg.SBIN, vmpkg.CALLOUT):
        with open(path) as f:
            assert f.readline().startswith("#!/usr/bin/python3"), path
    # The installed command imports the installed package, not the checkout.
    res = subprocess.run(["/usr/bin/python3", "-I", "-c",
                          "import vfio_flavourd; print(vfio_flavourd.__file__)"],
                         stdout=subprocess.PIPE, text=True, cwd="/", env=vmpkg.SERVICE_ENV,
                         check=True)
    assert res.stdout.strip() == f"{DIST}/vfio_flavourd/__init__.py"
    # The maintainer scripts ran: py3compile, and deb-systemd-helper enabled
    # the unit (no start: /run/systemd/system does not exist here).
    assert os.path.isdir(f"{DIST}/vfio_flavourd/__pycache__")
    assert os.path.islink("/etc/systemd/system/multi-user.target.wants/vfio-flavourd.service")
    # All of it went into the overlay over the host's root.
    with open("/proc/mounts") as f:
        (root,) = [line.split() for line in f if line.split()[1] == "/"]
    assert root[2] == "overlay" and "upperdir=/mnt/rw/upper" in root[3], root


def test_scenario_8_installed_check_config_and_plan(clean_slate, etc_policy):
    a = addrs()
    before = {p: g.driver(x) for p, x in a.items()}
    res = vmpkg.run_installed("check-config")
    # The layers it reads by default: the vendor's, the package's admin
    # file and ours.
    for path in (VENDOR_POLICY, ADMIN_POLICY, etc_policy):
        assert f"  {path}: ok" in res.stdout, res.stdout
    rows = {r["address"]: r for r in json.loads(vmpkg.run_installed("plan", "--json").stdout)}
    e1000e, vnet1, vnet2 = rows[a["rp1"]], rows[a["rp2"]], rows[a["rp3"]]
    assert (e1000e["rule"], e1000e["module"], e1000e["action"]) == ("nics", "vfio_pci", "bind")
    assert (vnet1["rule"], vnet1["module"], vnet1["action"]) == \
        ("virtio-nets", "virtio_vfio_pci", "bind")
    assert vnet2["rule"] is None and vnet2["action"] != "bind"
    # Planning changes nothing.
    assert {p: g.driver(x) for p, x in a.items()} == before
    # A broken file in /etc: check-config says so and exits non-zero.
    broken = os.path.join(vmpkg.ETC_POLICY, "61-broken.yaml")
    with open(broken, "w") as f:
        f.write("version: 1\nrules:\n  - name: x\n    match: {vendor: 0x8086}\n"
                "    flavour: purple\n")
    try:
        res = vmpkg.run_installed("check-config", check=False)
        assert res.returncode != 0 and "61-broken.yaml" in res.stdout + res.stderr, res
    finally:
        os.unlink(broken)


def test_scenario_8_installed_daemon_from_its_unit(clean_slate, etc_policy):
    """No udevd: the daemon from the unit's ExecStart follows kernel events,
    binds by the /etc policy, says READY=1, and stops on SIGTERM."""
    assert not udevd_running()
    a = addrs()
    t0 = time.monotonic()
    d, notify, unit = installed_daemon(clean_slate)
    try:
        assert unit["ExecStart"] == [f"{vmpkg.SBIN} daemon"]
        ready = wait_ready(notify, t0)
        g.record_timing("package: unit start to READY=1 (coldplug)", ready)
        g.wait_for(lambda: all_bound_as_policy_says(a), timeout=START, what="coldplug bindings")
        for port in ("rp1", "rp2"):
            assert_viable(a[port])
        assert g.driver_override(a["rp3"]) is None
        assert "listening on kernel events" in d.text(), d.text()
        assert d.stop() == 0, d.text()
    finally:
        notify.close()


def udevd_running():
    return subprocess.run(["pgrep", "-x", "systemd-udevd"], stdout=subprocess.DEVNULL).returncode == 0


class Udevd:
    """systemd-udevd from the unpacked udev layer, in the foreground, its
    output (errors of rule programs included) in the share."""

    def __init__(self, log_name):
        self.log_path = os.path.join(g.SHARE, log_name)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(["/lib/systemd/systemd-udevd"], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=vmpkg.SERVICE_ENV)
        g.wait_for(lambda: subprocess.run(["udevadm", "control", "--ping"],
                                          stderr=subprocess.DEVNULL).returncode == 0,
                   timeout=30, what="udevd answering")

    def stop(self):
        subprocess.run(["udevadm", "control", "--exit"], timeout=60)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.log.close()

    def text(self):
        with open(self.log_path) as f:
            return f.read()


@pytest.fixture
def udevd():
    u = Udevd("udevd-8.log")
    yield u
    u.stop()


def test_scenario_8_installed_udev_rule_and_callout(clean_slate, etc_policy, udevd):
    """udevd with the INSTALLED rule (/lib/udev/rules.d) and callout
    (/usr/libexec/...): an add event for the e1000e, with neither e1000e nor
    vfio loaded (as at boot), leaves driver_override=vfio-pci, e1000e loaded
    by 80-drivers.rules but not bound; the installed daemon, started from
    its unit with udevd running, follows udev events and binds it."""
    a = addrs()
    e1000e = a["rp1"]
    g.unbind(e1000e)
    subprocess.run(["modprobe", "-r", "e1000e", "virtio_vfio_pci", "vfio_pci"], check=True)
    assert g.driver(e1000e) is None and not os.path.exists("/sys/module/vfio_pci")
    t0 = time.monotonic()
    subprocess.run(["udevadm", "trigger", "--action=add", g.dev_path(e1000e)], check=True)
    subprocess.run(["udevadm", "settle", "--timeout=60"], check=True)
    g.record_timing("package: udev add event handled (callout, settle)", time.monotonic() - t0)
    props = dict(line.split("=", 1) for line in subprocess.run(
        ["udevadm", "info", "--query=property", g.dev_path(e1000e)],
        stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines() if "=" in line)
    assert g.driver_override(e1000e) == "vfio-pci", (props, udevd.text())
    assert props.get("VFIO_FLAVOURD_RULE") == "nics", props
    assert props.get("VFIO_FLAVOURD_MODULE") == "vfio_pci", props
    assert props.get("VFIO_FLAVOURD_DRIVER") == "vfio-pci", props
    assert "vfio-flavourd.service" in props.get("SYSTEMD_WANTS", ""), props
    assert os.path.isdir("/sys/module/e1000e"), "80-drivers.rules should have loaded e1000e"
    assert g.driver(e1000e) is None, "e1000e claimed the device despite the override"
    d, notify, _ = installed_daemon(clean_slate)
    try:
        wait_ready(notify, time.monotonic())
        g.wait_for(lambda: all_bound_as_policy_says(a), timeout=START, what="bindings via udev")
        assert "listening on udev events" in d.text(), d.text()
        assert_viable(e1000e)
    finally:
        notify.close()
