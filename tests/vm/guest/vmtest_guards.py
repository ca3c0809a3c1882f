"""Issue 11's real-kernel scenarios: guards that ask the kernel, and an
unbind that hangs in the kernel without hanging vfio-flavourd.

The guest has two NVMe disks (rp7: a btrfs is made and mounted on it; rp8:
left empty) and, besides the 9p shares its root is made of, a 9p share
`vmshare` that these tests mount with a file held open.

Runs last (vm_plugin.MODULE_ORDER): scenario b makes the kernel loop in
p9_virtio_remove until the share is unmounted, which these tests do at the
end whatever happens (fixture `rig`); should power-off still block on such a
device, the runner kills QEMU once the exit code is stored.
"""

import json
import os
import subprocess
import time

import pytest

import vmguest as g
from vmtest_scenarios import Daemon, cli, write_policy, clean_slate  # noqa: F401 (fixture)

BTRFS_MNT = "/mnt/vmtest-btrfs"
SHARE_MNT = "/mnt/vmtest-share"
OPTS_9P = "trans=virtio,version=9p2000.L,ro"


def share_transport(tag):
    """The PCI address of the virtio transport whose 9p mount_tag is `tag`."""
    for v in os.listdir("/sys/bus/virtio/devices"):
        path = f"/sys/bus/virtio/devices/{v}"
        try:
            with open(f"{path}/mount_tag", "rb") as f:
                found = f.read().rstrip(b"\0\n").decode()
        except OSError:
            continue
        if found == tag:
            return os.path.basename(os.path.dirname(os.path.realpath(path)))
    return None


def virtio_children(addr):
    """The virtioN devices below a PCI device: there until virtio-pci's
    remove() has returned."""
    return [n for n in os.listdir(g.dev_path(addr)) if n.startswith("virtio")]


def namespace(addr):
    """The NVMe namespace block device (nvmeXn1) of the controller at addr."""
    base = g.dev_path(addr, "nvme")
    for ctrl in os.listdir(base) if os.path.isdir(base) else []:
        for n in os.listdir(f"{base}/{ctrl}"):
            if n.startswith(ctrl) and os.path.exists(f"{base}/{ctrl}/{n}/dev"):
                return n
    return None


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def run(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class Rig:
    def __init__(self, vm):
        self.vm = vm
        self.btrfs_addr = g.device_behind("rp7")
        self.empty_addr = g.device_behind("rp8")
        self.share = vm.get("extra_share", "vmshare")
        self.held = None

    def mount_share(self):
        os.makedirs(SHARE_MNT, exist_ok=True)
        run("mount", "-t", "9p", "-o", OPTS_9P, self.share, SHARE_MNT)
        self.held = open(os.path.join(SHARE_MNT, "held"))

    def unmount_share(self):
        if self.held is not None:
            self.held.close()
            self.held = None
        if mounted(SHARE_MNT):
            run("umount", SHARE_MNT)


@pytest.fixture
def rig(vm, clean_slate):
    """Both disks on nvme, a btrfs mounted on the first; vmshare mounted
    with a file held open.  Everything undone afterwards."""
    r = Rig(vm)
    g.modprobe("nvme", "btrfs")
    for addr in (r.btrfs_addr, r.empty_addr):
        if g.driver(addr) != "nvme":
            g.restore(addr)
        g.wait_for(lambda: namespace(addr), timeout=20, what=f"namespace of {addr}")
    r.disk = namespace(r.btrfs_addr)
    run("mkfs.btrfs", "-q", "-f", f"/dev/{r.disk}")
    os.makedirs(BTRFS_MNT, exist_ok=True)
    run("mount", "-t", "btrfs", f"/dev/{r.disk}", BTRFS_MNT)
    r.mount_share()
    r.share_addr = share_transport(r.share)
    assert r.share_addr, "no virtio transport with mount_tag vmshare"
    yield r
    errors = []
    for step in (r.unmount_share, lambda: mounted(BTRFS_MNT) and run("umount", BTRFS_MNT)):
        try:
            step()
        except Exception as e:  # noqa: BLE001 (reported after the rest is undone)
            errors.append(e)
    subprocess.run(["rm", "-rf", "/run/vfio-flavourd"])
    # A share still mounted would make any unbind of its transport hang.
    share = [] if mounted(SHARE_MNT) else [(r.share_addr, "virtio-pci")]
    for addr, drv in [(r.btrfs_addr, "nvme"), (r.empty_addr, "nvme")] + share:
        if g.driver(addr) != drv or g.driver_override(addr) is not None:
            g.restore(addr)
    if errors:
        raise errors[0]


GREEDY = """\
version: 1
rules:
  - name: nvme-disks
    match: {class: "0108"}
    flavour: vfio
  - name: virtio-9p
    match: {vendor: 0x1af4, device: [0x1009, 0x1049]}
    flavour: vfio
"""


def test_guards_a_greedy_policy_takes_only_the_empty_disk(rig):
    policy = write_policy(GREEDY)
    t0 = time.monotonic()
    res = cli("--policy", policy, "apply", "--json", check=False)
    g.record_timing("guards a: apply of the greedy policy", time.monotonic() - t0)
    print(res.stdout, res.stderr)
    outcomes = {o["address"]: o for o in json.loads(res.stdout)}
    assert res.returncode == 1
    assert outcomes[rig.empty_addr]["result"] == "bound"
    assert g.driver(rig.empty_addr) == "vfio-pci"
    o = outcomes[rig.btrfs_addr]
    assert o["result"] == "refused" and g.driver(rig.btrfs_addr) == "nvme"
    assert (f"/dev/{rig.disk} carries btrfs mounted on {BTRFS_MNT} (exclusive open: busy)"
            in o["message"]), o["message"]
    o = outcomes[rig.share_addr]
    assert o["result"] == "refused" and g.driver(rig.share_addr) == "virtio-pci"
    assert (f"virtio transport {rig.share_addr} carries 9p share 'vmshare' mounted on "
            f"{SHARE_MNT}" in o["message"]), o["message"]
    # The shares the guest is running on: the results share is in mountinfo,
    # the root's layers sit under the overlay, where only a test mount sees them.
    out = share_transport("out")
    assert f"carries 9p share 'out' mounted on /run/vmtest" in outcomes[out]["message"]
    for tag in ("hostroot", "mods", "udev"):
        o = outcomes[share_transport(tag)]
        assert o["result"] == "refused", o
        assert (f"carries 9p share '{tag}', mounted where this mount namespace cannot see "
                "it (test mount: busy)") in o["message"], o["message"]
    # Every 9p transport is still on virtio-pci, and the shares still work.
    for tag in ("hostroot", "mods", "udev", "out", "vmshare"):
        assert g.driver(share_transport(tag)) == "virtio-pci"
    assert rig.held.read().startswith("a file the guards scenario keeps open")
    text = cli("--policy", policy, "explain", rig.btrfs_addr).stdout
    assert "safety guards (block devices checked by exclusive open):" in text
    cli("--policy", policy, "release", rig.empty_addr)
    assert g.driver(rig.empty_addr) == "nvme"


def status_row(policy, addr):
    rows = json.loads(cli("--policy", policy, "status", "--json").stdout)
    return next((r for r in rows if r["address"] == addr), None)


def test_guards_b_a_forced_unbind_hangs_and_the_daemon_goes_on(rig, clean_slate):
    policy = write_policy(f"""\
        version: 1
        rules:
          - name: the-share
            match: {{address: "{rig.share_addr}"}}
            flavour: vfio
            force: true
            unbind_timeout: 5
          - name: virtio-nets
            match: {{vendor: 0x1af4, device: 0x1041, address: "0000:04:*"}}
            flavour: vfio
        """)
    d = clean_slate.daemon(policy)
    d.wait_log("coldplug done", timeout=60)
    d.wait_log(f"{rig.share_addr}: the kernel is slow to finish a write")
    # While the share's unbind sits in the kernel, a hotplug is bound as usual.
    t0 = time.monotonic()
    addr = clean_slate.hotplug("hot11")
    g.wait_for(lambda: g.driver(addr) == "virtio_vfio_pci", timeout=5,
               what="hotplugged virtio-net bound while the share's unbind hangs")
    g.record_timing("guards b: hotplug to bound during a hung unbind", time.monotonic() - t0)
    row = g.wait_for(lambda: (r := status_row(policy, rig.share_addr)) and r["stuck"] and r,
                     timeout=30, what="status shows the share's device stuck")
    assert row["outcome"] == "stuck" and row["driver"] is None
    assert row["stuck_write"] == "sys/bus/pci/drivers/virtio-pci/unbind"
    text = cli("--policy", policy, "status").stdout
    assert f"{rig.share_addr} is stuck: write of '{rig.share_addr}' to " in text
    assert f"{rig.share_addr}: stuck:" in d.text() and d.alive()
    # The kernel has not let go: the driver link is already gone (6.12 removes
    # it before the driver's remove() returns), but the 9p transport is still
    # registered, its remove() looping.
    assert g.driver(rig.share_addr) is None
    assert virtio_children(rig.share_addr)
    # The kernel finishes once the share is unmounted: the daemon hears the
    # unbind and completes the move.
    t0 = time.monotonic()
    rig.unmount_share()
    g.wait_for(lambda: g.driver(rig.share_addr) == "vfio-pci", timeout=60,
               what="the daemon completing the move once the kernel finished")
    g.record_timing("guards b: unmount to the move completed", time.monotonic() - t0)
    g.wait_for(lambda: status_row(policy, rig.share_addr)["outcome"] == "bound", timeout=10,
               what="status: bound")
    d.stop()
    cli("--policy", policy, "release", rig.share_addr)
    assert g.driver(rig.share_addr) == "virtio-pci"
    g.wait_for(lambda: share_transport(rig.share), timeout=10, what="9p transport back")

    # The CLI alone: it returns after the deadline, non-zero, while its
    # writer stays in the kernel holding the device's lock.
    rig.mount_share()
    t0 = time.monotonic()
    res = cli("--policy", policy, "apply", "--unbind-timeout", "3", rig.share_addr,
              check=False)
    took = time.monotonic() - t0
    g.record_timing("guards b: apply returns after a 3 s deadline", took)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert f"vfio-flavourd: error: {rig.share_addr} is stuck: " in res.stderr
    assert "did not return within 3 s" in res.stderr
    assert status_row(policy, rig.share_addr)["stuck"]
    rig.unmount_share()
    g.wait_for(lambda: not virtio_children(rig.share_addr), timeout=60,
               what="the abandoned unbind finishing")
    assert g.driver(rig.share_addr) is None
    cli("--policy", policy, "release", rig.share_addr)
    assert g.driver(rig.share_addr) == "virtio-pci"


def test_guards_c_apply_beside_a_remove_that_loops_returns_and_strands_nothing(rig, clean_slate):
    """The share's transport unbound by hand while the share is mounted: its
    remove() loops in the kernel, holding the device's lock.  Where the
    kernel sets driver_override under that lock (driver_set_override in
    mainline's source since 5.19), the override write waits with it and
    `apply` must come back stuck on it after its deadline; where it does
    not, the probe binds nothing (the device still has its driver until
    remove() returns) and `apply` fails, leaving the device as it was.
    Which of the two this kernel does is asked first, by a write of our own.
    Either way `apply` returns and says so."""
    import sys
    import threading
    addr = rig.share_addr
    override = f"sys/bus/pci/devices/{addr}/driver_override"
    policy = write_policy(f"""\
        version: 1
        rules:
          - name: the-share
            match: {{address: "{addr}"}}
            flavour: vfio
            force: true
        """)
    g.modprobe("vfio_pci")
    by_hand = subprocess.Popen(
        ["sh", "-c", f"echo {addr} > /sys/bus/pci/drivers/virtio-pci/unbind"])
    try:
        g.wait_for(lambda: g.driver(addr) is None, timeout=30,
                   what="the unbind by hand in the kernel")
        assert by_hand.poll() is None and virtio_children(addr)    # remove() still looping

        def clear():        # the override is unset: writing that again changes nothing
            with open(g.dev_path(addr, "driver_override"), "w") as f:
                f.write("\n")
        asking = threading.Thread(target=clear, daemon=True)
        asking.start()
        asking.join(5)
        kernel_waits = asking.is_alive()
        print(f"guards c: the override write waits for the looping remove: {kernel_waits}")
        t0 = time.monotonic()
        apply = subprocess.Popen([sys.executable, "-m", "vfio_flavourd", "--policy", policy,
                                  "apply", "--unbind-timeout", "3", addr],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = apply.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            rig.unmount_share()         # the kernel lets go; then apply can be reaped
            apply.communicate(timeout=60)
            pytest.fail("apply slept in the kernel beside the looping remove")
        g.record_timing("guards c: apply beside a looping remove", time.monotonic() - t0)
        assert apply.returncode == 1, (out, err)
        if kernel_waits:
            assert (f"{addr} is stuck: write of 'vfio-pci' to {override} did not return "
                    "within 3 s") in err, (out, err)
            assert status_row(policy, addr)["stuck_write"] == override
        else:
            assert "probe by vfio-pci failed" in out and "left unbound, as it was" in out, \
                (out, err)
            assert g.driver_override(addr) is None
    finally:
        rig.unmount_share()
        by_hand.wait(60)
    assert by_hand.returncode == 0
    g.wait_for(lambda: not virtio_children(addr), timeout=60, what="the unbind by hand over")
    if kernel_waits:            # the abandoned write goes in once the lock is free
        g.wait_for(lambda: g.driver_override(addr) == "vfio-pci", timeout=30,
                   what="the override write finishing late")
    cli("--policy", policy, "release", addr)
    assert g.driver(addr) == "virtio-pci"
    g.wait_for(lambda: share_transport(rig.share), timeout=10, what="9p transport back")
