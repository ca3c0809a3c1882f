"""The CDI spec on a real kernel: the e1000e bound to vfio-pci by
`apply`, the spec written by `publish --cdi-spec`, and Debian 12's podman
(4.3.1) giving a container that device by its CDI name.

podman 4.3.1 vendors a CDI library older than spec 0.6.0: it decodes specs
strictly and refuses the device annotations 0.6.0 added ("json: unknown
field \"annotations\""), so it cannot use our spec as written.  The test
records that, then hands podman the same device edits in a 0.5.0 spec
without annotations, which shows the edits themselves work: the container
sees /dev/vfio/vfio and /dev/vfio/<group>."""

import json
import os
import shutil
import subprocess
import tarfile

import vmguest as g
from vmtest_scenarios import POLICY, addrs, clean_slate, cli, write_policy  # noqa: F401

CDI_DIR = "/run/cdi"         # /var/run/cdi: podman reads /etc/cdi and /var/run/cdi
SPEC = os.path.join(CDI_DIR, "vfio-flavourd.json")
POD = "/tmp/podman"
# No registry, no systemd, no network, overlay root: podman with its own
# store on vfs, cgroupfs, a file for events, and no network namespace setup.
PODMAN = ["podman", "--root", f"{POD}/root", "--runroot", f"{POD}/run", "--storage-driver",
          "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]


def podman(*args, timeout=120):
    r = subprocess.run([*PODMAN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    with open(os.path.join(g.SHARE, "podman.log"), "a") as log:
        log.write(f"$ podman {' '.join(args)}\n-> {r.returncode}\n{r.stdout}{r.stderr}\n")
    return r


def cgroup2():
    """crun wants a cgroup2 hierarchy at /sys/fs/cgroup; the guest's init
    mounts none (guest only: its /sys is its own)."""
    fstype = subprocess.run(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"],
                            stdout=subprocess.PIPE, text=True).stdout.strip()
    if fstype != "cgroup2fs":
        subprocess.run(["mount", "-t", "cgroup2", "none", "/sys/fs/cgroup"], check=True)


def busybox_image(tmp):
    """An image from a scratch rootfs: busybox-static and nothing else."""
    root = os.path.join(tmp, "rootfs")
    os.makedirs(os.path.join(root, "bin"))
    shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
    tarball = os.path.join(tmp, "rootfs.tar")
    with tarfile.open(tarball, "w") as tar:
        tar.add(root, arcname=".")
    r = podman("import", tarball, "localhost/vfio-flavourd-busybox:test")
    assert r.returncode == 0, r.stderr
    return "localhost/vfio-flavourd-busybox:test"


def run_with(device, image):
    return podman("--log-level", "debug", "run", "--rm", "--network", "none",
                  "--cgroups", "disabled", "--device", device, image,
                  "/bin/busybox", "ls", "/dev/vfio")


def test_podman_gets_the_vfio_group_through_cdi(clean_slate, tmp_path):
    a = addrs()
    policy = write_policy(POLICY)
    cli("--policy", policy, "apply")
    nic = a["rp1"]
    assert g.driver(nic) == "vfio-pci"
    group = g.iommu_group(nic)
    cli("--policy", policy, "publish", "--cdi-spec", SPEC)
    spec = json.load(open(SPEC))
    name = nic.replace(":", "-")
    dev, = [d for d in spec["devices"] if d["name"] == name]
    assert dev["containerEdits"]["deviceNodes"] == [{"path": "/dev/vfio/vfio"},
                                                   {"path": f"/dev/vfio/{group}"}]
    cgroup2()
    image = busybox_image(str(tmp_path))

    r = run_with(f"vfio-flavourd.io/pci={name}", image)
    if r.returncode != 0:
        # Debian 12's podman: see the module's docstring.
        assert 'json: unknown field \\"annotations\\"' in r.stderr, r.stderr[-3000:]
        assert "unresolvable CDI devices" in r.stderr
        old = dict(spec, cdiVersion="0.5.0", kind="vfio-flavourd-compat.io/pci",
                   devices=[{"name": d["name"], "containerEdits": d["containerEdits"]}
                            for d in spec["devices"]])
        with open(os.path.join(CDI_DIR, "compat.json"), "w") as f:
            json.dump(old, f)
        os.unlink(SPEC)
        r = run_with(f"vfio-flavourd-compat.io/pci={name}", image)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert sorted(r.stdout.split()) == sorted([str(group), "vfio"])
