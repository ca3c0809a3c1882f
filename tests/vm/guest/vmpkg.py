"""The Debian packages in the vm-test guest: install, run as systemd would.

The host builds vfio-flavourd's .deb and downloads (and unpacks) driverctl's
into the cache (tests/vm/debs.py) and names them in vm.json. vfio-flavourd's
is installed with `dpkg -i`, which writes only into the guest's root
overlay; driverctl's files are copied in (copy_in). The overlay's upper
layer is a tmpfs, its lower layers (the host's root among them) are 9p
shares that QEMU exports read-only. The host runner checks after the run
that the host's dpkg database and the package paths did not change.

Systemd is not PID 1 in the guest, so the daemon runs from its installed
unit file by hand: ExecStartPre, then ExecStart, with the environment a
system service gets (a bare PATH, and a NOTIFY_SOCKET that this module
listens on to see READY=1).
"""

import os
import shlex
import socket
import subprocess
import time

import vmguest as g

PKG = "vfio-flavourd"
SBIN = "/usr/sbin/vfio-flavourd"
CALLOUT = "/usr/libexec/vfio-flavourd/vfio-flavourd-udev"
UNIT = "/lib/systemd/system/vfio-flavourd.service"
RULE = "/lib/udev/rules.d/70-vfio-flavourd.rules"
ETC_POLICY = "/etc/vfio-flavourd/policy.d"
# What systemd gives a system service (no PYTHONPATH, no venv, no cwd).
SERVICE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8"}
# man-db's dpkg trigger rebuilds the whole man database (minutes under TCG);
# Debian's own switch for that is this file (debconf man-db/auto-update).
MANDB_AUTO_UPDATE = "/var/lib/man-db/auto-update"


class InstallError(Exception):
    pass


class NotPrepared(Exception):
    """The run was asked for no packages (--no-packages): skip, not fail."""


def package_info(name):
    """vm.json's entry for a package the host prepared: deb (and root for an
    unpacked one), or error and log_tail; raises NotPrepared when the run
    opted out."""
    info = g.vm_info().get("packages", {}).get(name) or {"error": "the host runner prepared "
                                                         f"no {name} package"}
    if info.get("skipped"):
        raise NotPrepared(info["skipped"])
    return info


def dpkg_status(pkg):
    res = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", pkg],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return res.stdout.strip() if res.returncode == 0 else "not known"


def _dpkg(*args):
    g._guard()  # dpkg in the guest's overlay only, never on a host
    env = dict(SERVICE_ENV, DEBIAN_FRONTEND="noninteractive")
    res = subprocess.run(["dpkg", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, stdin=subprocess.DEVNULL, timeout=300)
    return res.returncode, res.stdout


def install(name, *dpkg_opts):
    """dpkg -i the host-built .deb of `name`; returns (info, seconds, dpkg output)."""
    info = package_info(name)
    if info.get("error"):
        raise InstallError(f"{name}: {info['error']}\n{info.get('log_tail', '')}")
    if os.path.exists(MANDB_AUTO_UPDATE):
        os.unlink(MANDB_AUTO_UPDATE)
    t0 = time.monotonic()
    rc, out = _dpkg("-i", *dpkg_opts, info["deb"])
    seconds = time.monotonic() - t0
    if rc != 0:
        raise InstallError(f"dpkg -i {' '.join(dpkg_opts)} {info['deb']} exited {rc}:\n{out}")
    return info, seconds, out


def copy_in(name):
    """Put the files of a package the host unpacked (`root` in vm.json,
    bin/ and lib/ already moved under usr/) into the guest's root with cp:
    a second dpkg -i would cost another 10 to 20 s under TCG. For driverctl,
    which has no maintainer scripts. Returns (info, seconds)."""
    g._guard()
    info = package_info(name)
    if info.get("error"):
        raise InstallError(f"{name}: {info['error']}")
    t0 = time.monotonic()
    subprocess.run(["cp", "-a", "--", info["root"] + "/.", "/"], check=True)
    return info, time.monotonic() - t0


def unit_service_section(path=UNIT):
    """The [Service] settings of a unit file: {key: [values]} (Exec lines
    keep their order; no line continuations in ours)."""
    out, section = {}, None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section == "Service" and "=" in line:
                k, v = line.split("=", 1)
                out.setdefault(k.strip(), []).append(v.strip())
    return out


def exec_argv(value):
    """systemd's Exec line: strip the prefixes (- @ : + !), split as a shell
    would (no $VAR expansion is used in ours)."""
    ignore_failure = False
    while value and value[0] in "-@:+!":
        ignore_failure |= value[0] == "-"
        value = value[1:]
    return shlex.split(value), ignore_failure


class NotifySocket:
    """A NOTIFY_SOCKET as systemd provides to a Type=notify service."""

    def __init__(self):
        self.path = f"/run/vmtest-notify-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages = []

    def poll(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append((time.monotonic(), data.decode(errors="replace")))

    def ready_at(self):
        for t, msg in self.poll():
            if "READY=1" in msg.split("\n"):
                return t
        return None

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def service_env(unit):
    env = dict(SERVICE_ENV)
    rdir = unit.get("RuntimeDirectory", [None])[0]
    if rdir:
        env["RUNTIME_DIRECTORY"] = f"/run/{rdir}"
    return env


def start_unit(daemon_factory, log_name="installed"):
    """Start the installed unit as systemd would, minus the sandboxing: the
    RuntimeDirectory with its mode, UMask, each ExecStartPre (must succeed
    unless prefixed with -), then ExecStart, with a NOTIFY_SOCKET.
    daemon_factory(argv, env, preexec) starts the process (the scenarios'
    Daemon, so that clean_slate stops it). Returns (daemon, notify, unit)."""
    unit = unit_service_section()
    rdir = unit.get("RuntimeDirectory", [None])[0]
    if rdir:
        mode = int(unit.get("RuntimeDirectoryMode", ["0755"])[0], 8)
        os.makedirs(f"/run/{rdir}", exist_ok=True)
        os.chmod(f"/run/{rdir}", mode)
    umask = int(unit.get("UMask", ["0022"])[0], 8)
    env = service_env(unit)
    for line in unit.get("ExecStartPre", []):
        argv, may_fail = exec_argv(line)
        res = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=120, cwd="/", preexec_fn=lambda: os.umask(umask))
        if res.returncode != 0 and not may_fail:
            raise AssertionError(f"ExecStartPre={line} exited {res.returncode}:\n{res.stdout}")
    (line,) = unit["ExecStart"]
    argv, _ = exec_argv(line)
    notify = NotifySocket()
    env["NOTIFY_SOCKET"] = notify.path
    d = daemon_factory(argv, env, lambda: os.umask(umask))
    return d, notify, unit


def run_installed(*args, check=True, timeout=120):
    """The installed command, as root would run it from a shell: no venv, no
    PYTHONPATH, from /."""
    res = subprocess.run([SBIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(SERVICE_ENV), cwd="/", timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{SBIN} {' '.join(args)} exited {res.returncode}\n"
                             f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}")
    return res
