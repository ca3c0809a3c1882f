#!/usr/bin/env python3
"""Host side of the packaged scenarios: the .debs the guest installs.

- vfio-flavourd's own .deb, built with packaging/build-deb from this
  checkout (scenario 8 and the benchmark's CLI), cached by the git tree hash
  of the working tree without tests/vm (the tier's own files, which never go
  into the package), so that editing a guest test does not rebuild it;
- Debian's driverctl, fetched with `apt-get download` (figure 7 of the
  benchmarks compares `vfio-flavourd apply` with it).

Neither is installed on the host. The guest runs `dpkg -i` (vfio-flavourd)
or copies the unpacked files (driverctl) inside its tmpfs overlay, whose
lower layers (the host's root among them) QEMU shares read-only; the runner
checks afterwards that the host's dpkg database and paths did not change.

    $VFIO_FLAVOURD_VM_CACHE/
      deb/<key>/vfio-flavourd_<version>_all.deb   (plus build.log)
      deb/failed-<key>.log                         the log of a failed build
      extra-debs/driverctl_<version>_all.deb      and unpacked, without the .deb suffix

Stdlib only; runs as root on Debian 12.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import setup  # noqa: E402

KEEP_BUILDS = 3          # cached .debs of other trees kept for switching branches
KEY_VERSION = "deb-v1"   # bump when the recipe below changes
# Left out of the key: the tier's own files, and what build-deb leaves out.
KEY_EXCLUDES = ("tests/vm",)
WALK_EXCLUDES = {".git", ".venv", "dist", "build", "__pycache__", ".pytest_cache",
                 ".hypothesis", ".cache"}


def log(msg):
    print(f"vm-setup: {msg}", file=sys.stderr, flush=True)


def git(*args, env=None):
    return subprocess.run(["git", "-C", REPO, *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, check=True).stdout.strip()


def tree_key():
    """The git tree hash of the working tree as build-deb copies it (tracked
    and untracked files, not ignored ones, working-tree contents), minus
    tests/vm. Made in a throw-away index, so the real one is untouched (the
    blobs do land in the object store, as after any `git add`). Outside a git
    checkout: a hash of the files' contents."""
    try:
        index = git("rev-parse", "--path-format=absolute", "--git-path", "index")
        with tempfile.TemporaryDirectory() as tmp:
            tmp_index = os.path.join(tmp, "index")
            if os.path.exists(index):
                shutil.copy(index, tmp_index)  # keeps git's stat cache: fast
            env = dict(os.environ, GIT_INDEX_FILE=tmp_index)
            git("add", "-A", "--", ".", env=env)
            for ex in KEY_EXCLUDES:
                git("rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", ex, env=env)
            return "git-" + git("write-tree", env=env)
    except (subprocess.CalledProcessError, FileNotFoundError):
        pass
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(REPO):
        rel = os.path.relpath(dirpath, REPO)
        dirs[:] = sorted(d for d in dirs if d not in WALK_EXCLUDES and not d.endswith(".egg-info")
                         and os.path.normpath(os.path.join(rel, d)) not in KEY_EXCLUDES)
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, REPO).encode() + b"\0")
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
    return "files-" + h.hexdigest()[:40]


def ensure_vfio_flavourd_deb():
    """Build (or find cached) the .deb of this checkout. Returns a dict for
    vm.json: deb, key, seconds, cached, or error plus log and log_tail when
    the build failed (the scenario then fails with that log)."""
    t0 = time.monotonic()
    top = os.path.join(setup.cache_root(), "deb")
    os.makedirs(top, exist_ok=True)
    info = {"key": None}
    with open(os.path.join(top, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            key = tree_key() + "-" + hashlib.sha256(KEY_VERSION.encode()).hexdigest()[:8]
        except Exception as e:  # never stop the whole run over the package
            return {"error": f"cannot compute the source key: {e}", "log_tail": "",
                    "seconds": round(time.monotonic() - t0, 2)}
        info["key"] = key
        final = os.path.join(top, key)
        debs = sorted(n for n in os.listdir(final) if n.endswith(".deb")) \
            if os.path.isdir(final) else []
        if debs:
            os.utime(final)  # most recently used: kept by the pruning below
            info.update(deb=os.path.join(final, debs[-1]), cached=True,
                        log=os.path.join(final, "build.log"))
        else:
            info.update(build(top, key), cached=False)
        prune(top)
    info["seconds"] = round(time.monotonic() - t0, 2)
    return info


def build(top, key):
    log("building the .deb (packaging/install-build-deps, packaging/build-deb)")
    tmp = os.path.join(top, f".tmp-{key}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    log_path = os.path.join(tmp, "build.log")
    # nocheck: the test suite is not what this tier tests, and runs elsewhere
    # (.ci/run); a build here only has to produce the package.
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck")
    ok = True
    with open(log_path, "w") as logf:
        for argv in ([os.path.join(REPO, "packaging/install-build-deps")],
                     [os.path.join(REPO, "packaging/build-deb"), tmp]):
            logf.write(f"$ {' '.join(argv)}\n")
            logf.flush()
            rc = subprocess.run(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                logf.write(f"\n{os.path.basename(argv[0])} exited {rc}\n")
                ok = False
                break
    debs = sorted(n for n in os.listdir(tmp) if n.endswith(".deb"))
    if not ok or not debs:
        failed = os.path.join(top, f"failed-{key}.log")
        shutil.move(log_path, failed)
        shutil.rmtree(tmp, ignore_errors=True)
        with open(failed, errors="replace") as f:
            text = f.read()
        log(f"building the .deb failed; log: {failed}")
        return {"error": "packaging/build-deb failed" if not ok else "build-deb made no .deb",
                "log": failed, "log_tail": text[-6000:]}
    for n in os.listdir(tmp):  # only the .deb and the log are used
        if not (n.endswith(".deb") or n == "build.log"):
            os.unlink(os.path.join(tmp, n))
    final = os.path.join(top, key)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    try:
        os.unlink(os.path.join(top, f"failed-{key}.log"))
    except FileNotFoundError:
        pass
    return {"deb": os.path.join(final, debs[-1]), "log": os.path.join(final, "build.log")}


def prune(top):
    builds = sorted((d for d in os.listdir(top)
                     if not d.startswith(".") and os.path.isdir(os.path.join(top, d))),
                    key=lambda d: os.path.getmtime(os.path.join(top, d)), reverse=True)
    for d in builds[KEEP_BUILDS:]:
        shutil.rmtree(os.path.join(top, d), ignore_errors=True)
    fails = sorted((f for f in os.listdir(top) if f.startswith("failed-")),
                   key=lambda f: os.path.getmtime(os.path.join(top, f)), reverse=True)
    for f in fails[KEEP_BUILDS:]:
        os.unlink(os.path.join(top, f))


def ensure_extra_deb(pkg):
    """Debian's own package `pkg` (e.g. driverctl), downloaded once into the
    cache. Returns {"deb": path} or {"error": why}."""
    top = os.path.join(setup.cache_root(), "extra-debs")
    os.makedirs(top, exist_ok=True)

    def found():
        debs = sorted(n for n in os.listdir(top) if n.startswith(pkg + "_") and n.endswith(".deb"))
        return os.path.join(top, debs[-1]) if debs else None

    with open(os.path.join(top, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not found():
            log(f"apt-get download {pkg}")
            cmd = ["apt-get", "download", "-q", pkg]
            res = subprocess.run(cmd, cwd=top, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
            if res.returncode != 0:
                setup.apt_update_once()
                res = subprocess.run(cmd, cwd=top, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
            if res.returncode != 0 or not found():
                return {"error": f"apt-get download {pkg} failed: {res.stderr.strip()[-2000:]}"}
        deb = found()
        # Unpacked next to it, bin/ and lib/ moved under usr/ as for the
        # other trees the guest sees (setup.move_under_usr), so the guest can
        # copy it into its root without replacing the /lib symlink.
        root = deb[:-len(".deb")]
        if not os.path.isdir(root):
            tmp = root + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.run(["dpkg-deb", "-x", deb, tmp], check=True)
            setup.move_under_usr(tmp)
            os.rename(tmp, root)
        version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], stdout=subprocess.PIPE,
                                 text=True, check=True).stdout.strip()
        return {"deb": deb, "root": root, "version": version}


if __name__ == "__main__":
    import json
    print(json.dumps({"vfio-flavourd": ensure_vfio_flavourd_deb(),
                      "driverctl": ensure_extra_deb("driverctl")}, indent=2))
