"""Figure 7 of the benchmarks (issue 8), measured on the real kernel.

A measurement, not a timed test: nothing here fails on a slow number, only
when a device does not end where it should. The numbers go to
/run/vmtest/bench.json (the results share), which the host runner copies
to $VFIO_FLAVOURD_VM_RESULTS, by default
$VFIO_FLAVOURD_VM_CACHE/results/last-bench.json, and prints. Each section
is written as soon as it is measured; "complete" is true once all are there
without an error.

Everything runs from the installed .deb (scenario 8's `installed_package`),
as a user would run it: the daemon from its unit's ExecStart line,
/usr/sbin/vfio-flavourd under Debian's python3, the environment a service
or a root shell has. driverctl is Debian's package (0.111 in bookworm).

(a) hotplug: QMP device_add of a modern virtio-net into the free root port
    rp4, until the running daemon has it on virtio_vfio_pci; HOTPLUG_RUNS
    times, each unplugged again, timed by the kernel's uevents. Once with
    the daemon on kernel events (no udevd), alternating with as many raw
    runs: the daemon stopped (SIGSTOP), this process waits for the
    device's add uevent and writes the override, unbinds, writes
    drivers_probe and reads the link back (the kernel's own time plus the
    least any tool can add); once with udevd running the installed rule
    and callout and the daemon on udev events (what a packaged install
    does).
(b) `vfio-flavourd apply ADDR` against `driverctl --nosave set-override ADDR
    vfio-pci` on the e1000e, N times each, alternating which goes first,
    the device back on e1000e (`vfio-flavourd release ADDR`, `driverctl
    --nosave unset-override ADDR`, timed as well) between runs. vfio_pci is loaded before,
    so neither pays for the module load; each tool's first (cold) run is
    reported apart and left out of the medians. For scale: `python3 -c
    pass`, and the kernel's own share (override, unbind, drivers_probe
    written from the test process), N times each.
"""

import errno
import json
import os
import signal
import statistics
import subprocess
import time

import pytest

import vmguest as g
import vmpkg
from vmtest_package import Udevd, etc_policy, installed_daemon, wait_ready  # noqa: F401  (etc_policy: a fixture)
from vmtest_scenarios import clean_slate, unplug  # noqa: F401  (clean_slate: a fixture)

BENCH = os.path.join(g.SHARE, "bench.json")
SECTIONS = ("hotplug_kernel_events", "hotplug_udev_events", "apply_vs_driverctl")
# Medians of this many alternating runs each: TCG timings vary from run to
# run by a fifth, and the targets are ratios of medians.  The hotplug's
# median of 11 still moved from 1.08 to 1.24 between three guest runs of
# the same code; then 15 pairs.  Timed by uevents, the raw median fell to
# some 60 to 90 ms, and the time before the device appears (no tool acts
# yet) still varies by 25 to 75 ms within a run, a third of the whole:
# 25 pairs.  With 25, the ratio of the medians still moved from 1.13 to
# 1.27 between guest runs of the same code, while the daemon's own share
# (from the add uevent to bound, against the raw loop's) moved by a third
# of that: 40 pairs, 40 s more of the guest run.
HOTPLUG_RUNS = 40
# apply/release against driverctl: driverctl's own time moved by a quarter
# between guest runs (unset-override's median 0.60 to 0.83 s), and the
# ratios with it; 15 pairs, as for the hotplug.
N = 15


def r4(x):
    return round(x, 4)


def save(section, data):
    """Add one section to bench.json (read, update, write via rename)."""
    try:
        with open(BENCH) as f:
            doc = json.load(f)
    except FileNotFoundError:
        doc = {"figure": 7, "issue": 8, "schema": 1,
               "written_by": "tests/vm/guest/vmtest_bench.py",
               "units": "seconds of guest wall time (time.monotonic)",
               "guest": guest_info()}
    doc[section] = data
    doc["complete"] = all(s in doc and not doc[s].get("error") for s in SECTIONS)
    tmp = BENCH + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
    os.rename(tmp, BENCH)


def guest_info():
    vm = g.vm_info()
    with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
        clock = f.read().strip()
    return {"kernel_release": os.uname().release, "vcpus": os.cpu_count(), "clocksource": clock,
            **vm.get("qemu", {}),
            "vfio_flavourd": {"binary": vmpkg.SBIN, "dpkg": vmpkg.dpkg_status(vmpkg.PKG)},
            "driverctl": vm.get("packages", {}).get("driverctl", {}).get("version")}


def measured(section):
    """Decorator-ish context: record the error in bench.json if the test fails."""
    class Ctx:
        def __enter__(self):
            return self

        def __exit__(self, typ, exc, tb):
            if exc is not None:
                save(section, {"error": f"{typ.__name__}: {exc}"[:2000]})
            return False
    return Ctx()


# --- (a) hotplug -------------------------------------------------------------

def hotplug_once(qdev_id, bind=None, trace=None, end_by_kernel=False):
    """device_add into rp4, wait for virtio_vfio_pci, unplug.  Times from
    the moment the request is written, to the kernel's uevents as they
    reach this process (g.PciUevents: it sleeps until the kernel sends,
    never polls sysfs meanwhile).  `bind(addr, events)`: what this process does
    on the device's add event (the raw runs), returning the driver it read
    back; else the daemon binds it.  `trace`: a g.KernelTrace, for the
    kernel's own times of the steps between (g.kernel_steps).
    `end_by_kernel`: bound when the kernel bound the variant, by its clock
    (the floor's runs, whose process collects its writer's reports before
    it could read the bind uevent or the link, where the daemon's work
    goes on beside this process's read of the uevent); untraced, when its
    bind() returned."""
    below = os.path.realpath(g.dev_path(g.port_address("rp4")))
    try:
        return _hotplug_once(below, qdev_id, bind, trace, end_by_kernel)
    except BaseException as e:
        # A failed run takes its device out again: left in rp4, it failed
        # every later test that hot-adds there (the CI run of f935f59: one
        # raw run's error, then 2 failures and 6 teardown errors).
        try:
            unplug(qdev_id)
            g.wait_for(lambda: g.device_behind("rp4") is None, 30, 0.05, "rp4 empty again")
        except Exception as cleanup:
            e.add_note(f"unplugging {qdev_id} after that failed as well: {cleanup!r}")
        raise


def _hotplug_once(below, qdev_id, bind, trace, end_by_kernel):
    with g.PciUevents(below) as events:
        if trace is not None:
            trace.clear()
        t0 = time.monotonic()
        request = g.qmp_send("device_add", {"driver": "virtio-net-pci", "id": qdev_id,
                                            "bus": "rp4", "disable-legacy": "on"})
        t_sysfs, _, addr, _ = events.wait(lambda action, name, drv: action == "add", 20,
                                          f"{qdev_id} added")
        t_bound = None
        if bind is not None and bind(addr, events) == "virtio_vfio_pci":
            t_bound = time.monotonic()
        final = events.wait(lambda action, name, drv: action == "bind" and name == addr
                            and drv == "virtio_vfio_pci", 30, f"{qdev_id} on virtio_vfio_pci")
        if t_bound is None:
            # The daemon's runs; or a raw run whose override came before
            # the kernel's own probe, so that its drivers_probe found the
            # device not yet open to drivers: that probe binds it.
            t_bound = final[0]
        # The kernel's own probe after device_add: which driver it bound
        # (virtio_vfio_pci when the override was there first), and when.
        first = next(ev for ev in events.seen if ev[1] == "bind" and ev[2] == addr)
        steps = g.kernel_steps(trace.calls(), t_sysfs, final[0]) if trace is not None else {}
        if end_by_kernel and steps.get("kernel_bound") is not None:
            t_bound = t_sysfs + steps["kernel_bound"]
        # When the kernel's own probe was over: by the kernel's clock when
        # traced; else, in the daemon's runs, its bind uevent (in the raw
        # runs that uevent is read only after the raw writes).
        if steps.get("kernel_first_bound") is not None:
            t_host = t_sysfs + steps["kernel_first_bound"]
        else:
            t_host = first[0] if bind is None else None
    answer = g.qmp_answer(request)
    assert g.driver(addr) == "virtio_vfio_pci", (qdev_id, addr, g.driver(addr), events.seen)
    g.device_del(qdev_id)
    g.wait_for(lambda: g.device_behind("rp4") is None, timeout=30, what="rp4 empty again")
    return {"request_to_sysfs": t_sysfs - t0, "sysfs_to_bound": t_bound - t_sysfs,
            "request_to_bound": t_bound - t0, "qemu_device_add": answer.get("host_seconds"),
            "sysfs_to_host_driver": None if t_host is None else t_host - t_sysfs,
            "host_driver_to_bound": None if t_host is None else t_bound - t_host,
            "first_probe_bound": first[3], **steps}


def _median(values):
    values = [v for v in values if v is not None]
    return r4(statistics.median(values)) if values else None


# g.kernel_steps()'s fields, in the section with their medians.
KERNEL_STEPS = ("kernel_probe_start", "kernel_first_bound", "kernel_unbind_entered",
                "kernel_bound", "kernel_first_bound_to_unbind")


def hotplug_section(label, runs, source):
    by = {k: [None if r.get(k) is None else r4(r[k]) for r in runs] for k in (
        "request_to_sysfs", "sysfs_to_bound", "request_to_bound", "sysfs_to_host_driver",
        "host_driver_to_bound") + KERNEL_STEPS}
    return {
        "what": "QMP device_add of virtio-net-pci (1af4:1041, disable-legacy) into the free "
                "root port to the device on virtio_vfio_pci, bound by the running daemon",
        "daemon": f"{vmpkg.SBIN} daemon (the unit's ExecStart), {source} events",
        "runs": len(runs),
        "request_to_bound_s": by["request_to_bound"],
        "median_request_to_bound_s": _median(by["request_to_bound"]),
        "sysfs_to_bound_s": by["sysfs_to_bound"],
        "median_sysfs_to_bound_s": _median(by["sysfs_to_bound"]),
        "request_to_sysfs_s": by["request_to_sysfs"],
        "median_request_to_sysfs_s": _median(by["request_to_sysfs"]),
        "sysfs_to_host_driver_s": by["sysfs_to_host_driver"],
        "median_sysfs_to_host_driver_s": _median(by["sysfs_to_host_driver"]),
        "host_driver_to_bound_s": by["host_driver_to_bound"],
        "median_host_driver_to_bound_s": _median(by["host_driver_to_bound"]),
        "qemu_device_add_s": [r["qemu_device_add"] for r in runs],
        "first_probe_bound": [r["first_probe_bound"] for r in runs],
        **{f"{k}_s": by[k] for k in KERNEL_STEPS},
        **{f"median_{k}_s": _median(by[k]) for k in KERNEL_STEPS},
        "notes": "request_to_*: from the guest writing the QMP request (the host wakes on "
                 "it by inotify); sysfs: the device's add uevent reaching the test; "
                 "host_driver: the kernel's own probe of the new device over (its "
                 "driver_bound by the kernel's clock; untraced, the bind uevent in the "
                 "daemon's runs, none in the raw runs); bound: the "
                 "bind uevent of virtio_vfio_pci (in the raw runs, its own read of the "
                 "driver link); kernel_*: the function tracer's times of "
                 "pci_bus_add_device, the first driver_bound, the first unbind_store "
                 "and the last driver_bound, after the add uevent reached the test "
                 "(first_bound_to_unbind below 0: the unbind was written during the "
                 f"kernel's own probe and waited for it); each run after {GRACE:g} s idle",
    }


def raw_bind(addr, events=None):
    """The raw sequence, as a minimal tool would write it; returns the
    driver read back.  Traced on 6.12 (g.kernel_steps), the override write
    returned while the kernel's own probe of the new device still ran, and
    the unbind entered the kernel then and waited for that probe: it
    starts the moment the probe is over.  Written before that probe, the
    override makes the probe bind virtio_vfio_pci itself, and the
    drivers_probe here, before the kernel has opened the device to
    drivers, binds nothing."""
    g.set_override(addr, "virtio_vfio_pci")
    try:
        g.unbind(addr)
    except OSError as e:
        # The override came while the kernel's own probe was between its
        # match and the driver's probe: pci_device_probe() matches again,
        # meets the override, and rejects its driver, whose probe then
        # fails with ENODEV; the kernel's attach goes on to the next
        # driver that matches, the variant.  Our unbind, opened through
        # the driver link while it still named the host driver, finds the
        # device off that driver: ENODEV (ENOENT when the link went first).
        # Seen once, in the CI run of f935f59, of all the raw runs so far.
        # The device is where the override sends it, or on its way there:
        # drivers_probe as ever.
        if e.errno not in (errno.ENODEV, errno.ENOENT):
            raise
    g.drivers_probe(addr)
    return g.driver(addr)


def floor_bind(addr, events):
    """The raw sequence with only what this project's safety rules ask
    before an unbind, each done by vfio-flavourd's own code, and all that
    can be done before the kernel's own probe ends done then: the device's
    lock (no two tools on one device) and its read; then the end of that
    probe (its bind uevent, which names the driver: guards asked during it
    see only part of what it makes), the guards, and the writes in the
    forked writer process with their deadline (an unbind may never
    return).  No policy, no decision, no state record, no log: the least
    a tool that keeps those rules does, which the daemon's figure is
    compared with (ratio_to_floor)."""
    from vfio_flavourd import guards, pci
    from vfio_flavourd.root import PCI_DEVICES, Root
    from vfio_flavourd.state import device_locked
    from vfio_flavourd.sysfs import Sysfs
    sysfs = Sysfs(Root("/"))
    with device_locked(sysfs.root, addr, 10.0):
        dev = pci.fresh(sysfs, addr, override=False)
        top = guards.device_dir(sysfs, addr)
        _, _, _, driver = events.wait(lambda action, name, drv: action == "bind"
                                      and name == addr, 20, f"{addr}: the kernel's probe over")
        reasons = guards.refusals(sysfs, dev._replace(driver=driver), top)
        assert not reasons, reasons
        writes = [(f"{PCI_DEVICES}/{addr}/driver_override", "virtio_vfio_pci"),
                  (f"sys/bus/pci/drivers/{driver}/unbind", addr),
                  ("sys/bus/pci/drivers_probe", addr)]
        sysfs.write_timed(*writes[0], 10.0, then=writes[1:])
        for rel, value in writes[1:]:       # their reports, as the binder collects them
            sysfs.write_timed(rel, value, 10.0)
        return sysfs.link(f"{PCI_DEVICES}/{addr}/driver")


def raw_run_beside(daemon, qdev_id, trace=None, bind=raw_bind):
    """A raw (or floor) run while the daemon is stopped: its uevents wait
    in its socket, and once continued (in the next run's GRACE) it finds
    that device gone."""
    daemon.signal(signal.SIGSTOP)
    try:
        return hotplug_once(qdev_id, bind=bind, trace=trace,
                            end_by_kernel=bind is floor_bind)
    finally:
        daemon.signal(signal.SIGCONT)


# An idle second before every hotplug run, the daemon's and the raw ones
# alike.  How long the guest was idle before a device_add decides how long
# the device takes to appear in sysfs: in one guest run, the runs that
# followed another at once saw it in a median 60 ms, those after a second's
# pause in 94 to 120 ms.  Only the raw runs used to end with that pause,
# so the pairs of runs were fast and slow by turns, which widened the
# spread that each median is taken from.
GRACE = 1.0

# The daemon's runs (0), the raw ones (1) and the floor's (2): each kind
# goes first, second and third in turn.
ORDERS = ((0, 1, 2), (1, 2, 0), (2, 0, 1))


def test_bench_hotplug_to_bound_daemon_on_kernel_events(clean_slate, etc_policy):
    with measured("hotplug_kernel_events"):
        assert g.device_behind("rp4") is None
        g.modprobe("virtio_vfio_pci")       # as the daemon leaves it after its first run
        t0 = time.monotonic()
        d, notify, _ = installed_daemon(clean_slate)
        raw, floor, runs = [], [], []
        try:
            wait_ready(notify, t0)
            assert "listening on kernel events" in d.text(), d.text()
            with g.KernelTrace() as trace:
                for i in range(HOTPLUG_RUNS):
                    # Turning which goes first, so that all see the same load.
                    for which in ORDERS[i % len(ORDERS)]:
                        time.sleep(GRACE)
                        if which == 0:
                            runs.append(hotplug_once(f"benchk{i}", trace=trace))
                        elif which == 1:
                            raw.append(raw_run_beside(d, f"benchr{i}", trace=trace))
                        else:
                            floor.append(raw_run_beside(d, f"benchf{i}", trace=trace,
                                                        bind=floor_bind))
        finally:
            notify.close()
        assert d.alive(), d.text()
        section = hotplug_section("kernel", runs, "kernel")
        raw_section = hotplug_section("raw", raw, "no daemon")
        section["raw"] = {k: v for k, v in raw_section.items()
                          if (k.endswith("_s") and k != "qemu_device_add_s")
                          or k == "first_probe_bound"}
        section["raw"]["what"] = ("the same device_add, no daemon: on the device's add "
                                  "uevent this process writes driver_override, unbinds, "
                                  "writes drivers_probe and reads the driver link back")
        section["ratio_to_raw"] = round(section["median_request_to_bound_s"]
                                        / raw_section["median_request_to_bound_s"], 2)
        floor_section = hotplug_section("floor", floor, "no daemon")
        section["floor"] = {k: v for k, v in floor_section.items()
                            if (k.endswith("_s") and k != "qemu_device_add_s")
                            or k == "first_probe_bound"}
        section["floor"]["what"] = (
            "the same device_add, no daemon: on the device's add uevent this process "
            "takes the device's lock, waits for the kernel's own probe to end (its bind "
            "uevent), asks vfio-flavourd's guards on a fresh read, hands the override, "
            "the unbind and drivers_probe to vfio-flavourd's writer process with their "
            "deadline, and reads the driver link back (bench's floor_bind); bound: "
            "the variant's driver_bound by the kernel's clock")
        section["floor_ratio_to_raw"] = round(floor_section["median_request_to_bound_s"]
                                              / raw_section["median_request_to_bound_s"], 2)
        section["ratio_to_floor"] = round(section["median_request_to_bound_s"]
                                          / floor_section["median_request_to_bound_s"], 2)
        save("hotplug_kernel_events", section)
        g.record_timing("bench: hotplug to bound, kernel events (median)",
                        section["median_request_to_bound_s"])


def test_bench_hotplug_to_bound_with_udevd_rule_and_callout(clean_slate, etc_policy):
    with measured("hotplug_udev_events"):
        assert g.device_behind("rp4") is None
        udevd = Udevd("udevd-bench.log")
        try:
            t0 = time.monotonic()
            d, notify, _ = installed_daemon(clean_slate)
            try:
                wait_ready(notify, t0)
                assert "listening on udev events" in d.text(), d.text()
                runs = []
                with g.KernelTrace() as trace:
                    for i in range(HOTPLUG_RUNS):
                        time.sleep(GRACE)
                        runs.append(hotplug_once(f"benchu{i}", trace=trace))
            finally:
                notify.close()
            assert d.alive(), d.text()
        finally:
            udevd.stop()
        section = hotplug_section("udev", runs, "udev")
        section["notes"] += ("; udevd runs the installed rule, whose callout "
                             "(/usr/libexec/vfio-flavourd/vfio-flavourd-udev, a Python "
                             "process) runs on each add before udev passes the event on")
        save("hotplug_udev_events", section)
        g.record_timing("bench: hotplug to bound, udevd + rule (median)",
                        section["median_request_to_bound_s"])


# --- (b) apply against driverctl ------------------------------------------------

def timed(argv):
    t0 = time.monotonic()
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(vmpkg.SERVICE_ENV), cwd="/", timeout=120)
    dt = time.monotonic() - t0
    assert res.returncode == 0, f"{' '.join(argv)} exited {res.returncode}:\n{res.stdout}"
    return dt, res.stdout


def import_times(args):
    """What one run spends importing (python3 -X importtime), for the
    record: the total and the costliest top-level imports."""
    res = subprocess.run(["/usr/bin/python3", "-I", "-X", "importtime", *args],
                         stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(vmpkg.SERVICE_ENV), cwd="/",
                         timeout=120)
    assert res.returncode == 0, res.stderr
    rows = []
    for line in res.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            self_us, cumulative, name = (x.strip() for x in line[12:].split("|", 2))
            if self_us.isdigit():
                rows.append((int(self_us), int(cumulative), name))
    top = sorted((r for r in rows if not r[2].startswith(" ")), key=lambda r: -r[1])[:12]
    return {"modules": len(rows), "total_s": round(sum(r[0] for r in rows) / 1e6, 4),
            "top_level": [[name, round(cum / 1e6, 4)] for _, cum, name in top]}


@pytest.fixture
def driverctl():
    try:
        info, seconds = vmpkg.copy_in("driverctl")
    except vmpkg.NotPrepared as e:
        pytest.skip(str(e))
    g.record_timing("bench: driverctl files copied in", seconds)
    return info


def test_bench_apply_against_driverctl(clean_slate, etc_policy, driverctl):
    with measured("apply_vs_driverctl"):
        addr = g.device_behind("rp1")
        assert g.ids(addr) == (0x8086, 0x10D3) and g.driver(addr) == "e1000e"
        g.modprobe("vfio_pci")

        def on(drv):
            assert g.driver(addr) == drv, f"{addr} on {g.driver(addr)}, not {drv}"
            if drv == "e1000e":
                assert g.driver_override(addr) is None

        def vfio_flavourd():
            dt, _ = timed([vmpkg.SBIN, "apply", addr])
            on("vfio-pci")
            rt, _ = timed([vmpkg.SBIN, "release", addr])
            on("e1000e")
            return dt, rt

        trace = []

        def drvctl(verbose=False):
            dt, out = timed(["driverctl", *(["-v"] if verbose else []), "--nosave",
                             "set-override", addr, "vfio-pci"])
            trace.extend(out.strip().splitlines())
            on("vfio-pci")
            rt, _ = timed(["driverctl", "--nosave", "unset-override", addr])
            on("e1000e")
            return dt, rt

        py = [timed(["/usr/bin/python3", "-c", "pass"])[0] for _ in range(N)]
        # The kernel's share, the floor for both tools: the same override,
        # unbind and drivers_probe from this process, no new process.
        raw = []
        for _ in range(N):
            t0 = time.monotonic()
            g.rebind(addr, "vfio-pci")
            raw.append(time.monotonic() - t0)
            on("vfio-pci")
            g.restore(addr)
            on("e1000e")
        cold_apply, cold_release = vfio_flavourd()
        # The cold run with -v: what driverctl does here, for the record.
        cold_set, cold_unset = drvctl(verbose=True)
        apply, release, dset, dunset = [], [], [], []
        for i in range(N):
            order = (vfio_flavourd, drvctl) if i % 2 == 0 else (drvctl, vfio_flavourd)
            for fn in order:
                a, b = fn()
                (apply if fn is vfio_flavourd else dset).append(r4(a))
                (release if fn is vfio_flavourd else dunset).append(r4(b))
        med_apply, med_set = statistics.median(apply), statistics.median(dset)
        med_release, med_unset = statistics.median(release), statistics.median(dunset)
        section = {
            "what": "vfio-flavourd apply ADDR against driverctl --nosave set-override ADDR "
                    "vfio-pci, same device, same guest, alternating",
            "device": f"{addr} (8086:10d3 e1000e) -> vfio-pci",
            "n": N,
            "apply_s": apply, "median_apply_s": r4(med_apply),
            "driverctl_s": dset, "median_driverctl_s": r4(med_set),
            "ratio_apply_to_driverctl": round(med_apply / med_set, 2),
            # The least disturbed run of each: on a shared host the minimum
            # moves less with the neighbours' load than the median does.
            "min_apply_s": min(apply), "min_driverctl_s": min(dset),
            "ratio_min_apply_to_driverctl": round(min(apply) / min(dset), 2),
            "release_s": release, "median_release_s": r4(med_release),
            "driverctl_unset_s": dunset,
            "median_driverctl_unset_s": r4(med_unset),
            "ratio_release_to_driverctl_unset": round(med_release / med_unset, 2),
            "cold": {"apply_s": r4(cold_apply), "release_s": r4(cold_release),
                     "driverctl_s": r4(cold_set), "driverctl_unset_s": r4(cold_unset)},
            "raw_sysfs_rebind_s": [r4(x) for x in raw],
            "median_raw_sysfs_rebind_s": r4(statistics.median(raw)),
            "python3_c_pass_s": [r4(x) for x in py],
            "median_python3_c_pass_s": r4(statistics.median(py)),
            "driverctl_trace": trace,
            "notes": "vfio_pci loaded beforehand; no udevd, no systemd; 'cold' is each tool's "
                     "first run, left out of the medians. driverctl 0.111 is a bash script: "
                     "modprobe -q (every time: it tests /sys/module/vfio-pci, but the module "
                     "directory is vfio_pci), unbind, write driver_override, drivers_probe, "
                     "check the driver link. It calls no udevadm and no systemctl with "
                     "--nosave.",
        }
        section["imports"] = {"apply": import_times([vmpkg.SBIN, "apply", addr]),
                              "release": import_times([vmpkg.SBIN, "release", addr]),
                              "python3_c_pass": import_times(["-c", "pass"])}
        on("e1000e")
        save("apply_vs_driverctl", section)
        g.record_timing("bench: vfio-flavourd apply (median)", med_apply)
        g.record_timing("bench: driverctl set-override (median)", med_set)
