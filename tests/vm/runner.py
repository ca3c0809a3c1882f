#!/usr/bin/env python3
"""Boot Debian's 6.12 kernel under QEMU and run a payload in it.

The guest (q35, emulated Intel IOMMU, PCIe root ports) sees the host's root
read-only with a tmpfs overlay, so the project's venv and this checkout run
there unchanged. A writable 9p share (/run/vmtest in the guest) carries the
payload in and the results out, and lets guest tests ask the host for QMP
commands such as device_add/device_del (see README.md, "Hotplug requests").

    python3 tests/vm/runner.py [--venv DIR] [-- PYTEST-ARGS...]

runs pytest on tests/vm/guest/ inside the guest and prints the per-test
lines, the timings and a closing "N passed, M failed" line. Stdlib only.
"""

import argparse
import select
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import setup  # noqa: E402  (tests/vm/setup.py, next to this file)
import debs  # noqa: E402  (tests/vm/debs.py: the .debs the guest installs)
from stall import StallWatch  # noqa: E402  (tests/vm/stall.py)

# PCIe root ports: (qdev id, parent bus, slot address, the port's address in
# the guest). The guest finds the device behind a port as that port's child
# in sysfs. rp6 hangs off an extra PCIe root bus (pxb-pcie) whose devices
# bypass the IOMMU: they get no IOMMU group, so every vfio driver's probe
# fails on them, a real probe failure for the fault scenarios.
PORTS = [("rp1", "pcie.0", 0x10, "0000:00:10.0"),
         ("rp2", "pcie.0", 0x11, "0000:00:11.0"),
         ("rp3", "pcie.0", 0x12, "0000:00:12.0"),
         ("rp4", "pcie.0", 0x13, "0000:00:13.0"),
         ("rp5", "pcie.0", 0x14, "0000:00:14.0"),
         ("rp6", "pxb1", 0x00, "0000:80:00.0"),
         # Added for the guards scenarios (vmtest_guards.py), after the
         # others so that no existing port or device moves.
         ("rp7", "pcie.0", 0x15, "0000:00:15.0"),
         ("rp8", "pcie.0", 0x16, "0000:00:16.0")]
EXTRA_ROOT = "pxb-pcie,id=pxb1,bus=pcie.0,addr=0x1e,bus_nr=0x80,bypass_iommu=true"
# Cold-plugged devices. romfile= keeps QEMU from loading option ROMs the
# guest never uses. No -netdev: the NICs are only there to be bound.
DEVICES = [
    {"id": "nic0", "role": "e1000e", "port": "rp1",
     "qdev": {"driver": "e1000e", "romfile": ""}},
    # Modern-only virtio-net: PCI device 0x1041, the id virtio_vfio_pci
    # claims. (A transitional one is 0x1000.)
    {"id": "vnet1", "role": "virtio-net", "port": "rp2",
     "qdev": {"driver": "virtio-net-pci", "disable-legacy": "on", "romfile": ""}},
    # Same ids, other address: the one a policy leaves to its host driver.
    {"id": "vnet2", "role": "virtio-net-2", "port": "rp3",
     "qdev": {"driver": "virtio-net-pci", "disable-legacy": "on", "romfile": ""}},
    # Same ids again, with no IOMMU group: vfio probes fail on it.
    {"id": "vnet6", "role": "virtio-net-no-iommu", "port": "rp6",
     "qdev": {"driver": "virtio-net-pci", "disable-legacy": "on", "romfile": ""}},
    # Two NVMe disks, each on a sparse raw image in the run directory: one
    # for a mounted btrfs, one left empty (the guards scenarios).
    {"id": "nvme-btrfs", "role": "nvme-btrfs", "port": "rp7", "image_mib": 256,
     "qdev": {"driver": "nvme", "serial": "vmtest-btrfs"}},
    {"id": "nvme-empty", "role": "nvme-empty", "port": "rp8", "image_mib": 64,
     "qdev": {"driver": "nvme", "serial": "vmtest-empty"}},
]
# A 9p share besides the root's, from a directory of the run directory with
# one file in it; mounted only by the guards scenarios.
EXTRA_SHARE = "vmshare"
FREE_PORTS = {"rp4": "hotplug", "rp5": "spare (fault checks)"}
GUEST_SHARE = "/run/vmtest"
POWEROFF_GRACE = 60
# A guest whose kernel stopped (stall.StallWatch) is killed at once, and the
# whole payload run again in a new one, this many times at most: a
# stopped kernel says nothing of the tests, and the half hour to the
# timeout would say nothing more.
STALL_RERUNS = int(os.environ.get("VFIO_FLAVOURD_VM_STALL_RERUNS", "2"))
# What the guest's `dpkg -i` would change if it ever reached the host: the
# runner compares these before and after a run (see host_fingerprint).
HOST_WATCH_PACKAGES = ["vfio-flavourd", "driverctl"]
HOST_WATCH_PATHS = [
    "/usr/sbin/vfio-flavourd", "/usr/libexec/vfio-flavourd", "/etc/vfio-flavourd",
    "/usr/lib/vfio-flavourd", "/usr/lib/python3/dist-packages/vfio_flavourd",
    "/lib/systemd/system/vfio-flavourd.service", "/lib/udev/rules.d/70-vfio-flavourd.rules",
    "/etc/systemd/system/multi-user.target.wants/vfio-flavourd.service",
    "/usr/sbin/driverctl", "/etc/driverctl.d", "/lib/udev/rules.d/05-driverctl.rules",
]


def qdev_arg(props):
    props = dict(props)
    parts = [props.pop("driver")]
    for k, v in props.items():
        parts.append(f"{k}={v}")
    return ",".join(parts)


class QMP:
    """Minimal QMP client: commands are matched to replies by id, events are
    kept in order so a caller can wait for one that follows its command."""

    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rb")
        self.lock = threading.Lock()
        self.cond = threading.Condition()
        self.replies = {}
        self.events = []
        self.next_id = 0
        self.closed = False
        json.loads(self.file.readline())  # greeting
        self.sock.sendall(b'{"execute": "qmp_capabilities"}\n')
        json.loads(self.file.readline())
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        try:
            for line in self.file:
                msg = json.loads(line)
                with self.cond:
                    if "event" in msg:
                        self.events.append(msg)
                    elif "id" in msg:
                        self.replies[msg["id"]] = msg
                    self.cond.notify_all()
        except (OSError, ValueError):
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def execute(self, command, arguments=None, timeout=30):
        with self.lock:
            self.next_id += 1
            cid = f"c{self.next_id}"
            msg = {"execute": command, "id": cid}
            if arguments:
                msg["arguments"] = arguments
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        with self.cond:
            ok = self.cond.wait_for(lambda: cid in self.replies or self.closed, timeout)
            if cid not in self.replies:
                raise TimeoutError(f"no QMP reply to {command}" if not ok else "QMP closed")
            reply = self.replies.pop(cid)
        reply.pop("id", None)
        return reply

    def event_count(self):
        with self.cond:
            return len(self.events)

    def wait_event(self, name, data=None, since=0, timeout=30):
        def match():
            for ev in self.events[since:]:
                if ev["event"] == name and all(ev.get("data", {}).get(k) == v
                                               for k, v in (data or {}).items()):
                    return ev
            return None
        with self.cond:
            self.cond.wait_for(lambda: match() is not None or self.closed, timeout)
            return match()


class _Inotify:
    """wait(timeout): returns when a file is moved into `directory` or
    the timeout passes; with no inotify (ENOSYS, a full watch table),
    after the timeout alone."""

    IN_MOVED_TO, IN_NONBLOCK, IN_CLOEXEC = 0x80, 0o4000, 0o2000000

    def __init__(self, directory):
        import ctypes
        self.fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(directory),
                                                  self.IN_MOVED_TO) < 0:
                os.close(fd)
                fd = -1
            self.fd = fd
        except (OSError, AttributeError):
            self.fd = -1

    def wait(self, timeout):
        if self.fd < 0:
            time.sleep(timeout)
            return
        if select.select([self.fd], [], [], timeout)[0]:
            try:
                while os.read(self.fd, 4096):
                    pass
            except BlockingIOError:
                pass

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Broker(threading.Thread):
    """Serves the guest's requests: it writes requests/<name>.json, we run it
    over QMP and write answers/<name>.json (each via rename, so neither side
    reads a half-written file). Each request gets its own thread, so a
    device_del waiting for DEVICE_DELETED holds up nothing else."""

    def __init__(self, share, qmp, log):
        super().__init__(daemon=True)
        self.req = os.path.join(share, "requests")
        self.ans = os.path.join(share, "answers")
        self.qmp, self.log = qmp, log
        self.stop = threading.Event()
        self.seen = set()

    def run(self):
        # Woken by inotify when the guest's rename lands (QEMU's 9p server
        # renames in this directory), else every 20 ms: a 20 ms poll put
        # 0 to 20 ms of noise into every request, device_add's included,
        # which benchmark figure 7 times.
        wake = _Inotify(self.req)
        try:
            while not self.stop.is_set():
                wake.wait(0.02)
                try:
                    names = sorted(os.listdir(self.req))
                except FileNotFoundError:
                    continue
                for name in names:
                    if name.endswith(".json") and name not in self.seen:
                        self.seen.add(name)
                        threading.Thread(target=self.serve, args=(name,), daemon=True).start()
        finally:
            wake.close()

    def serve(self, name):
        t0 = time.monotonic()
        path = os.path.join(self.req, name)
        req = None
        try:
            with open(path) as f:
                req = json.load(f)
            timeout = float(req.get("timeout", 30))
            since = self.qmp.event_count()
            answer = self.qmp.execute(req["execute"], req.get("arguments"), timeout)
            wait = req.get("wait_event")
            if wait and "error" not in answer:
                ev = self.qmp.wait_event(wait["event"], wait.get("data"), since, timeout)
                answer["event"] = ev
                if ev is None:
                    answer["error"] = {"class": "Timeout",
                                       "desc": f"no {wait['event']} within {timeout}s"}
        except Exception as e:  # the guest gets the failure, not a hang
            answer = {"error": {"class": type(e).__name__, "desc": str(e)}}
        answer["host_seconds"] = round(time.monotonic() - t0, 3)
        self.log(f"qmp request {name}: {json.dumps(req)} -> "
                 f"{json.dumps(answer)}")
        tmp = os.path.join(self.ans, "." + name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(answer, f)
        os.rename(tmp, os.path.join(self.ans, name))


class Guest:
    def __init__(self, manifest, rundir, memory=1024, smp=2, verbose=False, packages=None):
        self.m = manifest
        self.packages = packages or {}
        self.rundir = rundir
        self.share = os.path.join(rundir, "share")
        self.console_path = os.path.join(rundir, "console.log")
        self.qmp_path = os.path.join(rundir, "qmp.sock")
        self.memory, self.smp, self.verbose = memory, smp, verbose
        self.host_log = []
        self.boot_seconds = None
        self.guest_uptime_at_stage2 = None
        self.timed_out = False
        # Why the guest's kernel counts as stopped (stall.StallWatch), if it did.
        self.stall = StallWatch()
        self.qemu_status = None
        self.total_seconds = 0.0

    def log(self, msg):
        self.host_log.append(msg)
        if self.verbose:
            print(f"vm-runner: {msg}", flush=True)

    def qemu_argv(self):
        cmdline = " ".join([
            "console=ttyS0", "panic=-1", "quiet", "intel_iommu=on", "iommu=pt",
            "rdinit=/init",
            f"vmtest.stage2={os.path.join(HERE, 'guest-init.sh')}",
            "vmtest.lower=mods,udev", "vmtest.out=out",
        ])
        argv = [
            "qemu-system-x86_64",
            # The host's KVM runs only PVM guests: an ordinary kernel needs TCG.
            "-accel", "tcg", "-machine", "q35", "-cpu", "max",
            "-smp", str(self.smp), "-m", str(self.memory),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "stdio", "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-kernel", self.m["vmlinuz"], "-initrd", self.m["initramfs"],
            "-append", cmdline,
        ]
        for tag, path, ro in [("hostroot", "/", True),
                              ("mods", self.m["modules_layer"], True),
                              ("udev", self.m["udev_layer"], True),
                              ("out", self.share, False)]:
            argv += ["-virtfs", f"local,path={path},mount_tag={tag},security_model=none,"
                     f"multidevs=remap{',readonly=on' if ro else ''}"]
        share_dir = os.path.join(self.rundir, EXTRA_SHARE)
        os.makedirs(share_dir, exist_ok=True)
        with open(os.path.join(share_dir, "held"), "w") as f:
            f.write("a file the guards scenario keeps open\n")
        argv += ["-virtfs", f"local,path={share_dir},mount_tag={EXTRA_SHARE},"
                 "security_model=none,multidevs=remap,readonly=on"]
        argv += ["-device", "intel-iommu,intremap=on"]
        argv += ["-device", EXTRA_ROOT]
        for i, (name, bus, addr, _) in enumerate(PORTS, 1):
            argv += ["-device", f"pcie-root-port,id={name},bus={bus},chassis={i},"
                     f"slot={i},addr={addr:#x}"]
        for dev in DEVICES:
            qdev = {**dev["qdev"], "id": dev["id"], "bus": dev["port"]}
            if "image_mib" in dev:
                image = os.path.join(self.rundir, f"{dev['id']}.img")
                with open(image, "wb") as f:
                    f.truncate(dev["image_mib"] << 20)
                argv += ["-drive", f"file={image},if=none,id={dev['id']}-drive,format=raw"]
                qdev["drive"] = f"{dev['id']}-drive"
            argv += ["-device", qdev_arg(qdev)]
        return argv

    def write_share(self, payload):
        os.makedirs(os.path.join(self.share, "requests"))
        os.makedirs(os.path.join(self.share, "answers"))
        info = {
            "ports": {name: guest_addr for name, _, _, guest_addr in PORTS},
            "devices": {d["role"]: {"id": d["id"], "port": d["port"], **d["qdev"]}
                        for d in DEVICES},
            "free_ports": FREE_PORTS,
            "extra_share": EXTRA_SHARE,
            "kernel_release": self.m["kernel_release"],
            "linux_source": self.m["linux_source"],
            "repo": REPO,
            # .debs the host prepared for the guest to dpkg -i (debs.py):
            # {"deb": path} or {"error": why, "log_tail": ...}.
            "packages": self.packages,
            "qemu": {"accel": "tcg", "cpu": "max", "smp": self.smp, "memory_mib": self.memory},
        }
        with open(os.path.join(self.share, "vm.json"), "w") as f:
            json.dump(info, f, indent=2)
        with open(os.path.join(self.share, "payload.sh"), "w") as f:
            f.write(payload)

    def run(self, payload, timeout, stream=None):
        """Boot, run the payload, return its exit code (None if the guest
        never reported one: crash, hang or timeout)."""
        self.write_share(payload)
        t0 = time.monotonic()
        console = open(self.console_path, "wb")
        proc = subprocess.Popen(self.qemu_argv(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def pump():
            for line in iter(proc.stdout.readline, b""):
                console.write(line)
                console.flush()
                self.stall.feed(line.decode(errors="replace"))
                if self.verbose:
                    sys.stdout.write("console: " + line.decode(errors="replace"))
        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        broker = None
        tail = Tail(os.path.join(self.share, "payload.log"), stream)
        try:
            qmp = QMP(self.qmp_path)
            broker = Broker(self.share, qmp, self.log)
            broker.start()
            booted = os.path.join(self.share, "booted")
            deadline = t0 + timeout
            exitcode = os.path.join(self.share, "exitcode")
            while proc.poll() is None and time.monotonic() < deadline:
                if self.boot_seconds is None and os.path.exists(booted):
                    self.boot_seconds = time.monotonic() - t0
                    with open(booted) as f:
                        self.guest_uptime_at_stage2 = float(f.read().strip() or 0)
                # Power-off takes each device's lock (device_shutdown): a
                # driver remove() still looping in the guest's kernel (the
                # guards scenario's hung unbind, if a test failed to end it)
                # would block it for ever. The exit code is in by then.
                if os.path.exists(exitcode) and deadline > time.monotonic() + POWEROFF_GRACE:
                    deadline = time.monotonic() + POWEROFF_GRACE
                    self.log(f"guest stored its exit code; QEMU gets {POWEROFF_GRACE} s "
                             "to power off")
                tail.pump()
                if self.stall.stopped and not os.path.exists(exitcode):
                    self.log(f"guest stopped: {self.stall.stopped}; killing QEMU")
                    proc.kill()
                    proc.wait()
                    break
                time.sleep(0.05)
            if proc.poll() is None and os.path.exists(exitcode):
                self.log(f"guest did not power off within {POWEROFF_GRACE} s of storing its "
                         "exit code; killing QEMU")
                proc.kill()
                proc.wait()
            if proc.poll() is None:
                self.log(f"guest timed out after {timeout}s; killing QEMU")
                self.timed_out = True
                proc.kill()
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if broker:
                broker.stop.set()
            pumper.join(5)
            console.close()
            tail.pump(final=True)
        self.qemu_status = proc.returncode
        self.total_seconds = time.monotonic() - t0
        try:
            with open(os.path.join(self.share, "exitcode")) as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def console(self):
        with open(self.console_path, errors="replace") as f:
            return f.read()


class Tail:
    """Copies what the guest appends to a share file onto our stdout."""

    def __init__(self, path, stream):
        self.path, self.stream, self.pos = path, stream, 0

    def pump(self, final=False):
        if self.stream is None:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        # Only whole lines, so guest and host output never interleave mid-line.
        cut = len(data) if final else data.rfind(b"\n") + 1
        if cut:
            self.stream.write(data[:cut].decode(errors="replace"))
            self.stream.flush()
            self.pos += cut


def pytest_payload(python, pytest_args):
    # The guest tests are vmtest_*.py and their plugin is not a conftest.py,
    # so that a host pytest run never collects or loads them (vm_plugin.py).
    argv = [python, "-m", "pytest", "-p", "no:cacheprovider", "-p", "vm_plugin",
            "-o", "python_files=vmtest_*.py", "--color=no", "-v",
            f"--junitxml={GUEST_SHARE}/junit.xml", "tests/vm/guest", *pytest_args]
    return "\n".join([
        "# written by tests/vm/runner.py; run by tests/vm/guest-init.sh",
        f"cd {shlex.quote(REPO)} || exit 97",
        "export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1",
        f"export PYTHONPATH={shlex.quote(os.path.join(REPO, 'tests/vm/guest'))}"
        "${PYTHONPATH:+:$PYTHONPATH}",
        f"exec {shlex.join(argv)}",
        "",
    ])


def junit_counts(path):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    n = {k: sum(int(s.get(k, 0)) for s in suites)
         for k in ("tests", "failures", "errors", "skipped")}
    failed = n["failures"] + n["errors"]
    return n["tests"] - failed - n["skipped"], failed, n["skipped"]


def host_fingerprint():
    """What a package installed on the host would change: dpkg's view of the
    guest's packages and whether their paths exist. Compared before and after
    the run (a guest dpkg -i must change none of it)."""
    fp = {p: os.path.lexists(p) for p in HOST_WATCH_PATHS}
    for pkg in HOST_WATCH_PACKAGES:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", pkg],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        fp[f"dpkg {pkg}"] = res.stdout.strip() if res.returncode == 0 else "not known"
    return fp


def results_path():
    """Where the benchmark's figure 7 lands on the host (bench/ reads it)."""
    return os.environ.get("VFIO_FLAVOURD_VM_RESULTS") or os.path.join(
        setup.cache_root(), "results", "last-bench.json")


def git_describe():
    def git(*a):
        res = subprocess.run(["git", "-C", REPO, *a], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        return res.stdout.strip() if res.returncode == 0 else None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(status) if status is not None else None}


def save_bench(share, manifest, packages, loadavg_before):
    """Copy the guest's bench.json (figure 7) to results_path(), with the
    host's side of the story added. A run whose benchmark did not complete
    goes next to it as failed-bench.json and leaves the last good one."""
    src = os.path.join(share, "bench.json")
    if not os.path.exists(src):
        return None, None
    with open(src) as f:
        bench = json.load(f)
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], stdout=subprocess.PIPE,
                          text=True).stdout.splitlines()
    bench["host"] = {
        **git_describe(),
        "deb_key": packages.get("vfio-flavourd", {}).get("key"),
        "kernel_release": manifest["kernel_release"],
        "qemu": qemu[0] if qemu else None,
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    dest = results_path()
    if not bench.get("complete"):
        dest = os.path.join(os.path.dirname(dest), "failed-bench.json")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = f"{dest}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(bench, f, indent=2)
        f.write("\n")
    os.rename(tmp, dest)
    return bench, dest


def bench_rows(bench):
    """The summary's lines for figure 7."""
    rows = []
    for key, label in (("hotplug_kernel_events", "hotplug: device_add to bound, daemon on kernel events"),
                       ("hotplug_udev_events", "hotplug: device_add to bound, udevd + rule + daemon")):
        h = bench.get(key)
        if h and h.get("median_request_to_bound_s") is not None:
            runs = ", ".join(f"{x:.2f}" for x in h["request_to_bound_s"])
            rows.append(f"{label}: median {h['median_request_to_bound_s']:.3f} s "
                        f"of {len(h['request_to_bound_s'])} ({runs})")
            raw = h.get("raw")
            if raw and h.get("ratio_to_raw") is not None:
                rows.append(f"  raw sysfs sequence, no daemon: median "
                            f"{raw['median_request_to_bound_s']:.3f} s; daemon / raw "
                            f"{h['ratio_to_raw']:.2f} (target <= 1.2)")
                floor = h.get("floor") or {}
                if h.get("ratio_to_floor") is not None:
                    rows.append(f"  safety floor (the device's lock, the probe's end, the "
                                f"guards, the writer), no daemon: median "
                                f"{floor['median_request_to_bound_s']:.3f} s; floor / raw "
                                f"{h['floor_ratio_to_raw']:.2f}, daemon / floor "
                                f"{h['ratio_to_floor']:.2f}")
                mine = h.get("median_kernel_first_bound_to_unbind_s")
                theirs = raw.get("median_kernel_first_bound_to_unbind_s")
                least = floor.get("median_kernel_first_bound_to_unbind_s")
                if mine is not None and theirs is not None:
                    rows.append(f"  kernel clock, host driver bound to unbind entered: "
                                f"daemon {mine * 1000:.1f} ms, raw {theirs * 1000:.1f} ms"
                                + ("" if least is None else f", floor {least * 1000:.1f} ms"))
    c = bench.get("apply_vs_driverctl")
    if c and c.get("ratio_apply_to_driverctl") is not None:
        rows.append(f"apply vs driverctl set-override, {c['device']}, n={c['n']}: "
                    f"median {c['median_apply_s']:.3f} s vs {c['median_driverctl_s']:.3f} s, "
                    f"ratio {c['ratio_apply_to_driverctl']:.2f} (target < 1.0)")
        rows.append(f"  fastest runs {c['min_apply_s']:.3f} s vs {c['min_driverctl_s']:.3f} s, "
                    f"ratio {c['ratio_min_apply_to_driverctl']:.1f}; "
                    f"release {c['median_release_s']:.3f} s vs unset-override "
                    f"{c['median_driverctl_unset_s']:.3f} s, ratio "
                    f"{c.get('ratio_release_to_driverctl_unset', float('nan')):.2f} "
                    f"(target < 1.0)")
        rows.append(f"  for scale: python3 -c pass {c['median_python3_c_pass_s']:.3f} s; "
                    f"the kernel's part (override, unbind, drivers_probe from the test) "
                    f"{c.get('median_raw_sysfs_rebind_s', float('nan')):.3f} s")
    return rows


def ensure_venv(venv):
    """The project's venv comes from scripts/setup. Without one (a fresh
    clone, or before the package exists) make a harness venv in the cache
    with just what the guest tests need."""
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py):
        return py
    fallback = os.path.join(setup.cache_root(), "venv")
    py = os.path.join(fallback, "bin", "python")
    marker = os.path.join(fallback, ".complete")
    if not os.path.exists(marker):
        print(f"vm-test: no venv at {venv}; creating a harness venv at {fallback}", flush=True)
        shutil.rmtree(fallback, ignore_errors=True)
        if subprocess.run(["/usr/bin/python3", "-c", "import ensurepip"],
                          stderr=subprocess.DEVNULL).returncode != 0:
            setup.ensure_packages(["python3-venv"])
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", fallback],
                       check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "pytest", "pyyaml"], check=True)
        open(marker, "w").close()
    return py


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default=os.environ.get("VFIO_FLAVOURD_VM_VENV",
                                                     os.path.join(REPO, ".venv")),
                    help="venv whose python runs pytest in the guest (default: <repo>/.venv)")
    ap.add_argument("--timeout", type=float,
                    default=float(os.environ.get("VFIO_FLAVOURD_VM_TIMEOUT", 1800)),
                    help="seconds before the guest is killed (default 1800)")
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    ap.add_argument("--verbose", "-V", action="store_true",
                    help="stream the guest console and QMP traffic")
    ap.add_argument("--memory", type=int, default=1024)
    ap.add_argument("--no-packages", action="store_true",
                    help="build no .deb and fetch no driverctl: scenario 8 and the benchmark "
                         "skip (also VFIO_FLAVOURD_SKIP_PACKAGING=1)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = ap.parse_args(argv)

    t_start = time.monotonic()
    manifest = setup.ensure()
    python = ensure_venv(args.venv)
    setup_seconds = time.monotonic() - t_start
    t_pkg = time.monotonic()
    packages = {}
    if args.no_packages or os.environ.get("VFIO_FLAVOURD_SKIP_PACKAGING") == "1":
        why = ("--no-packages" if args.no_packages else "VFIO_FLAVOURD_SKIP_PACKAGING=1")
        packages = {name: {"skipped": f"{why}: the host prepared no package"}
                    for name in ("vfio-flavourd", "driverctl")}
    else:
        packages = {"vfio-flavourd": debs.ensure_vfio_flavourd_deb(),
                    "driverctl": debs.ensure_extra_deb("driverctl")}
    packages_seconds = time.monotonic() - t_pkg
    print(f"vm-test: kernel {manifest['kernel_release']}, guest python {python}", flush=True)
    for name, info in packages.items():
        print(f"vm-test: {name}: " + (f"ERROR {info['error']}" if info.get("error") else
                                      f"skipped ({info['skipped']})" if info.get("skipped") else
                                      info["deb"] + (" (cached)" if info.get("cached") else "")),
              flush=True)

    host_before = host_fingerprint()
    loadavg_before = os.getloadavg()
    stalled = []    # (run directory, why, seconds) of guests whose kernel stopped
    while True:
        rundir = tempfile.mkdtemp(prefix="vfio-flavourd-vm.")
        guest = Guest(manifest, rundir, memory=args.memory, verbose=args.verbose,
                      packages=packages)
        code = guest.run(pytest_payload(python, args.pytest_args), args.timeout,
                         stream=sys.stdout)
        if not guest.stall.stopped or len(stalled) >= STALL_RERUNS:
            break
        stalled.append((rundir, guest.stall.stopped, guest.total_seconds))
        print(f"\nvm-test: the guest stopped after {guest.total_seconds:.0f} s: "
              f"{guest.stall.stopped}.\nvm-test: its kernel stopped, not a test: no result "
              f"of this run counts. Its run directory is kept: {rundir}. Its console ends:")
        for line in guest.console().rstrip().splitlines()[-12:]:
            print(f"  {line}")
        print("vm-test: running the whole payload again in a new guest", flush=True)
    host_after = host_fingerprint()
    host_changed = {k: (host_before[k], host_after[k]) for k in host_before
                    if host_before[k] != host_after[k]}

    junit = os.path.join(guest.share, "junit.xml")
    if os.path.exists(junit):
        passed, failed, skipped = junit_counts(junit)
    else:
        passed, failed, skipped = 0, 1, 0
    if host_changed:
        # Cannot come from the guest (its view of the host's root is a
        # read-only 9p share), but if it ever did, the run must not pass.
        failed += 1
        print(f"\nvm-test: FAILED: the host changed during the run: {host_changed}")
    ok = code == 0 and failed == 0
    if not ok:
        why = (f"the guest stopped: {guest.stall.stopped}" if guest.stall.stopped
               else "the guest reported no exit code (crash, hang or timeout)" if code is None
               else f"the guest payload exited {code}")
        print(f"\nvm-test: FAILED: {why}; QEMU exit status {guest.qemu_status}")
        print("----- guest console -----")
        print(guest.console().rstrip())
        print("----- end of guest console -----")
        for line in guest.host_log:
            print(f"vm-runner: {line}")

    print("\nvm-test timings:")
    rows = [("setup (cache check/build)", setup_seconds)]
    if packages and "deb" in packages.get("vfio-flavourd", {}):
        built = "cached" if packages["vfio-flavourd"].get("cached") else "built"
        rows.append((f"setup: .deb ({built}) and driverctl", packages_seconds))
    if guest.boot_seconds is not None:
        rows.append((f"boot to payload (guest uptime {guest.guest_uptime_at_stage2:.1f}s)",
                     guest.boot_seconds))
    timings = os.path.join(guest.share, "timings.json")
    if os.path.exists(timings):
        with open(timings) as f:
            t = json.load(f)
        rows += [(f"test {name}", secs) for name, secs in t.get("tests", {}).items()]
        rows += [(f"  {name}", secs) for name, secs in t.get("marks", {}).items()]
    rows += [(f"stopped guest run {i}, ended early", secs)
             for i, (_, _, secs) in enumerate(stalled, 1)]
    rows.append(("guest run total", guest.total_seconds))
    rows.append(("vm-test total", time.monotonic() - t_start))
    width = max(len(r[0]) for r in rows)
    for name, secs in rows:
        print(f"  {name:<{width}}  {secs:7.2f} s")
    print(f"  host: dpkg database and package paths "
          f"{'CHANGED' if host_changed else 'unchanged'} by the guest's dpkg -i")

    bench, bench_dest = save_bench(guest.share, manifest, packages, loadavg_before)
    if bench is not None:
        print(f"\nvm-test benchmark (issue 8, figure 7; "
              f"{'complete' if bench.get('complete') else 'INCOMPLETE'}):")
        try:
            for line in bench_rows(bench):
                print(f"  {line}")
        except (KeyError, TypeError, ValueError) as e:  # a partial file: say so, go on
            print(f"  (cannot summarise {bench_dest}: {e!r})")
        print(f"  results: {bench_dest}")

    if args.keep or not ok:
        print(f"vm-test: run directory kept: {rundir}")
    else:
        shutil.rmtree(rundir, ignore_errors=True)
    for path, why, _ in stalled:
        print(f"vm-test: before this run, a guest whose kernel stopped was run again: {why} "
              f"(kept: {path})")
    # Last line, in the form CI reads.
    print(f"vm-test: {passed} passed, {failed} failed"
          + (f", {skipped} skipped" if skipped else ""), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
