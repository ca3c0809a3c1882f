#!/usr/bin/env python3
"""Issue 12, 3a: boot the guest kernel from an initramfs built by Debian's own
mkinitramfs with vfio-flavourd's hook, and check from inside it that the
policy devices got their VFIO drivers before any root is mounted and that
their host driver, e1000e, which is in the image, never touched them.

    tests/vm/initramfs-proof            (root; after tests/vm/setup.py)

1. initramfs-tools, klibc, busybox and dracut-core are `apt-get download`ed and unpacked
   into the cache (never installed: installing initramfs-tools would build
   images for the host's kernels).
2. mkinitramfs runs in a private mount namespace (unshare -m) where /usr and
   /etc are overlays of those trees, Debian's udev and the guest kernel's
   modules over the host's own: nothing on the host changes, and the host
   never sees the guest kernel's /lib/modules.  The confdir (-d) lists
   e1000e in `modules`, and carries the project's hook and two test-only
   scripts (initramfs-scripts/scripts): boot=vmtest, which mounts no root, and
   init-premount/vmtest-report, which prints VMTEST lines and powers off.
   In the same namespace dracut (059, Debian's dracut-core) builds an image
   with the project's dracut module; it is inspected with lsinitrd, not
   booted (dracut's init wants a root to mount): the rules, with no callout,
   and the modules they load must be in it.
3. QEMU boots the kernel with that image, an e1000e and a modern virtio-net.
   Debian builds virtio_pci into the kernel, so it would bind the virtio-net
   before any udev runs; initcall_blacklist=virtio_pci_driver_init keeps it
   off, standing in for a host driver that is a module, as e1000e is.
"""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import setup  # noqa: E402  (tests/vm/setup.py)

DEBS = ["initramfs-tools", "initramfs-tools-core", "klibc-utils", "libklibc", "busybox",
        "dracut-core"]
POLICY = """\
version: 1
rules:
  - name: nics
    match: {vendor: 0x8086, device: 0x10d3}
    flavour: vfio
  - name: virtio-nets
    match: {vendor: 0x1af4, device: 0x1041}
    flavour: vfio
"""
INITRAMFS_CONF = "MODULES=list\nBUSYBOX=y\nCOMPRESS=gzip\nRESUME=none\n"


def tools_layer(cache):
    """initramfs-tools and what its hooks need, unpacked once into the cache."""
    import hashlib
    key = hashlib.sha256(" ".join(DEBS).encode()).hexdigest()[:12]
    layer = os.path.join(cache, f"initramfs-tools-{key}")
    if os.path.exists(os.path.join(layer, ".done")):
        return layer
    tmp = tempfile.mkdtemp(dir=cache, prefix=".itools-")
    debs = os.path.join(tmp, "debs")
    os.makedirs(debs)
    subprocess.run(["apt-get", "download", "-q", *DEBS], cwd=debs, check=True,
                   stdout=subprocess.DEVNULL)
    root = os.path.join(tmp, "root")
    for deb in sorted(os.listdir(debs)):
        subprocess.run(["dpkg-deb", "-x", os.path.join(debs, deb), root], check=True)
    setup.move_under_usr(root)
    open(os.path.join(root, ".done"), "w").close()
    os.rename(root, layer)
    subprocess.run(["rm", "-rf", tmp], check=True)
    return layer


def build_image(manifest, work):
    """The image, built by mkinitramfs in a private mount namespace."""
    kver = manifest["kernel_release"]
    tools = tools_layer(os.path.dirname(os.path.dirname(manifest["vmlinuz"])))
    conf = os.path.join(work, "conf")
    os.makedirs(os.path.join(conf, "hooks"))
    subprocess.run(["cp", "-r", os.path.join(HERE, "initramfs-scripts", "scripts"), conf],
                   check=True)
    subprocess.run(["cp", os.path.join(REPO, "initramfs/initramfs-tools/vfio-flavourd"),
                    os.path.join(conf, "hooks/")], check=True)
    with open(os.path.join(conf, "initramfs.conf"), "w") as f:
        f.write(INITRAMFS_CONF)
    with open(os.path.join(conf, "modules"), "w") as f:
        f.write("e1000e\n")
    # The root vfio-flavourd reads: the policy, and the guest kernel's modules.
    vroot = os.path.join(work, "vroot")
    os.makedirs(os.path.join(vroot, "etc/vfio-flavourd/policy.d"))
    os.makedirs(os.path.join(vroot, "usr/lib"))
    os.symlink(os.path.join(manifest["modules_layer"], "usr/lib/modules"),
               os.path.join(vroot, "usr/lib/modules"))
    with open(os.path.join(vroot, "etc/vfio-flavourd/policy.d/50-proof.yaml"), "w") as f:
        f.write(POLICY)
    # /usr/sbin/vfio-flavourd inside the namespace: this checkout.
    for d in ("usr-up/sbin", "usr-work", "etc-up", "etc-work", "tmp"):
        os.makedirs(os.path.join(work, d))
    dracut_mod = os.path.join(work, "usr-up/lib/dracut/modules.d/90vfio-flavourd")
    os.makedirs(dracut_mod)
    subprocess.run(["cp", os.path.join(REPO, "initramfs/dracut/90vfio-flavourd/module-setup.sh"),
                    dracut_mod], check=True)
    tool = os.path.join(work, "usr-up/sbin/vfio-flavourd")
    python = os.path.join(REPO, ".venv/bin/python")
    with open(tool, "w") as f:
        f.write(f"#!/bin/sh\nPYTHONPATH={REPO} exec {python if os.path.exists(python) else sys.executable}"
                f" -m vfio_flavourd \"$@\"\n")
    os.chmod(tool, 0o755)
    image = os.path.join(work, "initrd.img")
    lowers_usr = ":".join([os.path.join(tools, "usr"), os.path.join(manifest["udev_layer"], "usr"),
                           os.path.join(manifest["modules_layer"], "usr"), "/usr"])
    lowers_etc = ":".join(p for p in (os.path.join(tools, "etc"),
                                      os.path.join(manifest["udev_layer"], "etc"), "/etc")
                          if os.path.isdir(p))
    script = f"""set -e
mount -t overlay proof-usr -o lowerdir={lowers_usr},upperdir={work}/usr-up,workdir={work}/usr-work /usr
mount -t overlay proof-etc -o lowerdir={lowers_etc},upperdir={work}/etc-up,workdir={work}/etc-work /etc
mount -t overlay proof-boot -o lowerdir={os.path.dirname(manifest["vmlinuz"])}:/boot /boot
mkinitramfs -d {conf} -o {image} {kver}
# The same policy through dracut, with only what the module needs.
dracut --force --no-hostonly --no-early-microcode --kver {kver} --tmpdir {work}/tmp \
    --modules "base udev-rules vfio-flavourd" {image}.dracut
lsinitrd {image}.dracut > {work}/dracut-listing
lsinitrd -f usr/lib/udev/rules.d/70-vfio-flavourd.rules {image}.dracut > {work}/dracut-rules
"""
    env = dict(os.environ, TMPDIR=os.path.join(work, "tmp"), VFIO_FLAVOURD_ROOT=vroot)
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.exit(f"initramfs-proof: mkinitramfs failed:\n{proc.stdout}")
    listing = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                              f"mount -t overlay p -o lowerdir={lowers_usr},upperdir={work}/usr-up,"
                              f"workdir={work}/usr-work /usr && lsinitramfs {image}"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout.split()
    with open(os.path.join(work, "dracut-listing")) as f:
        dracut_listing = f.read()
    with open(os.path.join(work, "dracut-rules")) as f:
        dracut_listing += "\n# the rules file:\n" + f.read()
    return image, listing, dracut_listing, proc.stdout


def boot(manifest, image, timeout=300):
    import runner
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-cpu", "max",
            "-smp", "2", "-m", "1024", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-serial", "stdio",
            "-kernel", manifest["vmlinuz"], "-initrd", image,
            "-append", "console=ttyS0 panic=-1 intel_iommu=on iommu=pt boot=vmtest "
                       "initcall_blacklist=virtio_pci_driver_init",
            "-device", "intel-iommu,intremap=on"]
    for i, (name, bus, addr, _) in enumerate(runner.PORTS[:2], 1):
        argv += ["-device", f"pcie-root-port,id={name},bus={bus},chassis={i},slot={i},"
                 f"addr={addr:#x}"]
    for dev in runner.DEVICES[:2]:
        argv += ["-device", runner.qdev_arg({**dev["qdev"], "id": dev["id"], "bus": dev["port"]})]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, errors="replace")
    return proc.stdout


def check_dracut(listing):
    """dracut's image is inspected, not booted (its init wants a root)."""
    fails = []
    for need in ("usr/lib/udev/rules.d/70-vfio-flavourd.rules", "vfio-pci.ko",
                 "virtio-vfio-pci.ko", "vfio_iommu_type1.ko"):
        if need not in listing:
            fails.append(f"the dracut image has no {need}")
    rules = listing.partition("\n# the rules file:\n")[2]
    if 'RUN{builtin}+="kmod load virtio_vfio_pci"' not in rules or "IMPORT" in rules:
        fails.append("the dracut image's rules are not the --initramfs rules of the policy")
    return fails


def check(listing, console):
    """The failures, one sentence each (empty: the proof holds)."""
    fails = []
    for need in ("usr/lib/udev/rules.d/70-vfio-flavourd.rules", "vfio-pci.ko",
                 "virtio-vfio-pci.ko", "e1000e.ko", "vfio_iommu_type1.ko"):
        if not any(p.endswith(need) or need in p for p in listing):
            fails.append(f"the image has no {need}")
    facts = [ln.split("VMTEST ", 1)[1].strip() for ln in console.splitlines() if "VMTEST " in ln]
    if "done" not in facts:
        fails.append("the initramfs never reported (no 'VMTEST done')")
    devices = {}
    for f in facts:
        if f.startswith("device="):
            kv = dict(x.split("=", 1) for x in f.split() if "=" in x)
            devices[kv["id"]] = kv
    want = {"0x8086:0x10d3": "vfio-pci", "0x1af4:0x1041": "virtio_vfio_pci"}
    for dev_id, drv in want.items():
        kv = devices.get(dev_id)
        if kv is None:
            fails.append(f"no report for {dev_id}")
            continue
        if kv["driver"] != drv or kv["override"] != drv:
            fails.append(f"{dev_id}: driver {kv['driver']}, override {kv['override']}; "
                         f"wanted {drv}")
    e1000e = devices.get("0x8086:0x10d3", {})
    if e1000e.get("host_driver_lines") != "0":
        fails.append(f"e1000e printed {e1000e.get('host_driver_lines')} lines about "
                     f"{e1000e.get('device')}: it probed the claimed device")
    if "module=e1000e loaded" not in facts:
        fails.append("e1000e was not loaded in the initramfs: the proof needs it there")
    return facts, fails


def main():
    if os.geteuid() != 0:
        sys.exit("initramfs-proof: run as root (unshare -m and mounts)")
    manifest = setup.ensure()
    with tempfile.TemporaryDirectory(prefix="vfio-flavourd-initramfs-") as work:
        image, listing, dracut_listing, build_log = build_image(manifest, work)
        console = boot(manifest, image)
    facts, fails = check(listing, console)
    fails += check_dracut(dracut_listing)
    for f in facts:
        print(f"initramfs-proof: guest: {f}")
    result = {"facts": facts, "failures": fails,
              "image_vfio_files": sorted(p for p in listing if "vfio" in p),
              "dracut_image_vfio_files": sorted(
                  ln.split()[-1] for ln in dracut_listing.partition("\n# the rules")[0].splitlines()
                  if ln[:1] in ("-", "d", "l") and "vfio" in ln)}
    print(json.dumps(result, indent=2))
    if fails:
        print("initramfs-proof: FAILED\n" + "\n".join(fails) + "\n----- console -----\n"
              + console[-6000:] + "\n----- mkinitramfs -----\n" + build_log[-3000:])
        return 1
    print("initramfs-proof: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
