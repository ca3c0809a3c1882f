"""Helpers for tests that run inside the vm-test guest (tests/vm/runner.py).

Raw sysfs, kmod and VFIO ioctls, plus the request channel to the host's QMP
(README.md, "Hotplug requests"). Nothing here imports the project: these
helpers check the kernel's own behaviour and the project's results against it.
Every function that writes refuses to run outside the guest.
"""

import fcntl
import json
import os
import re
import struct
import subprocess
import time
import uuid

SHARE = os.environ.get("VFIO_FLAVOURD_VM_SHARE", "/run/vmtest")
PCI = "/sys/bus/pci"
PCI_ADDR = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")

# include/uapi/linux/vfio.h: VFIO_TYPE is ';', VFIO_BASE is 100, and
# VFIO_GROUP_GET_STATUS is _IO(VFIO_TYPE, VFIO_BASE + 3) on a
# struct vfio_group_status { __u32 argsz; __u32 flags; }.
# vmtest_smoke checks these against the header of the kernel under test.
VFIO_TYPE = ord(";")
VFIO_BASE = 100
VFIO_GROUP_GET_STATUS = (VFIO_TYPE << 8) | (VFIO_BASE + 3)  # _IO: no size/dir bits
VFIO_GROUP_FLAGS_VIABLE = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1


def in_guest():
    """True only in the vm-test guest: its kernel command line names our
    stage-2 script. Guards every write, so that running these tests on a
    real machine by mistake never touches its devices."""
    try:
        with open("/proc/cmdline") as f:
            cmdline = f.read()
    except OSError:
        return False
    return "vmtest.stage2=" in cmdline and os.environ.get("VFIO_FLAVOURD_VM_GUEST") == "1"


def _guard():
    if not in_guest():
        raise RuntimeError("refusing to change sysfs outside the vm-test guest")


def vm_info():
    with open(os.path.join(SHARE, "vm.json")) as f:
        return json.load(f)


# --- sysfs -------------------------------------------------------------------

def read(path):
    with open(path) as f:
        return f.read().strip()


def write(path, value):
    """One write(2) of the whole value, as sysfs wants; errors propagate
    as OSError with the kernel's errno."""
    _guard()
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def dev_path(addr, *attr):
    return os.path.join(PCI, "devices", addr, *attr)


def port_address(port):
    return vm_info()["ports"][port]


def device_behind(port):
    """The PCI address of the (function 0) device behind a root port, or
    None when its slot is empty."""
    pdir = dev_path(port_address(port))
    children = sorted(n for n in os.listdir(pdir) if PCI_ADDR.match(n))
    return children[0] if children else None


def ids(addr):
    return int(read(dev_path(addr, "vendor")), 16), int(read(dev_path(addr, "device")), 16)


def driver(addr):
    """Name of the driver bound to addr (the driver link), or None.
    One readlink, no islink first: the link (or the whole device) can go
    between two calls while a daemon rebinds or QEMU unplugs, which once
    failed scenario 6 with FileNotFoundError from a test polling this."""
    try:
        return os.path.basename(os.readlink(dev_path(addr, "driver")))
    except FileNotFoundError:
        return None


def driver_override(addr):
    value = read(dev_path(addr, "driver_override"))
    return None if value == "(null)" else value


def set_override(addr, name):
    # "\n" clears it. An empty string would not: write(2) of zero bytes
    # never reaches the attribute (test_fact_empty_write_keeps_override).
    write(dev_path(addr, "driver_override"), name or "\n")


def unbind(addr):
    if driver(addr) is not None:
        write(dev_path(addr, "driver", "unbind"), addr)


def drivers_probe(addr):
    write(os.path.join(PCI, "drivers_probe"), addr)


def bind(addr, drv):
    write(os.path.join(PCI, "drivers", drv, "bind"), addr)


def rebind(addr, drv_name):
    """The sequence the kernel documents for driver_override: set it,
    unbind, ask the bus to probe. Returns the driver bound afterwards."""
    set_override(addr, drv_name)
    unbind(addr)
    drivers_probe(addr)
    return driver(addr)


def restore(addr):
    """Clear the override and let the device's own driver take it back."""
    set_override(addr, "")
    unbind(addr)
    drivers_probe(addr)
    return driver(addr)


def iommu_group(addr):
    return int(os.path.basename(os.readlink(dev_path(addr, "iommu_group"))))


def modalias(addr):
    return read(dev_path(addr, "modalias"))


# --- modules -----------------------------------------------------------------

def modprobe(*names):
    _guard()
    for name in names:
        subprocess.run(["modprobe", "--", name], check=True)


def module_drivers(module):
    """Driver names a loaded module registered on the PCI bus, from
    /sys/module/<module>/drivers/pci:<driver>."""
    d = f"/sys/module/{module.replace('-', '_')}/drivers"
    return sorted(n.split(":", 1)[1] for n in os.listdir(d) if n.startswith("pci:"))


def resolve_alias(alias):
    """What kmod itself resolves an alias to (modprobe --resolve-alias)."""
    out = subprocess.run(["modprobe", "--resolve-alias", "--", alias],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    return out.split()


def kmsg_since(marker):
    """Kernel log lines after the line containing marker (see kmsg_mark)."""
    out = subprocess.run(["dmesg"], stdout=subprocess.PIPE, text=True, check=True).stdout
    lines = out.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if marker in lines[i]:
            return lines[i + 1:]
    return lines


def kmsg_mark():
    marker = f"vm-test-mark-{uuid.uuid4().hex[:8]}"
    write("/dev/kmsg", marker)
    return marker


# --- VFIO --------------------------------------------------------------------

def vfio_group_status(group):
    """flags of VFIO_GROUP_GET_STATUS on /dev/vfio/<group>."""
    fd = os.open(f"/dev/vfio/{group}", os.O_RDWR)
    try:
        buf = fcntl.ioctl(fd, VFIO_GROUP_GET_STATUS, struct.pack("=II", 8, 0))
    finally:
        os.close(fd)
    argsz, flags = struct.unpack("=II", buf)
    return flags


# --- waiting and timing --------------------------------------------------------

def uevent_filter(devpath_below, actions=("add", "bind", "unbind", "remove")):
    """A classic BPF program, as (struct sock_fprog, the buffer it points
    to), that passes a kernel uevent only when its first line is
    "ACTION@<devpath_below>DDDD:BB:DD.F": one of `actions` on a PCI device
    directly below that path, not on its children.  Loads past the end of
    a message drop it (the kernel's rule for classic BPF)."""
    import ctypes

    def op(code, jt, jf, k):
        return struct.pack("=HBBI", code, jt, jf, k)

    LD_W, LD_H, LD_B, JEQ, RET = 0x20, 0x28, 0x30, 0x15, 0x06
    blocks = []
    for action in actions:
        head = f"{action}@{devpath_below}".encode()
        tests = []
        i = 0
        while i < len(head):
            n = 4 if len(head) - i >= 4 else (2 if len(head) - i >= 2 else 1)
            tests.append(({4: LD_W, 2: LD_H, 1: LD_B}[n], i,
                          int.from_bytes(head[i:i + n], "big")))
            i += n
        tests.append((LD_B, len(head) + 12, 0))     # the address, then NUL
        blocks.append(tests)
    prog = []
    for b, tests in enumerate(blocks):
        size = 2 * len(tests)
        for t, (load, offset, value) in enumerate(tests):
            prog.append(op(load, 0, 0, offset))
            # jt: on to the next test, or to "pass" after the last; jf: the
            # next action's block, or "drop" after the last block.
            left = size - 2 * t - 2             # instructions left in this block
            after = sum(2 * len(x) for x in blocks[b + 1:])
            prog.append(op(JEQ, after + 1 if left == 0 else 0, left, value))
    prog += [op(RET, 0, 0, 0), op(RET, 0, 0, 0xFFFF)]
    # Laid out: blocks..., drop, pass.  A last test that holds jumps over
    # the later blocks and the drop; one that fails goes to the next block
    # (the drop after the last).
    buf = ctypes.create_string_buffer(b"".join(prog))
    return struct.pack("HL", len(prog), ctypes.addressof(buf)), buf


class PciUevents:
    """The kernel's PCI uevents below one sysfs path, as they arrive: a
    netlink socket on the kernel's group, opened before whatever makes
    them.  The test sleeps in recv(2) until the kernel sends, so a
    measurement neither polls sysfs nor competes for the CPU meanwhile,
    and each event is timed when it reaches this process."""

    NETLINK_KOBJECT_UEVENT = 15
    SO_ATTACH_FILTER = 26

    def __init__(self, below):
        import socket
        self.below = below.rstrip("/") + "/"
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  self.NETLINK_KOBJECT_UEVENT)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        # The kernel drops every other uevent before it reaches this
        # process: in the daemon's runs this test must not wake, and take
        # a CPU from the daemon, for the uevents of the virtio child, its
        # wakeup source or the vfio nodes, while in the raw runs it wakes
        # for none until its own writes are done.
        self._filter = uevent_filter(self.below[len("/sys"):])
        self.sock.setsockopt(socket.SOL_SOCKET, self.SO_ATTACH_FILTER, self._filter[0])
        self.sock.bind((0, 1))
        self.seen = []      # (monotonic time, action, name, driver)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()
        return False

    def wait(self, predicate, timeout, what):
        """The first event, from now on, for which predicate(action, name,
        driver) holds: (time, action, name, driver)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what} not seen within {timeout}s (seen: {self.seen})")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:    # the deadline: the loop says so
                continue
            t = time.monotonic()
            fields = dict(f.split(b"=", 1) for f in data.split(b"\0")[1:] if b"=" in f)
            path = "/sys" + fields.get(b"DEVPATH", b"").decode()
            if fields.get(b"SUBSYSTEM") != b"pci" or not path.startswith(self.below):
                continue
            ev = (t, fields[b"ACTION"].decode(), os.path.basename(path),
                  fields[b"DRIVER"].decode() if b"DRIVER" in fields else None)
            self.seen.append(ev)
            if predicate(*ev[1:]):
                return ev


class KernelTrace:
    """The kernel's own timestamps of a hotplug's steps: the function
    tracer on a few driver-core functions, with trace_clock "mono", the
    clock of time.monotonic().  Uevents say when a step reached this
    process; these say when the kernel took it (a raw unbind, for one,
    enters unbind_store while the kernel's own probe still holds the
    device, and waits).  The tracer patches only these call sites.  One
    hot-added device at a time: the calls do not name it.  `ok` is False
    where tracefs or the function tracer is missing; calls() is then
    empty."""

    TRACEFS = "/sys/kernel/tracing"
    FUNCTIONS = ("pci_bus_add_device", "really_probe", "driver_bound", "unbind_store",
                 "drivers_probe_store")
    LINE = re.compile(r"\s*(.+?)-(\d+)\s+\[\d+\]\s+\S*\s+([\d.]+): (\w+) <-")

    def __init__(self):
        _guard()
        self.ok = False
        try:
            if not os.path.exists(os.path.join(self.TRACEFS, "trace")):
                subprocess.run(["mount", "-t", "tracefs", "nodev", self.TRACEFS],
                               check=True, capture_output=True)
            self._write("tracing_on", "0")
            if not self._installed():
                self._write("set_ftrace_filter", " ".join(self.FUNCTIONS))
                self._write("current_tracer", "function")
            self._write("trace_clock", "mono")
            self._write("trace", "")
            self._write("tracing_on", "1")
            self.ok = True
        except (OSError, subprocess.CalledProcessError):
            self.close()

    def _write(self, name, value):
        with open(os.path.join(self.TRACEFS, name), "w") as f:
            f.write(value)

    def _read(self, name):
        with open(os.path.join(self.TRACEFS, name)) as f:
            return f.read()

    def _installed(self):
        """Whether an earlier KernelTrace left the tracer on these
        functions (close() does, see there)."""
        return (self._read("current_tracer").strip() == "function"
                and sorted(self._read("set_ftrace_filter").split()) == sorted(self.FUNCTIONS))

    def clear(self):
        if self.ok:
            self._write("trace", "")

    def calls(self):
        """[(kernel time, function, task name)] since the last clear()."""
        if not self.ok:
            return []
        with open(os.path.join(self.TRACEFS, "trace")) as f:
            return self.parse(f.read())

    @classmethod
    def parse(cls, text):
        out = []
        for line in text.splitlines():
            m = cls.LINE.match(line)
            if m:
                out.append((float(m.group(3)), m.group(4), m.group(1).strip()))
        return out

    def close(self):
        """Stops recording and leaves the functions' call sites patched
        for the next KernelTrace, until the guest ends.  Every change of
        the tracer rewrites those call sites with int3 (text_poke_bp), and
        under QEMU's multi-threaded TCG the other vCPU may still run a
        stale translation of a patched site: the CI run of d7740a0 ended
        in "Oops: int3" in the daemon's futex wake-up, as the hotplug
        benchmark put the tracer back to nop."""
        try:
            self._write("tracing_on", "0")
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def kernel_steps(calls, t_sysfs, t_end):
    """A hotplug's steps by the kernel's clock, in seconds after its add
    uevent reached this process: the kernel's own probe starting
    (pci_bus_add_device) and binding its first driver, the first unbind
    entering the kernel (None when the override was there before that
    probe: nothing to unbind), and the last bind, the variant's.  Calls
    after `t_end` (the variant's bind uevent here) are not this
    hotplug's; empty when the trace has no probe or bind."""
    calls = [c for c in calls if c[0] <= t_end]
    starts = [t for t, fn, _ in calls if fn == "pci_bus_add_device"]
    bound = [t for t, fn, _ in calls if fn == "driver_bound"]
    if not starts or not bound:
        return {}
    unbinds = [t for t, fn, _ in calls if fn == "unbind_store" and t >= starts[0]]
    unbind = unbinds[0] if unbinds else None
    return {"kernel_probe_start": starts[0] - t_sysfs,
            "kernel_first_bound": bound[0] - t_sysfs,
            "kernel_unbind_entered": None if unbind is None else unbind - t_sysfs,
            "kernel_bound": bound[-1] - t_sysfs,
            # Negative: the unbind was written while the kernel's probe ran,
            # and waited for it.
            "kernel_first_bound_to_unbind": None if unbind is None else unbind - bound[0]}


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Poll predicate until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        time.sleep(interval)


def record_timing(name, seconds):
    """Add a named timing to the run's report (printed by the host runner)."""
    path = os.path.join(SHARE, "marks.jsonl")
    with open(path, "a") as f:
        f.write(json.dumps({"name": name, "seconds": round(seconds, 3)}) + "\n")


# --- requests to the host --------------------------------------------------------

class QMPError(Exception):
    def __init__(self, answer):
        self.answer = answer
        err = answer.get("error", {})
        super().__init__(f"{err.get('class')}: {err.get('desc')}")


def qmp(execute, arguments=None, wait_event=None, timeout=30.0):
    """Have the host run a QMP command against this guest's QEMU.

    wait_event, e.g. {"event": "DEVICE_DELETED", "data": {"device": "hot1"}},
    makes the host answer only once that event followed the command. Returns
    the answer ({"return": ..., "event": ..., "host_seconds": ...}); raises
    QMPError when it holds an "error"."""
    return qmp_answer(qmp_send(execute, arguments, wait_event, timeout))


def qmp_send(execute, arguments=None, wait_event=None, timeout=30.0):
    """The request alone (see qmp): a handle for qmp_answer, so that a
    caller can wait for the guest's side of the command in between."""
    name = f"{time.monotonic_ns():020d}-{uuid.uuid4().hex[:8]}.json"
    req = {"execute": execute, "timeout": timeout}
    if arguments is not None:
        req["arguments"] = arguments
    if wait_event is not None:
        req["wait_event"] = wait_event
    reqdir = os.path.join(SHARE, "requests")
    tmp = os.path.join(reqdir, "." + name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(req, f)
    os.rename(tmp, os.path.join(reqdir, name))
    return name, execute, timeout


def qmp_answer(handle):
    name, execute, timeout = handle
    answer_path = os.path.join(SHARE, "answers", name)
    wait_for(lambda: os.path.exists(answer_path), timeout + 10, what=f"host answer to {execute}")
    with open(answer_path) as f:
        answer = json.load(f)
    if "error" in answer:
        raise QMPError(answer)
    return answer


def device_add(qdev_id, port, driver="virtio-net-pci", **props):
    args = {"driver": driver, "id": qdev_id, "bus": port, **props}
    return qmp("device_add", args)


def device_del(qdev_id, wait=True, timeout=30.0):
    """Unplug; with wait, return only after QEMU reported DEVICE_DELETED
    (the guest's pciehp has let go of the slot)."""
    ev = {"event": "DEVICE_DELETED", "data": {"device": qdev_id}} if wait else None
    return qmp("device_del", {"id": qdev_id}, wait_event=ev, timeout=timeout)

