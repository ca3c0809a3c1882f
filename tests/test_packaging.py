"""Build the .deb from a clean copy of the tree and check what comes out:
its file list and modes, its conffiles, its maintainer scripts, lintian,
and that the installed package works (plan, check-config, the udev
callout and the daemon, run from the unpacked package against a simulated
host).  Also that the RPM spec parses.

Needs the Build-Depends of packaging/debian/control plus lintian and rpm;
packaging/install-build-deps installs them.  Without them the tests skip,
unless VFIO_FLAVOURD_REQUIRE_PACKAGING=1 (CI sets it), which turns a missing
tool into a failure.  VFIO_FLAVOURD_SKIP_PACKAGING=1 skips them.  Nothing
here installs the package on this machine: it is unpacked with dpkg -x.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_packaging_files import example_host, uncomment_examples

TOP = Path(__file__).resolve().parents[1]
PKG = "vfio-flavourd"
SPEC = TOP / "packaging/rpm/vfio-flavourd.spec"
DIST = "usr/lib/python3/dist-packages"

REQUIRE = os.environ.get("VFIO_FLAVOURD_REQUIRE_PACKAGING") == "1"
pytestmark = pytest.mark.skipif(os.environ.get("VFIO_FLAVOURD_SKIP_PACKAGING") == "1",
                                reason="VFIO_FLAVOURD_SKIP_PACKAGING=1")

# Debian 12's debhelper installs units and rules under /lib (see
# packaging/debian/vfio-flavourd.install).
UNITDIR = "/lib/systemd/system"
UDEVRULESDIR = "/lib/udev/rules.d"

# Everything the package ships besides the Python modules, with its mode.
FIXED = {
    "/usr/sbin/vfio-flavourd": 0o755,
    "/usr/libexec/vfio-flavourd/vfio-flavourd-udev": 0o755,
    "/usr/lib/vfio-flavourd/policy.d/10-defaults.yaml": 0o644,
    "/etc/vfio-flavourd/policy.d/50-local.yaml": 0o644,
    "/etc/default/vfio-flavourd": 0o644,
    "/usr/share/man/man8/vfio-flavourd.8.gz": 0o644,
    "/usr/share/man/man5/vfio-flavourd-policy.5.gz": 0o644,
    "/usr/share/bash-completion/completions/vfio-flavourd": 0o644,
    "/usr/share/doc/vfio-flavourd/copyright": 0o644,
    "/usr/share/doc/vfio-flavourd/changelog.Debian.gz": 0o644,
    "/usr/share/doc/vfio-flavourd/migration.md.gz": 0o644,
    "/usr/share/doc/vfio-flavourd/kubernetes.md.gz": 0o644,
    "/usr/share/doc/vfio-flavourd/native-rules.md.gz": 0o644,
    "/usr/share/doc/vfio-flavourd/README.md.gz": 0o644,
    "/usr/share/lintian/overrides/vfio-flavourd": 0o644,
    "/usr/share/initramfs-tools/hooks/vfio-flavourd": 0o755,
    "/usr/lib/dracut/modules.d/90vfio-flavourd/module-setup.sh": 0o755,
    "/etc/kernel/postinst.d/zz-vfio-flavourd": 0o755,
}


def unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"{reason} (VFIO_FLAVOURD_REQUIRE_PACKAGING=1; "
                    "run packaging/install-build-deps)")
    pytest.skip(reason)


def clean_env(**extra) -> dict:
    """What a root shell has: Debian's tools and python3, none of this
    venv's or pytest's environment."""
    env = {"PATH": "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
           "HOME": os.environ.get("HOME", "/root")}
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    env.update(extra)
    return env


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", clean_env())
    # Not the source tree: `python3 -c` would import the package from there.
    kw.setdefault("cwd", "/")
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


class Built:
    def __init__(self, out: Path, seconds: float, log: str):
        self.out = out
        self.seconds = seconds
        self.log = log
        self.deb = next(out.glob(f"{PKG}_*_all.deb"))
        self.changes = next(out.glob(f"{PKG}_*.changes"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    for tool in ("dpkg-buildpackage", "dpkg-checkbuilddeps", "dpkg-deb", "lintian"):
        if shutil.which(tool, path=clean_env()["PATH"]) is None:
            unavailable(f"{tool} is not installed")
    r = run(["dpkg-checkbuilddeps", TOP / "packaging/debian/control"])
    if r.returncode != 0:
        unavailable(r.stderr.strip().splitlines()[-1])
    out = tmp_path_factory.mktemp("deb")
    env = clean_env()
    if "DEB_BUILD_OPTIONS" in os.environ:
        env["DEB_BUILD_OPTIONS"] = os.environ["DEB_BUILD_OPTIONS"]
    start = time.monotonic()
    r = run([TOP / "packaging/build-deb", out], env=env)
    seconds = time.monotonic() - start
    assert r.returncode == 0, f"packaging/build-deb failed:\n{r.stdout[-6000:]}\n{r.stderr[-4000:]}"
    print(f"packaging/build-deb took {seconds:.1f} s", file=sys.stderr)
    return Built(out, seconds, r.stdout + r.stderr)


@pytest.fixture(scope="module")
def unpacked(built, tmp_path_factory) -> Path:
    """The package unpacked as a root directory, with a simulated server's
    sysfs and modules.alias written around it."""
    root = tmp_path_factory.mktemp("installed")
    r = run(["dpkg-deb", "-x", built.deb, root])
    assert r.returncode == 0, r.stderr
    example_host(root)
    return root


def deb_files(deb: Path) -> dict:
    """{path: mode} of the regular files and links in the .deb."""
    r = run(["dpkg-deb", "-c", deb])
    assert r.returncode == 0, r.stderr
    files = {}
    for line in r.stdout.splitlines():
        perms, _owner, _size, _date, _time, name = line.split(None, 5)
        name = name.split(" -> ")[0].lstrip(".")
        if perms.startswith("d"):
            continue
        mode = sum(1 << (8 - i) for i, c in enumerate(perms[1:10]) if c != "-")
        files[name] = mode
    return files


def expected_python_files() -> set:
    return {f"/{DIST}/{p.relative_to(TOP).as_posix()}"
            for p in (TOP / "vfio_flavourd").rglob("*.py") if "__pycache__" not in p.parts}


# -- the .deb's contents ---------------------------------------------------------------


def test_deb_ships_exactly_the_expected_files(built):
    files = deb_files(built.deb)
    expected = dict(FIXED)
    expected.update({f"{UNITDIR}/{p.name}": 0o644 for p in (TOP / "systemd").glob("*.service")})
    expected.update({f"{UDEVRULESDIR}/{p.name}": 0o644
                     for p in (TOP / "udev-rules").glob("*.rules")})
    expected.update({p: 0o644 for p in expected_python_files()})
    dist_info = re.compile(rf"^/{DIST}/vfio_flavourd-[^/]+\.dist-info/[^/]+$")
    got = {p: m for p, m in files.items() if not dist_info.match(p)}
    assert any(dist_info.match(p) for p in files), "no .dist-info metadata (entry points)"
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert (missing, extra) == ([], []), f"missing: {missing}\nunexpected: {extra}"
    wrong = {p: f"{got[p]:o}, want {m:o}" for p, m in expected.items() if got[p] != m}
    assert wrong == {}


def test_deb_conffiles_are_the_admin_policy_unit_environment_and_kernel_hook(built, tmp_path):
    r = run(["dpkg-deb", "-e", built.deb, tmp_path / "control"])
    assert r.returncode == 0, r.stderr
    conffiles = (tmp_path / "control/conffiles").read_text().split()
    assert sorted(conffiles) == ["/etc/default/vfio-flavourd",
                                 "/etc/kernel/postinst.d/zz-vfio-flavourd",
                                 "/etc/vfio-flavourd/policy.d/50-local.yaml"]


def test_deb_control_fields(built):
    def field(name):
        return run(["dpkg-deb", "-f", built.deb, name]).stdout.strip()

    assert field("Package") == PKG
    assert field("Architecture") == "all"
    depends = {d.split()[0] for d in field("Depends").split(", ")}
    assert {"kmod", "python3-yaml", "python3-pyudev", "python3-systemd"} <= depends
    assert any(d.startswith("python3") and d.endswith(":any") or d == "python3"
               for d in depends), depends
    # The initramfs builders are optional: a hook for each, neither required.
    assert field("Suggests") == "initramfs-tools | dracut"
    assert field("Enhances") == "dracut, initramfs-tools"
    assert not {"initramfs-tools", "dracut"} & depends


def test_maintainer_scripts_are_debhelpers_alone(built, tmp_path):
    """Nothing hand-written: every line of every maintainer script is in a
    section debhelper added.  The unit is enabled and (re)started, and
    stopped on removal."""
    run(["dpkg-deb", "-e", built.deb, tmp_path / "control"])
    scripts = {}
    for name in ("preinst", "postinst", "prerm", "postrm"):
        path = tmp_path / "control" / name
        if not path.exists():
            continue
        text = path.read_text()
        scripts[name] = text
        outside = re.sub(r"(?ms)^# Automatically added by dh_.*?^# End automatically added section\n",
                         "", text)
        leftover = [ln for ln in outside.splitlines()
                    if ln.strip() and ln not in ("#!/bin/sh", "set -e")]
        assert leftover == [], f"{name} has lines debhelper did not write: {leftover}"
    unit = f"'{PKG}.service'"
    assert f"deb-systemd-helper enable {unit}" in scripts["postinst"]
    # Both units in one call: the daemon and the one compiling the native rules.
    assert re.search(rf"deb-systemd-invoke \$_dh_action ('[^']+' )*{re.escape(unit)}",
                     scripts["postinst"])
    assert "deb-systemd-helper enable 'vfio-flavourd-rules.service'" in scripts["postinst"]
    assert re.search(rf"deb-systemd-invoke stop ('[^']+' )*{re.escape(unit)}", scripts["prerm"])


def test_lintian_reports_no_errors_or_warnings(built):
    r = run(["lintian", "--fail-on", "error", "--info", built.changes])
    tags = [ln for ln in r.stdout.splitlines() if re.match(r"^[EW]: ", ln)]
    assert r.returncode == 0 and tags == [], (
        "lintian (fix it, or justify it in packaging/debian/vfio-flavourd.lintian-overrides):\n"
        + r.stdout + r.stderr)


# -- the installed package works -----------------------------------------------------------


def by_shebang(script: Path, drop=()) -> list:
    """argv that runs `script` with the interpreter its #! line names, as
    exec would, but also where the temporary directory is mounted noexec."""
    first = script.read_text().splitlines()[0]
    assert first.startswith("#!/usr/bin/python3"), f"{script}: {first}"
    return [a for a in first[2:].split() if a not in drop] + [str(script)]


def installed(root: Path, *args, **extra_env) -> subprocess.CompletedProcess:
    """The unpacked entry point, run by its own #! line (Debian's python3),
    with only the unpacked modules on the path."""
    env = clean_env(PYTHONPATH=str(root / DIST), **extra_env)
    return run(sbin(root) + ["--root", root, *args], env=env)


def sbin(root: Path) -> list:
    """The command by its #! line, without the -IS that would ignore the
    PYTHONPATH pointing at the unpacked modules."""
    return by_shebang(root / "usr/sbin/vfio-flavourd", drop=("-IS",))


@pytest.fixture(scope="module")
def runnable(unpacked) -> Path:
    r = run(["/usr/bin/python3", "-c", "import yaml, vfio_flavourd; print(vfio_flavourd.__file__)"],
            env=clean_env(PYTHONPATH=str(unpacked / DIST)))
    if r.returncode != 0:
        unavailable(f"Debian's python3 cannot run the package (python3-yaml missing?): "
                    f"{r.stderr.strip().splitlines()[-1]}")
    assert r.stdout.strip().startswith(str(unpacked / DIST)), r.stdout
    return unpacked


@pytest.mark.parametrize("launcher", ["usr/sbin/vfio-flavourd",
                                      "usr/libexec/vfio-flavourd/vfio-flavourd-udev"])
def test_launchers_are_told_where_the_modules_are_and_skip_site(runnable, tmp_path, launcher):
    """debian/rules writes dist-packages into both launchers: with -IS they
    find the modules there without importing site."""
    text = (runnable / launcher).read_text()
    assert f'\nSITE_DIRS: list = ["/{DIST}"]\n' in text
    # The same launcher pointed at the unpacked tree, then this machine's
    # dist-packages for python3-yaml, run by its #! line.
    copy = tmp_path / "launcher"
    copy.write_text(text.replace(f'["/{DIST}"]', repr([str(runnable / DIST), f"/{DIST}"])))
    argv = by_shebang(copy)
    assert argv[1] == "-IS"
    sbin = "sbin" in launcher
    r = run(argv[:2] + ["-X", "importtime"] + argv[2:]
            + (["--root", str(runnable), "check-config"] if sbin else ["0000:00:1f.0"]),
            env=clean_env(VFIO_FLAVOURD_ROOT=str(runnable)))
    imported = {ln.split("|")[-1].strip() for ln in r.stderr.splitlines()
                if ln.startswith("import time:")}
    assert "vfio_flavourd" in imported and "site" not in imported, r.stderr[-2000:]
    assert r.returncode == 0, r.stderr[-2000:]
    if sbin:
        assert r.stdout.startswith("ok: 1 rules in 2 files"), r.stdout


def test_installed_plan_with_the_shipped_policy_binds_nothing(runnable):
    r = installed(runnable, "check-config")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "ok: 1 rules in 2 files"
    r = installed(runnable, "plan", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 7
    assert {row["action"] for row in rows} == {"none"}
    assert {row["address"] for row in rows if row["rule"]} == {
        "0000:00:00.0", "0000:00:01.0", "0000:00:1f.0"}


def test_installed_plan_and_callout_with_the_admin_examples(runnable, tmp_path):
    conffile = runnable / "etc/vfio-flavourd/policy.d/50-local.yaml"
    shipped = conffile.read_text()
    conffile.write_text(uncomment_examples(shipped))
    try:
        r = installed(runnable, "plan", "--json")
        assert r.returncode == 0, r.stderr
        got = {row["address"]: (row["rule"], row["module"], row["action"])
               for row in json.loads(r.stdout)}
        assert got["0000:3b:00.2"] == ("mlx5-vfs", "mlx5_vfio_pci", "bind")
        assert got["0000:3b:00.3"] == ("mlx5-vfs", "mlx5_vfio_pci", "bind")
        # The callout, as udev runs it, on a device its host driver holds:
        # it names the rule and module and, the device being bound, leaves
        # driver_override (and modprobe) alone.
        callout = runnable / "usr/libexec/vfio-flavourd/vfio-flavourd-udev"
        # Without its -IS, which would ignore the PYTHONPATH that points at
        # the unpacked modules.
        r = run(by_shebang(callout, drop=("-IS",)) + ["0000:3b:00.2"],
                env=clean_env(PYTHONPATH=str(runnable / DIST), VFIO_FLAVOURD_ROOT=str(runnable)))
        assert (r.returncode, r.stderr) == (0, "")
        assert r.stdout.splitlines() == ["VFIO_FLAVOURD_RULE=mlx5-vfs",
                                         "VFIO_FLAVOURD_MODULE=mlx5_vfio_pci"]
    finally:
        conffile.write_text(shipped)


def test_installed_daemon_starts_notifies_and_stops(runnable, tmp_path):
    """`daemon --dry-run` on the simulated host: READY=1 after coldplug,
    exit 0 on SIGTERM.  It listens to this machine's uevents, but a dry run
    against another root changes nothing."""
    sock_path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    env = clean_env(PYTHONPATH=str(runnable / DIST), NOTIFY_SOCKET=str(sock_path))
    argv = sbin(runnable)
    proc = subprocess.Popen(argv + ["--root", str(runnable), "daemon", "--dry-run"],
                            env=env, text=True, cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        messages = []
        while not any("READY=1" in m for m in messages):
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                break
            if proc.poll() is not None:
                break
        if proc.poll() is not None and not messages:
            err = proc.stderr.read()
            if "cannot listen for uevents" in err:
                unavailable(f"no uevent netlink socket here: {err.strip()}")
            pytest.fail(f"the daemon exited with {proc.returncode}:\n{err}")
        assert any("READY=1" in m for m in messages), messages
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "coldplug done: 7 devices" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()


# -- the RPM spec ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parsed_spec() -> str:
    if shutil.which("rpmspec", path=clean_env()["PATH"]) is None:
        unavailable("rpmspec is not installed (Debian package rpm)")
    r = run(["rpmspec", "-P", SPEC])
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_rpm_spec_parses(parsed_spec):
    assert "%config(noreplace) /etc/vfio-flavourd/policy.d/50-local.yaml" in parsed_spec
    for scriptlet in ("systemd_post", "systemd_preun", "systemd_postun_with_restart"):
        assert re.search(rf"^%{scriptlet} {PKG}\.service( \S+)*$", parsed_spec, re.M) \
            or "systemctl" in parsed_spec


def test_rpm_spec_ships_what_the_deb_ships(built, parsed_spec):
    """Every file of the .deb but Debian's own docs, at its Fedora path
    (units and rules under /usr/lib), is covered by a %files line."""
    files_section = parsed_spec.split("\n%files", 1)[1].split("\n%changelog", 1)[0]
    patterns = []
    for line in files_section.splitlines()[1:]:
        line = re.sub(r"^(%\w+(\([^)]*\))?\s+)+", "", line.strip())
        if line.startswith("/"):
            patterns.append(line)
    uncovered = []
    for path in deb_files(built.deb):
        if path.startswith(("/usr/share/doc/", "/usr/share/lintian/", f"/{DIST}/")):
            continue   # Debian's own; the modules come from %pyproject_save_files
        fedora = re.sub(r"^/lib/", "/usr/lib/", path)
        if not any(fnmatch.fnmatch(fedora, p) or fnmatch.fnmatch(fedora, p + "*")
                   or (p.endswith("/") and fedora.startswith(p)) for p in patterns):
            uncovered.append(fedora)
    assert uncovered == [], f"not in the spec's %files: {uncovered}"
