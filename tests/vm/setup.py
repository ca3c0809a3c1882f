#!/usr/bin/env python3
"""Host-side set-up of the real-kernel test tier, cached per kernel ABI.

Everything lands in a cache directory outside the clone
($VFIO_FLAVOURD_VM_CACHE, default /var/cache/vfio-flavourd-vm), one
subdirectory per Debian kernel ABI, e.g. ``6.12.117+deb12``:

    boot/vmlinuz            the kernel
    mods/usr/lib/modules/   modules tree + out-of-tree virtio_vfio_pci, depmod'ed
    udev/usr/...            Debian's udev package, unpacked, never installed
    headers/                linux-headers + linux-kbuild, for the module build
    src/                    the few files taken from linux-source-6.12
    initramfs.cpio.gz       busybox + 9p/overlay modules + our /init
    manifest.json           paths of the above, read by runner.py

Each step builds into a temporary directory and renames it into place, and
records a stamp, so an interrupted run never leaves a half-built cache and a
second run only checks stamps. Nothing here is installed into the host: the
kernel, its modules and udev only ever run inside the QEMU guest (installing
udev would start udevd on the host).

Stdlib only; runs as root on Debian 12.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CACHE = "/var/cache/vfio-flavourd-vm"
KERNEL_META = "linux-image-6.12-amd64"
FLAVOUR = "amd64"
SOURCE_PKG = "linux-source-6.12"
# Host tools, by the command that proves each is there.
HOST_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "/bin/busybox": "busybox-static",
    "depmod": "kmod",
    "cpio": "cpio",
    "make": "make",
    "gcc-12": "gcc-12",
    "xz": "xz-utils",
    "dpkg-deb": "dpkg",
    # The guards scenario makes a btrfs on a guest NVMe disk (the guest runs
    # the host's binaries, read-only).
    "mkfs.btrfs": "btrfs-progs",
}
# Shared libraries udevadm (from the unpacked udev package) links against.
# They are plain libraries: installing them starts nothing on the host.
UDEV_LIBS = ["libacl1", "libblkid1", "libcap2", "libkmod2", "libselinux1"]
# Modules the initramfs needs to mount a 9p root with an overlay on top, in
# load order (modinfo -F depends: 9pnet and 9p need netfs).
INITRAMFS_MODULES = ["netfs", "9pnet", "9pnet_virtio", "9p", "overlay"]
# From linux-source: the variant driver and the uapi header the guest tests
# check their ioctl numbers against.
SOURCE_MEMBERS = [
    "drivers/vfio/pci/virtio/",
    "include/uapi/linux/vfio.h",
]


def log(msg):
    print(f"vm-setup: {msg}", file=sys.stderr, flush=True)


def run(argv, **kw):
    kw.setdefault("check", True)
    return subprocess.run(argv, **kw)


def output(argv):
    return run(argv, stdout=subprocess.PIPE, text=True).stdout


def cache_root():
    return os.environ.get("VFIO_FLAVOURD_VM_CACHE", DEFAULT_CACHE)


def have(cmd):
    if cmd.startswith("/"):
        return os.access(cmd, os.X_OK)
    return shutil.which(cmd, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is not None


def dpkg_installed(pkg):
    res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return res.returncode == 0 and res.stdout.endswith(" installed")


_apt_updated = False


def apt_update_once():
    global _apt_updated
    if not _apt_updated:
        log("apt-get update")
        run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-q"], stdout=subprocess.DEVNULL)
        _apt_updated = True


def ensure_host_tools():
    missing = sorted({pkg for cmd, pkg in HOST_TOOLS.items() if not have(cmd)}
                     | {pkg for pkg in UDEV_LIBS if not dpkg_installed(pkg)})
    # A dynamically linked busybox cannot run as the initramfs's only binary.
    if have("/bin/busybox") and not dpkg_installed("busybox-static"):
        missing = sorted(set(missing) | {"busybox-static"})
    ensure_packages(missing)


def ensure_packages(missing):
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"vm-setup: missing host packages {missing}; run as root to install them")
    log(f"installing host packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        apt_update_once()
        run(cmd, env=env, stdout=subprocess.DEVNULL)


def kernel_abi():
    """The ABI of the newest Debian 6.12 kernel, e.g. '6.12.117+deb12'."""
    pinned = os.environ.get("VFIO_FLAVOURD_VM_KERNEL_ABI")
    if pinned:
        return pinned
    pat = re.compile(r"Depends: linux-image-(\d+\.\d+\.\d+\+deb\d+)-" + FLAVOUR + r"\b")
    for attempt in range(2):
        res = subprocess.run(["apt-cache", "depends", KERNEL_META],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        m = pat.search(res.stdout)
        if m:
            return m.group(1)
        if attempt == 0:
            apt_update_once()
    # Offline, or the archive moved on without us: fall back to what is cached.
    done = [d for d in os.listdir(cache_root())
            if os.path.exists(os.path.join(cache_root(), d, "manifest.json"))] \
        if os.path.isdir(cache_root()) else []
    if done:
        abi = sorted(done)[-1]
        log(f"apt-cache cannot resolve {KERNEL_META}; using cached ABI {abi}")
        return abi
    sys.exit(f"vm-setup: apt-cache cannot resolve {KERNEL_META} "
             "(is bookworm-security in the apt sources?)")


class Cache:
    def __init__(self, abi):
        self.abi = abi
        self.kver = f"{abi}-{FLAVOUR}"
        self.dir = os.path.join(cache_root(), abi)
        os.makedirs(self.dir, exist_ok=True)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    # A stamp records that a step finished, with a key that changes when the
    # step's recipe does (so editing the init script rebuilds the initramfs).
    def done(self, step, key=""):
        try:
            with open(self.path(f".stamp-{step}")) as f:
                return f.read() == key
        except FileNotFoundError:
            return False

    def mark(self, step, key=""):
        with open(self.path(f".stamp-{step}"), "w") as f:
            f.write(key)

    def unmark(self, *steps):
        for step in steps:
            try:
                os.unlink(self.path(f".stamp-{step}"))
            except FileNotFoundError:
                pass

    def staging(self, name):
        tmp = self.path(f".tmp-{name}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        return tmp

    def commit(self, tmp, name):
        final = self.path(name)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        return final


def file_key(*paths, extra=""):
    h = hashlib.sha256(extra.encode())
    for p in paths:
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def download(c):
    pkgs = {
        "image": f"linux-image-{c.kver}",
        "headers": f"linux-headers-{c.kver}",
        "headers-common": f"linux-headers-{c.abi}-common",
        "kbuild": f"linux-kbuild-{c.abi}",
        "source": SOURCE_PKG,
        "udev": "udev",
    }
    debdir = c.path("debs")
    os.makedirs(debdir, exist_ok=True)
    have_debs = {name: f for name in os.listdir(debdir) for f in [os.path.join(debdir, name)]}
    want = []
    for key, pkg in pkgs.items():
        if not any(n.startswith(pkg + "_") and n.endswith(".deb") for n in have_debs):
            want.append(pkg)
    if want:
        log(f"apt-get download {' '.join(want)}")
        # _apt cannot write into a root-owned cache dir; apt then downloads
        # unsandboxed and says so. That is expected here, so keep it quiet.
        res = subprocess.run(["apt-get", "download", "-q", *want], cwd=debdir,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if res.returncode != 0:
            apt_update_once()
            run(["apt-get", "download", "-q", *want], cwd=debdir, stdout=subprocess.DEVNULL)
    found = {}
    for key, pkg in pkgs.items():
        debs = sorted(n for n in os.listdir(debdir) if n.startswith(pkg + "_") and n.endswith(".deb"))
        if not debs:
            sys.exit(f"vm-setup: {pkg} was not downloaded")
        found[key] = os.path.join(debdir, debs[-1])
    return found


def move_under_usr(root):
    """Debian 12 hosts have merged /usr (/lib -> usr/lib); a lower layer with a
    real lib/ or bin/ directory would hide the host's symlink and with it the
    whole of /usr/lib in the guest. Move such trees under usr/."""
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        src = os.path.join(root, top)
        if os.path.isdir(src) and not os.path.islink(src):
            merge_tree(src, os.path.join(root, "usr", top))
            shutil.rmtree(src)


def merge_tree(src, dst):
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if os.path.isdir(s) and not os.path.islink(s) and os.path.isdir(d) and not os.path.islink(d):
            merge_tree(s, d)
        else:
            if os.path.lexists(d):
                if os.path.isdir(d) and not os.path.islink(d):
                    shutil.rmtree(d)
                else:
                    os.unlink(d)
            os.rename(s, d)


def unpack_image(c, deb):
    if c.done("image"):
        return
    log(f"unpacking {os.path.basename(deb)}")
    # Later steps add to this tree; a fresh one needs them again.
    c.unmark("variant", "initramfs")
    tmp = c.staging("mods")
    run(["dpkg-deb", "-x", deb, tmp])
    boot = c.path("boot")
    shutil.rmtree(boot, ignore_errors=True)
    os.rename(os.path.join(tmp, "boot"), boot)
    move_under_usr(tmp)
    c.commit(tmp, "mods")
    c.mark("image")


def unpack_headers(c, debs):
    if c.done("headers"):
        return
    log("unpacking linux-headers and linux-kbuild")
    tmp = c.staging("headers")
    for deb in debs:
        run(["dpkg-deb", "-x", deb, tmp])
    final = c.path("headers")
    # The flavour's Makefile includes the common one by its installed
    # absolute path; point it at the unpacked tree instead.
    mk = os.path.join(tmp, "usr/src", f"linux-headers-{c.kver}", "Makefile")
    with open(mk) as f:
        text = f.read()
    text = text.replace("include /usr/src/", f"include {final}/usr/src/")
    with open(mk, "w") as f:
        f.write(text)
    c.commit(tmp, "headers")
    c.mark("headers")


def unpack_source(c, deb):
    if c.done("source"):
        return
    log(f"extracting {' '.join(SOURCE_MEMBERS)} from {SOURCE_PKG}")
    tmp = c.staging("src")
    # The tarball inside the .deb is xz; tar must read the whole stream to
    # find a member, so pipe it rather than writing 150 MB to disk.
    top = "linux-source-6.12"
    members = [f"{top}/{m}" for m in SOURCE_MEMBERS]
    p1 = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    p2 = subprocess.Popen(["tar", "-xO", f"./usr/src/{top}.tar.xz"], stdin=p1.stdout,
                          stdout=subprocess.PIPE)
    p3 = subprocess.Popen(["xz", "-dc", "-T0"], stdin=p2.stdout, stdout=subprocess.PIPE)
    p4 = subprocess.Popen(["tar", "-x", "-C", tmp, *members], stdin=p3.stdout)
    p1.stdout.close(), p2.stdout.close(), p3.stdout.close()
    rcs = [p.wait() for p in (p4, p3, p2, p1)]
    if rcs[0] != 0:
        sys.exit(f"vm-setup: extracting from {deb} failed: {rcs}")
    c.commit(tmp, "src")
    c.mark("source")


def unpack_udev(c, deb):
    if c.done("udev"):
        return
    log(f"unpacking {os.path.basename(deb)} (not installing it)")
    tmp = c.staging("udev")
    run(["dpkg-deb", "-x", deb, tmp])
    move_under_usr(tmp)
    c.commit(tmp, "udev")
    c.mark("udev")


def build_variant(c):
    """Build drivers/vfio/pci/virtio (virtio_vfio_pci) out of tree and add it
    to the modules tree; Debian's kernel does not ship any variant driver."""
    srcdir = c.path("src", "linux-source-6.12", "drivers/vfio/pci/virtio")
    key = file_key(*[os.path.join(srcdir, n) for n in sorted(os.listdir(srcdir))],
                   extra="build-v1")
    if c.done("variant", key):
        return
    log("building virtio_vfio_pci out of tree")
    build = c.staging("build")
    for n in os.listdir(srcdir):
        shutil.copy(os.path.join(srcdir, n), build)
    kdir = c.path("headers", "usr/src", f"linux-headers-{c.kver}")
    # Kconfig symbols the directory's Makefile keys on: the module itself, and
    # no BTF for it (that needs pahole, and nothing here wants module BTF).
    run(["make", "-s", "-C", kdir, f"M={build}", f"-j{os.cpu_count() or 1}",
         "CONFIG_VIRTIO_VFIO_PCI=m",
         "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"], stdout=subprocess.DEVNULL)
    kos = [n for n in os.listdir(build) if n.endswith(".ko")]
    if not kos:
        sys.exit("vm-setup: the module build produced no .ko")
    moddir = c.path("mods", "usr/lib/modules", c.kver)
    updates = os.path.join(moddir, "updates")
    shutil.rmtree(updates, ignore_errors=True)
    os.makedirs(updates)
    for ko in kos:
        shutil.copy(os.path.join(build, ko), updates)
    c.commit(build, "build")
    depmod(c)
    c.mark("variant", key)


def depmod(c):
    # depmod -b BASE reads BASE/lib/modules/<ver>; the tree lives under usr/
    # so that it can be a lower layer over a merged-/usr root.
    with tempfile.TemporaryDirectory(dir=c.dir) as base:
        os.symlink(c.path("mods", "usr", "lib"), os.path.join(base, "lib"))
        depmod_bin = shutil.which("depmod", path="/usr/sbin:/sbin:" + os.environ.get("PATH", ""))
        run([depmod_bin, "-b", base, c.kver])
    alias = c.path("mods", "usr/lib/modules", c.kver, "modules.alias")
    with open(alias) as f:
        if "virtio_vfio_pci" not in f.read():
            sys.exit("vm-setup: depmod did not add a virtio_vfio_pci alias")


def build_initramfs(c):
    init = os.path.join(HERE, "initramfs-init")
    key = file_key(init, "/bin/busybox", extra="initramfs-v1")
    out = c.path("initramfs.cpio.gz")
    if c.done("initramfs", key) and os.path.exists(out):
        return
    log("building the initramfs")
    moddir = c.path("mods", "usr/lib/modules", c.kver)
    tmp = c.staging("initramfs")
    for d in ("bin", "dev", "proc", "sys", "mnt", "lib/modules", "newroot"):
        os.makedirs(os.path.join(tmp, d), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(tmp, "bin/busybox"))
    shutil.copy(init, os.path.join(tmp, "init"))
    os.chmod(os.path.join(tmp, "init"), 0o755)
    found = {}
    for dirpath, _, files in os.walk(os.path.join(moddir, "kernel")):
        for f in files:
            name = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", f)
            if name in INITRAMFS_MODULES:
                found[name] = os.path.join(dirpath, f)
    for name in INITRAMFS_MODULES:
        if name not in found:
            sys.exit(f"vm-setup: module {name} not found under {moddir}")
        src, dst = found[name], os.path.join(tmp, "lib/modules", name + ".ko")
        # busybox insmod takes plain ELF only.
        with open(dst, "wb") as f:
            if src.endswith(".xz"):
                run(["xz", "-dc", src], stdout=f)
            elif src.endswith(".zst"):
                run(["zstd", "-dc", src], stdout=f)
            else:
                with open(src, "rb") as s:
                    shutil.copyfileobj(s, f)
    with open(os.path.join(tmp, "modules"), "w") as f:
        f.write("\n".join(INITRAMFS_MODULES) + "\n")
    with open(out + ".tmp", "wb") as f:
        find = subprocess.Popen(["find", ".", "-mindepth", "1"], cwd=tmp, stdout=subprocess.PIPE)
        cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=tmp,
                                stdin=find.stdout, stdout=subprocess.PIPE)
        gz = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout, stdout=f)
        find.stdout.close(), cpio.stdout.close()
        if any(p.wait() for p in (gz, cpio, find)):
            sys.exit("vm-setup: building the initramfs failed")
    os.rename(out + ".tmp", out)
    shutil.rmtree(tmp)
    c.mark("initramfs", key)


def ensure():
    """Make the cache complete for the current ABI; return the manifest."""
    t0 = time.monotonic()
    ensure_host_tools()
    os.makedirs(cache_root(), exist_ok=True)
    abi = kernel_abi()
    c = Cache(abi)
    with open(c.path(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all(c.done(s) for s in ("image", "headers", "source", "udev")):
            debs = download(c)
            unpack_image(c, debs["image"])
            unpack_headers(c, [debs["headers"], debs["headers-common"], debs["kbuild"]])
            unpack_source(c, debs["source"])
            unpack_udev(c, debs["udev"])
            # The unpacked trees are what we use; the .debs are 280 MB.
            shutil.rmtree(c.path("debs"), ignore_errors=True)
        build_variant(c)
        build_initramfs(c)
        manifest = {
            "abi": abi,
            "kernel_release": c.kver,
            "vmlinuz": c.path("boot", f"vmlinuz-{c.kver}"),
            "initramfs": c.path("initramfs.cpio.gz"),
            "modules_layer": c.path("mods"),
            "udev_layer": c.path("udev"),
            "linux_source": c.path("src", "linux-source-6.12"),
        }
        with open(c.path("manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
    manifest["setup_seconds"] = round(time.monotonic() - t0, 2)
    return manifest


if __name__ == "__main__":
    print(json.dumps(ensure(), indent=2))
