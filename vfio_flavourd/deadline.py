"""Kernel writes that may never return, run with a deadline.

An unbind runs the driver's remove(), which can wait for minutes or for
ever: 9pnet_virtio's p9_virtio_remove loops while a share is mounted, an
NVIDIA GPU took 3 minutes, NVMe behind VMD about 15 s.  The writing task
sleeps uninterruptibly and cannot be killed, so the write is done by a
helper, never by the thread that decides, and past the deadline the helper
is abandoned.

On the real /sys the helper is a forked writer process: a thread stuck in
the kernel would keep the whole process from exiting (the group leader is
not reaped until every thread has left), so a CLI could never return.  The
writer is handed the device's lock descriptor with each write, which keeps
the device locked until the kernel lets it go.  In the simulated kernel,
whose "kernel" is Python in this process, the helper is a thread.
"""

from __future__ import annotations

import _socket      # the C module: socket.py costs 9 ms (enum, selectors)
import _thread
import errno as _errno
import os
import select
import sys
import time
# Annotations only (never evaluated: `from __future__ import annotations`);
# a real import of collections.abc or typing would cost every `apply`.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

from .errors import FlavourdError, SysfsError

from .outcome import DEFAULT_DEADLINE as DEFAULT_TIMEOUT  # noqa: E402  (one number)
# After this long the write is "slow": the daemon's other workers carry on.
PATIENCE = 1.0


class Stuck(FlavourdError):
    """A write did not return within its deadline; it may still finish."""

    def __init__(self, rel: str, value: str, seconds: float, helper):
        self.rel, self.value, self.seconds, self.helper = rel, value, seconds, helper
        super().__init__(f"write of {value.strip()!r} to {rel} did not return within "
                         f"{seconds:g} s; the kernel is still working on it")


class _Pending:
    """One write in a helper thread."""

    def __init__(self, fn: Callable[[], None]):
        import threading    # the simulated kernel only: the real /sys forks
        self.fn = fn
        self.done = threading.Event()
        self.error: "BaseException | None" = None
        self._lock = _thread.allocate_lock()
        self._after: list = []

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as e:      # handed to the waiting thread
            self.error = e
        finally:
            with self._lock:
                self.done.set()
                after, self._after = self._after, []
            for cb in after:
                cb()

    def when_done(self, cb: Callable[[], None]) -> None:
        """Run `cb` once the write returns (now, if it has)."""
        with self._lock:
            if not self.done.is_set():
                self._after.append(cb)
                return
        cb()


def _wait(ready: Callable[[float], bool], seconds: float, on_slow) -> bool:
    """Wait for `ready` up to `seconds`, calling on_slow() once after PATIENCE."""
    if on_slow is not None and seconds > PATIENCE:
        if ready(PATIENCE):
            return True
        on_slow()
        return ready(seconds - PATIENCE)
    return ready(seconds)


# A thread with a waiting hook (the daemon's) waits this long for a write
# it asked for before it calls the hook (before_wait).  An unbind and the
# probe after it mostly return within it, and the reader the hook woke took
# the CPU from the writer process meanwhile: under QEMU/TCG it ran first,
# on the same vCPU, and the unbind entered the kernel 0.5 to 1 ms later
# (bench figure 7, traced).  Other devices' uevents wait at most this long.
HOLD = 0.05


def _await(ready: Callable[[float], bool], seconds: float, on_slow) -> bool:
    """_wait for a write in a helper's hands, this thread's waiting hook
    called once it has not returned within HOLD (at once if it has none)."""
    if seconds > HOLD and getattr(_held, "before_wait", None) is not None:
        if ready(HOLD):
            return True
        seconds -= HOLD
    before_wait()
    return _wait(ready, seconds, on_slow)


class _Helper:
    """A daemon thread that runs writes handed to it, one at a time; kept
    for the next write, since a thread per write cost a coldplug of 4,000
    devices about a tenth of its own time."""

    def __init__(self):
        import threading
        from _queue import SimpleQueue
        self.jobs: "SimpleQueue[_Pending]" = SimpleQueue()
        threading.Thread(target=self._loop, name="sysfs-writer", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.jobs.get().run()


_idle: list = []
_idle_lock = _thread.allocate_lock()


def _release(helper: _Helper) -> None:
    with _idle_lock:
        _idle.append(helper)


def in_thread(fn: Callable[[], None], rel: str, value: str, seconds: float,
              on_slow=None) -> None:
    p = _Pending(fn)
    with _idle_lock:
        helper = _idle.pop() if _idle else _Helper()
    helper.jobs.put(p)
    if not _await(p.done.wait, seconds, on_slow):
        # Abandoned: it rejoins the idle helpers if the kernel ever returns.
        p.when_done(lambda: _release(helper))
        raise Stuck(rel, value, seconds, p)
    _release(helper)
    if p.error is not None:
        raise p.error


_abandoned: list = []       # writers left in the kernel, reaped once they exit
_writers: list = []         # idle writers
_held = _thread._local()


class _ThisThread:
    """Sets one of this thread's settings (`name` on _held) for a block;
    the one before is restored after it."""
    name = ""

    def __init__(self, value):
        self.value, self._prev = value, None

    def __enter__(self):
        self._prev = getattr(_held, self.name, None)
        setattr(_held, self.name, self.value)
        return self

    def __exit__(self, *exc):
        setattr(_held, self.name, self._prev)
        return False


class holding(_ThisThread):
    """Writes from this thread are for the device whose lock is `fd`: the
    writer process is handed a copy of it with each write (SCM_RIGHTS) and
    closes it only when the write returns, so a write abandoned in the
    kernel keeps the device locked, even after this process has exited."""
    name = "fd"


# -- a thread says it is about to wait ----------------------------------------
#
# The daemon's thread that reads an event and takes its device keeps the
# reading of the event source while it works on it, reading nothing, so
# that the uevents that come meanwhile wake no other thread to contend with
# it for the interpreter.  Before it waits on anything outside itself (a
# device lock someone else holds, modprobe, a disk's exclusive open; an
# unbind or probe asked for here once it has taken HOLD) it must give the
# reading up, or every other device's events would wait with it.  Those
# places call before_wait(); what that does is the daemon's
# (waiting_hook), and nothing when no hook is set, as in every command.
# Here, not a module of its own: every command that writes imports this
# one anyway, and a module costs a command about 6 ms under QEMU/TCG.

def before_wait() -> None:
    """Call this thread's waiting hook, once: it is cleared first."""
    fn = getattr(_held, "before_wait", None)
    if fn is not None:
        _held.before_wait = None
        fn()


class waiting_hook(_ThisThread):
    """`fn` is this thread's waiting hook for the block."""
    name = "before_wait"


def _close_all_but(*keep: int) -> None:
    """Every descriptor but those in `keep`; 0, 1 and 2 become /dev/null, or
    a writer left in the kernel would hold the command's output pipes open,
    and whoever reads them (a shell's `| less`, subprocess.run) would wait on."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _send_fds(sock, data: bytes, fds: list) -> None:
    """socket.send_fds, on a _socket.socket."""
    anc = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
            b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds))] if fds else []
    sock.sendmsg([data], anc)


def _recv_fds(sock, size: int, maxfds: int):
    """socket.recv_fds, on a _socket.socket: (data, [descriptors])."""
    data, anc, _flags, _addr = sock.recvmsg(size, _socket.CMSG_SPACE(maxfds * 4))
    fds = []
    for level, kind, raw in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            n = len(raw) - len(raw) % 4
            fds += [int.from_bytes(raw[i:i + 4], sys.byteorder, signed=True)
                    for i in range(0, n, 4)]
    return data, fds


# The writer keeps open what it wrote to under the host's /sys, for the
# next write there: the unbind file of a host driver and the bus's
# drivers_probe are written on every hotplug, and under QEMU/TCG each
# open(2) of a sysfs file cost 0.3 to 0.9 ms, on the way to the unbind and
# from it to the probe (bench figure 7, traced).  Only there: a file of
# the host's /sys is never renamed, and once the kernel has removed it (its
# driver unregistered) a write to it answers ENODEV; the file is then
# opened again, once, which gives the kernel's own ENODEV (an unbind of a
# device not on that driver) again as well.  Under any other root the
# writer opens each time, so that a write never reaches a file moved out
# of the root.
KEEP_UNDER = b"/sys/"
KEEP_OPEN = 16          # files kept open by one writer at most
_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_one(path: bytes, value: bytes, opened: dict) -> bytes:
    """open(2) and write(2): the report, the step that failed and its
    errno (errno 0: done).  `opened`: path -> descriptor, kept from an
    earlier write under KEEP_UNDER."""
    step, err = b"o", 0
    fd = opened.pop(path, None)
    kept = fd is not None
    try:
        if fd is None:
            fd = os.open(path, _FLAGS)
        step = b"w"
        if not kept:
            os.write(fd, value)
        else:
            try:
                os.pwrite(fd, value, 0)     # sysfs ignores the offset
            except OSError as e:
                if e.errno != _errno.ENODEV:
                    raise
                os.close(fd)
                fd = None
                step = b"o"
                fd = os.open(path, _FLAGS)
                step = b"w"
                os.write(fd, value)
    except OSError as e:
        err = e.errno or _errno.EIO
    if fd is not None:
        if err == 0 and path.startswith(KEEP_UNDER) and len(opened) < KEEP_OPEN:
            opened[path] = fd
        else:
            os.close(fd)
    return step + str(err).encode()


def _serve(sock, side) -> None:
    """The writer process: a report for each write asked for.  A request
    may carry more writes after the first, with its deadline: each is
    written at once if the one before succeeded before the deadline, else
    the request ends with b"s" (skipped), so that no write is made after
    the caller has given one before it up as stuck.  The reports of all
    but a request's last write go to `side`, where nobody waits on them
    (_first)."""
    opened: dict = {}
    while True:
        msg, fds = _recv_fds(sock, 8192, 4)
        if not msg:
            return
        fields = msg.split(b"\0")
        try:
            report = _write_one(fields[0], fields[1], opened)
            for i in range(2, len(fields) - 1, 2):
                # With the time the next write begins, its deadline's start.
                side.send(report + b"@" + str(time.monotonic_ns()).encode())
                if report[1:] != b"0" or time.monotonic_ns() >= int(fields[-1]):
                    report = b"s"
                    break
                report = _write_one(fields[i], fields[i + 1], opened)
        except OSError:         # abandoned: nobody waits for the answer
            return
        finally:
            # The lock goes before the last report: whoever reads it may
            # find the device free at once.
            for f in fds:
                os.close(f)
        try:
            sock.send(report)
        except OSError:
            return


class _Writer:
    """A forked writer process and our end of its socket.  Forked once and
    reused (a fork per write cost 3 to 7 ms here); replaced when abandoned."""

    def __init__(self):
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        side, their_side = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:        # no Python-level clean-up in the child
            try:
                _close_all_but(theirs.fileno(), their_side.fileno())
                _serve(theirs, their_side)
            finally:
                os._exit(0)
        theirs.close()
        their_side.close()
        self.pid, self.sock, self.side = pid, ours, side
        self.last = None        # a request's last report, read with its first (_first)
        self.began = None       # when the write after the last side report read began

    def when_done(self, cb: Callable[[], None]) -> None:
        # The writer holds its own copy of the lock: ours can go now.
        cb()

    def reaped(self) -> bool:
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] != 0
        except ChildProcessError:
            return True


def _reap() -> None:
    for w in list(_abandoned):
        if w.reaped():
            _abandoned.remove(w)


def in_child(path: str, rel: str, value: str, seconds: float, on_slow=None,
             then=()) -> None:
    """open(2) and write(2) of `value` to `path` in a writer process.

    then=[(path, value), ...]: the writes this thread asks for next, in
    turn, if this one succeeds (an override's unbind and drivers_probe).
    The writer makes each as soon as the one before returns, instead of
    waiting for the next request: under QEMU/TCG each request's round trip
    between the two processes cost 1 to 3 ms of a hotplug.  This call
    returns once all are made (or past its deadline, once this one is:
    _first); the next in_child calls collect the others' reports."""
    _reap()
    pending = getattr(_held, "then", None)
    if pending is not None:
        _held.then = None
        writer, rest = pending
        try:
            while rest:
                (then_path, then_value), rest = rest[0], rest[1:]
                if (then_path, then_value) == (path, value):
                    _next(writer, rest, rel, value, seconds, on_slow)
                    if rest:
                        _held.then = (writer, rest)
                    return
                # Not the write announced (the caller changed course): that
                # one is made regardless, so wait for it before going on.
                try:
                    _next(writer, rest, rel, then_value, seconds, on_slow)
                except SysfsError:
                    break       # nor are those after it: the request ended
        except _Skipped:
            pass    # one before it ended near its deadline: asked for below
    with _idle_lock:
        writer = _writers.pop() if _writers else None
    if writer is None:
        writer = _Writer()
    writer.began = None
    held = getattr(_held, "fd", None)
    request = [path.encode(), value.encode("ascii")]
    for then_path, then_value in then:
        request += [then_path.encode(), then_value.encode("ascii")]
    if then:
        request.append(str(time.monotonic_ns() + int(seconds * 1e9)).encode())
    try:
        _send_fds(writer.sock, b"\0".join(request), [held] if held is not None else [])
    except OSError as e:
        _abandon(writer)
        raise SysfsError(rel, f"cannot reach the writer process: {e.strerror}") from None
    if not then:
        _report(writer, rel, value, seconds, on_slow)
        return
    _first(writer, rel, value, seconds, on_slow)
    _held.then = (writer, list(then))


def _next(writer: "_Writer", rest: list, rel: str, value: str, seconds: float,
          on_slow) -> None:
    """The report of a write announced by an earlier in_child call, with
    `rest` announced after it: the request's last when there are none."""
    if not rest:
        _report(writer, rel, value, seconds, on_slow)
    else:
        _between(writer, rel, value, seconds, on_slow)


def _ready(sock, t: float) -> bool:
    return bool(select.select([sock], [], [], max(t, 0))[0])


def _last_report(writer: _Writer, seconds: float, on_slow) -> bool:
    """Wait up to `seconds` for a report on the writer's socket (the only
    or the last of its request).  The last look is at once: a report sent
    just before the deadline is never taken for a stuck write (the writer
    decides on the second write by the same clock)."""
    return _await(lambda t: _ready(writer.sock, t), seconds, on_slow) \
        or _ready(writer.sock, 0)


def _first(writer: _Writer, rel: str, value: str, seconds: float, on_slow) -> None:
    """The first write of a request that carries more.  Its report goes
    to the writer's side socket, where it wakes nobody: this thread waits
    for the request's last report (all its writes made, or the rest
    skipped) and reads the first one then.  Woken by the first report, it
    took the CPU from the writer between an unbind and its probe: under
    QEMU/TCG the probe began 1 to 1.5 ms later (bench figure 7, traced).
    Past the deadline without that last report, the first one says which
    write the kernel is still working on."""
    if _last_report(writer, seconds, on_slow):
        writer.last = writer.sock.recv(64)      # b"": died; the last write's to report
    if not _ready(writer.side, 0):
        died = writer.last == b""
        _abandon(writer)
        if died:
            raise SysfsError(rel, "the writer process died")
        raise Stuck(rel, value, seconds, writer)
    _side_report(writer, rel, value)


def _between(writer: _Writer, rel: str, value: str, seconds: float, on_slow) -> None:
    """A write of a request that is neither its first nor its last.  Its
    report comes on the side socket, unless the request ended before it
    (the last report, b"s", with none on the side for it)."""
    if writer.last is None:
        either = lambda t: bool(select.select([writer.side, writer.sock], [], [],  # noqa: E731
                                              max(t, 0))[0])
        if not (_await(either, _left(writer, seconds), on_slow) or either(0)):
            _abandon(writer)
            raise Stuck(rel, value, seconds, writer)
    # The writer sends a write's side report before the request's last
    # one: whichever came, the side is read first.
    if _ready(writer.side, 0):
        _side_report(writer, rel, value)
    else:
        _report(writer, rel, value, seconds, on_slow)


def _side_report(writer: _Writer, rel: str, value: str) -> None:
    """Read and check a report that is on the side socket.  After a
    failed write the writer makes none of the request's others."""
    report, _, began = writer.side.recv(64).partition(b"@")
    writer.began = int(began) if began else None
    try:
        _check(report, rel, value)
    except SysfsError:
        last, writer.last = writer.last, None
        if last is None:
            last = writer.sock.recv(64)     # sent right after this one
        if last == b"s":
            _reuse(writer)
        else:
            _abandon(writer)
        raise


def _abandon(writer: _Writer) -> None:
    """Left in the kernel, or dead: reaped once it exits (_reap)."""
    writer.sock.close()
    writer.side.close()
    _abandoned.append(writer)


def _reuse(writer: _Writer) -> None:
    with _idle_lock:
        _writers.append(writer)


class _Skipped(Exception):
    """The writer did not make the second write of a request."""


def _report(writer: _Writer, rel: str, value: str, seconds: float, on_slow) -> None:
    """Wait for the writer's report on one write (the only one of its
    request, or the last, unless _first read that already); the writer
    goes back to the idle ones."""
    report, writer.last = writer.last, None
    if report is None:
        # The write is in the writer's hands (asked for, or the last of a
        # request): this thread waits now.
        if not _last_report(writer, _left(writer, seconds), on_slow):
            _abandon(writer)
            raise Stuck(rel, value, seconds, writer)
        report = writer.sock.recv(64)
    if not report:
        _abandon(writer)
        raise SysfsError(rel, "the writer process died")
    _reuse(writer)
    if report == b"s":
        # The first write ended past the deadline by the writer's look at
        # the clock, though not by ours: this one is not made yet.
        raise _Skipped()
    _check(report, rel, value)


def _left(writer: _Writer, seconds: float) -> float:
    """How long to wait for a write that is not the first of its request:
    its deadline runs from when the writer began it, which its side report
    before it said.  Waited for from the caller's own start instead, a
    stuck unbind after an override would be given up only after twice
    its deadline."""
    if writer.began is None:
        return seconds
    return max(0.0, seconds - (time.monotonic_ns() - writer.began) / 1e9)


def _check(report: bytes, rel: str, value: str) -> None:
    """A write's report: nothing when it was made, else its SysfsError."""
    step, err = report[:1], int(report[1:] or b"0")
    if err == 0:
        return
    if step == b"o":
        raise SysfsError(rel, f"cannot open for writing: {os.strerror(err)}", err)
    raise SysfsError(rel, f"write of {value!r} failed: {os.strerror(err)}", err)
