"""Unbinds that never return (deadline.py): the CLI gives up after the
deadline, the device is `stuck` and stays locked, the daemon serves every
other device meanwhile and completes or rolls back once the kernel is done."""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import io
import json
import os
import time

import pytest

from vfio_flavourd import actions, deadline
from vfio_flavourd.commands import apply as apply_cmd, status as status_cmd
from vfio_flavourd.errors import SysfsError
from vfio_flavourd.sim import Hang, ProbeFails

from simhost import E1000E, VIRTIO, build_host, driver_of, make_ctx, write_policy
from test_daemon import Harness

UNBIND = "sys/bus/pci/drivers/virtio-pci/unbind"
POLICY = """\
version: 1
rules:
  - name: virtio
    match: {vendor: 0x1af4}
    flavour: vfio
    unbind_timeout: %s
  - name: nics
    match: {vendor: 0x8086, device: 0x10d3}
    flavour: vfio
"""


def sim(tmp_path, timeout="0.3"):
    # A free slot behind 0000:00:06.0 for hotplug.
    kernel = build_host(tmp_path).bridge("0000:00:06.0", secondary=0x07).kernel()
    write_policy(tmp_path, POLICY % timeout)
    return kernel, make_ctx(kernel, stderr=io.StringIO())


def wait_for(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_apply_returns_after_the_deadline_nonzero_and_status_shows_stuck(tmp_path, capsys):
    kernel, ctx = sim(tmp_path)
    hang = Hang(UNBIND, VIRTIO)
    kernel.inject(hang)
    args = argparse.Namespace(addresses=[VIRTIO, E1000E], dry_run=False, force=False,
                              json=False, unbind_timeout=None)
    t0 = time.monotonic()
    rc = apply_cmd.run(ctx, args)
    took = time.monotonic() - t0
    out, err = capsys.readouterr()
    assert rc == 1 and hang.waiting.is_set()
    assert 0.3 <= took < 5, took
    assert f"{VIRTIO}  stuck" in out and "1 bound, 1 stuck" in out
    assert err.startswith(f"vfio-flavourd: error: {VIRTIO} is stuck: write of '{VIRTIO}' to "
                          f"{UNBIND} did not return within 0.3 s")
    assert driver_of(kernel, E1000E) == "vfio-pci"         # the next device went on
    rec = ctx.state.get(VIRTIO)
    assert (rec["outcome"], rec["driver"], rec["target_driver"]) == ("stuck", None,
                                                                   "virtio_vfio_pci")
    assert not actions.lock_is_free(ctx.root, VIRTIO)      # held by the abandoned write

    status_cmd.run(ctx, argparse.Namespace(json=True))
    row = {r["address"]: r for r in json.loads(capsys.readouterr().out)}[VIRTIO]
    assert (row["outcome"], row["stuck"], row["stuck_write"]) == ("stuck", True, UNBIND)
    status_cmd.run(ctx, argparse.Namespace(json=False))
    text = capsys.readouterr().out
    assert f"\n{VIRTIO} is stuck: write of '{VIRTIO}' to {UNBIND} did not return" in text

    hang.release()        # the kernel finishes: the lock goes with the write
    assert wait_for(lambda: actions.lock_is_free(ctx.root, VIRTIO))
    assert driver_of(kernel, VIRTIO) is None


def test_an_override_write_the_kernel_holds_is_stuck_past_the_deadline(tmp_path, capsys):
    # driver_override waits for the device's lock (driver_set_override),
    # which a probe or another tool's remove may hold: the write has the
    # deadline, the device stays on its driver, and the next device goes on.
    kernel, ctx = sim(tmp_path)
    override = f"sys/bus/pci/devices/{VIRTIO}/driver_override"
    hang = Hang(override, "virtio_vfio_pci")
    kernel.inject(hang)
    import threading
    got = {}
    run = threading.Thread(target=lambda: got.update(rc=apply_cmd.run(ctx, argparse.Namespace(
        addresses=[VIRTIO, E1000E], dry_run=False, force=False, json=True,
        unbind_timeout=None))))
    t0 = time.monotonic()
    run.start()
    run.join(10)
    took = time.monotonic() - t0
    if run.is_alive():          # no deadline on the write: let it go, then fail
        hang.release()
        run.join(10)
        pytest.fail("apply waited on the override write past its deadline")
    assert got["rc"] == 1 and hang.waiting.is_set() and 0.3 <= took < 5, (got, took)
    by = {o["address"]: o for o in json.loads(capsys.readouterr().out)}
    assert by[VIRTIO]["result"] == "stuck" and override in by[VIRTIO]["message"]
    assert by[E1000E]["result"] == "bound"
    assert driver_of(kernel, VIRTIO) == "virtio-pci"
    assert ctx.state.get(VIRTIO)["stuck_write"] == override
    assert not actions.lock_is_free(ctx.root, VIRTIO)      # held by the abandoned write
    hang.release()
    assert wait_for(lambda: actions.lock_is_free(ctx.root, VIRTIO))
    # The override went in late; the next apply completes the move.
    rc = apply_cmd.run(ctx, argparse.Namespace(addresses=[VIRTIO], dry_run=False, force=False,
                                               json=True, unbind_timeout=None))
    o, = json.loads(capsys.readouterr().out)
    assert rc == 0 and o["result"] == "bound" and driver_of(kernel, VIRTIO) == "virtio_vfio_pci"


def test_a_release_whose_override_clear_the_kernel_holds_is_stuck(tmp_path):
    kernel, ctx = sim(tmp_path)
    _, o = actions.decide_and_carry_out(ctx, ctx.binder(0), VIRTIO)
    assert o.result == "bound"
    hang = Hang(f"sys/bus/pci/devices/{VIRTIO}/driver_override")
    kernel.inject(hang)
    binder = ctx.binder(0, unbind_timeout=0.3)
    import threading
    got = []
    run = threading.Thread(target=lambda: got.append(
        binder.release(actions.fresh(ctx.sysfs, VIRTIO))))
    run.start()
    run.join(10)
    if run.is_alive():
        hang.release()
        run.join(10)
        pytest.fail("release waited on the override write past its deadline")
    assert got[0].result == "stuck", got
    assert driver_of(kernel, VIRTIO) == "virtio_vfio_pci"     # nothing else was done
    hang.release()


def test_the_cli_flag_overrides_the_rules_deadline(tmp_path, capsys):
    kernel, ctx = sim(tmp_path, timeout="30")
    kernel.inject(Hang(UNBIND, VIRTIO))
    t0 = time.monotonic()
    rc = apply_cmd.run(ctx, argparse.Namespace(addresses=[VIRTIO], dry_run=False, force=False,
                                               json=True, unbind_timeout=0.2))
    assert rc == 1 and time.monotonic() - t0 < 5
    o, = json.loads(capsys.readouterr().out)
    assert (o["result"], o["ok"]) == ("stuck", False)
    assert "within 0.2 s" in o["message"]


def test_policy_checks_unbind_timeout(tmp_path):
    from vfio_flavourd.errors import PolicyError
    kernel, ctx = sim(tmp_path, timeout="0")
    with pytest.raises(PolicyError) as e:
        ctx.policy
    assert "expected a number of seconds (more than 0, at most 86400), found 0" in str(
        e.value.problems[0])
    kernel, ctx = sim(tmp_path, timeout="2.5")
    assert ctx.policy.rules[0].unbind_timeout == 2.5


@pytest.mark.parametrize("probe_fails", [False, True])
def test_daemon_goes_on_and_completes_or_rolls_back_when_released(tmp_path, probe_fails):
    # A deadline longer than deadline.PATIENCE: a spare worker takes the queue.
    kernel, _ = sim(tmp_path, timeout="3")
    hang = Hang(UNBIND, VIRTIO)
    kernel.inject(hang)
    h = Harness(tmp_path, kernel).start()
    # READY came before the deadline, with every other device handled.
    assert hang.waiting.is_set() and kernel.device(VIRTIO).driver == "virtio-pci"
    assert driver_of(kernel, E1000E) == "vfio-pci"
    t0 = time.monotonic()
    kernel.add_device("0000:07:00.0", 0x8086, 0x10D3, 0x020000, subsys=(0x8086, 0xA01F))
    assert wait_for(lambda: driver_of(kernel, "0000:07:00.0") == "vfio-pci", 10)
    assert time.monotonic() - t0 < 2.5           # not after the stuck device's deadline
    assert wait_for(lambda: "1 stuck" in h.daemon.status_text(), 10)
    assert h.ctx.state.get(VIRTIO)["outcome"] == "stuck"
    stuck = [r for r in h.records if getattr(r, "fields", {}).get("RESULT") == "stuck"]
    assert stuck and stuck[0].fields["MESSAGE_ID"] == "1c412baae165441dba1e69a5e8838bb5"
    if probe_fails:
        kernel.inject(ProbeFails("virtio_vfio_pci"), ProbeFails("vfio-pci"))
    hang.release()
    want = "virtio-pci" if probe_fails else "virtio_vfio_pci"
    assert wait_for(lambda: driver_of(kernel, VIRTIO) == want and
                    "stuck" not in h.daemon.status_text(), 15), (
        driver_of(kernel, VIRTIO), h.daemon.status_text(), h.log_text()[-5:])
    rec = h.ctx.state.get(VIRTIO)
    assert rec["outcome"] == ("failed" if probe_fails else "bound")
    assert h.stop() == 0


def test_a_hot_added_device_stuck_in_the_thread_that_read_it_stops_no_other(tmp_path):
    # The reader binds a hot-added device itself, having handed the reading
    # over: its unbind hanging holds up neither the events nor the next
    # device, and the spare thread started meanwhile leaves once done.
    kernel, _ = sim(tmp_path, timeout="3")
    h = Harness(tmp_path, kernel).start()
    h.idle()
    stuck, nic = "0000:07:00.0", "0000:07:00.1"
    hang = Hang(UNBIND, stuck)
    kernel.inject(hang)
    kernel.add_device(stuck, 0x1AF4, 0x1041, 0x020000, subsys=(0x1AF4, 0x1100))
    assert hang.waiting.wait(10)
    t0 = time.monotonic()
    kernel.add_device(nic, 0x8086, 0x10D3, 0x020000, subsys=(0x8086, 0xA01F))
    assert wait_for(lambda: driver_of(kernel, nic) == "vfio-pci", 10)
    assert time.monotonic() - t0 < 2.5           # not after the stuck device's deadline
    assert wait_for(lambda: "1 stuck" in h.daemon.status_text(), 10)
    hang.release()
    assert wait_for(lambda: driver_of(kernel, stuck) == "virtio_vfio_pci" and
                    "stuck" not in h.daemon.status_text(), 15), h.log_text()[-5:]
    assert wait_for(lambda: h.daemon._workers == 2, 5), h.daemon._workers
    assert h.stop() == 0


def test_write_in_a_child_real_file_error_and_a_write_that_blocks(tmp_path):
    target = tmp_path / "attr"
    target.write_text("")
    deadline.in_child(str(target), "sys/attr", "0000:01:00.0", 5)
    assert target.read_text() == "0000:01:00.0"
    with pytest.raises(SysfsError, match="cannot open for writing: No such file"):
        deadline.in_child(str(tmp_path / "none"), "sys/none", "x", 5)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)             # open(O_WRONLY) blocks until a reader comes
    slow = []
    lock = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    with pytest.raises(deadline.Stuck) as e, deadline.holding(lock):
        deadline.in_child(str(fifo), "sys/fifo", "x", 1.2, on_slow=lambda: slow.append(1))
    assert slow == [1] and "did not return within 1.2 s" in str(e.value)
    os.close(lock)              # ours goes; the writer's copy keeps the lock

    def locked():
        fd = os.open(tmp_path / "lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
    assert locked()
    writer = e.value.helper
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)    # let the abandoned write finish
    try:
        assert wait_for(lambda: (deadline._reap(), writer not in deadline._abandoned)[1], 10)
        assert not locked()
    finally:
        os.close(fd)


def test_a_stuck_writer_holds_no_output_pipe_of_the_command(tmp_path):
    """`vfio-flavourd apply | cat` must end when apply does, even while its
    writer sits in the kernel: the writer keeps none of the command's
    descriptors but the lock."""
    import subprocess
    import sys
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = (f"from vfio_flavourd import deadline\n"
            f"try:\n    deadline.in_child({str(fifo)!r}, 'sys/fifo', 'x', 0.2)\n"
            f"except deadline.Stuck as e:\n    print('stuck', flush=True)\n")
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=30)
    assert res.stdout == "stuck\n" and time.monotonic() - t0 < 20
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)      # let the writer go
    time.sleep(0.2)
    os.close(fd)


def test_a_write_announced_with_then_is_made_by_the_same_request(tmp_path, monkeypatch):
    """unbind then drivers_probe: one round trip to the writer, not two."""
    first, second = tmp_path / "unbind", tmp_path / "drivers_probe"
    first.write_text("")
    second.write_text("")
    sent = []
    real_send = deadline._send_fds
    monkeypatch.setattr(deadline, "_send_fds", lambda *a: (sent.append(a[1]), real_send(*a)))
    deadline.in_child(str(first), "sys/unbind", "0000:01:00.0", 5,
                      then=[(str(second), "0000:01:00.0")])
    deadline.in_child(str(second), "sys/drivers_probe", "0000:01:00.0", 5)
    assert first.read_text() == second.read_text() == "0000:01:00.0"
    assert len(sent) == 1 and sent[0].count(b"\0") == 4
    # The writer is free again: the next write is a request of its own.
    deadline.in_child(str(first), "sys/unbind", "0000:02:00.0", 5)
    assert first.read_text() == "0000:02:00.0" and len(sent) == 2


def test_the_announced_write_is_not_made_after_a_failed_one(tmp_path):
    second = tmp_path / "drivers_probe"
    second.write_text("")
    with pytest.raises(SysfsError, match="cannot open for writing: No such file"):
        deadline.in_child(str(tmp_path / "none"), "sys/none", "x", 5,
                          then=[(str(second), "0000:01:00.0")])
    assert second.read_text() == ""
    assert getattr(deadline._held, "then", None) is None
    deadline.in_child(str(second), "sys/drivers_probe", "0000:03:00.0", 5)
    assert second.read_text() == "0000:03:00.0"


def test_the_announced_write_is_not_made_after_a_stuck_one(tmp_path):
    fifo, second = tmp_path / "fifo", tmp_path / "drivers_probe"
    os.mkfifo(fifo)
    second.write_text("")
    with pytest.raises(deadline.Stuck) as e:
        deadline.in_child(str(fifo), "sys/fifo", "x", 0.3, then=[(str(second), "0000:01:00.0")])
    writer = e.value.helper
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)    # the kernel "returns" at last
    try:
        assert wait_for(lambda: (deadline._reap(), writer not in deadline._abandoned)[1], 10)
    finally:
        os.close(fd)
    assert second.read_text() == ""
    assert getattr(deadline._held, "then", None) is None


def report(side) -> bytes:
    """A report from the side socket, without the time that follows it."""
    return side.recv(64).partition(b"@")[0]


@contextlib.contextmanager
def writer_in_a_thread():
    """deadline._serve on a thread: (the request socket, the side one)."""
    import socket
    import threading
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    side, their_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = threading.Thread(target=deadline._serve, args=(theirs, their_side), daemon=True)
    server.start()
    try:
        yield ours, side
    finally:
        ours.close()
        server.join(5)
        for sock in (theirs, side, their_side):
            sock.close()


def test_the_writer_skips_the_second_write_past_the_first_ones_deadline(tmp_path):
    """The writer's own check, by the clock the caller's deadline is on: a
    first write that ends past it (the caller gave up) is not followed."""
    first, second = tmp_path / "unbind", tmp_path / "drivers_probe"
    first.write_text("")
    second.write_text("")
    with writer_in_a_thread() as (ours, side):
        # The first write's report comes on the side socket, the last one
        # on the socket the request came by.
        past = str(time.monotonic_ns() - 1).encode()
        ours.send(b"\0".join([str(first).encode(), b"a", str(second).encode(), b"b", past]))
        assert ours.recv(64) == b"s" and report(side) == b"w0"
        assert first.read_text() == "a" and second.read_text() == ""
        later = str(time.monotonic_ns() + 10**10).encode()
        ours.send(b"\0".join([str(first).encode(), b"c", str(second).encode(), b"d", later]))
        assert ours.recv(64) == b"w0" and report(side) == b"w0"
        assert first.read_text() == "c" and second.read_text() == "d"
        ours.send(b"\0".join([str(tmp_path / "none").encode(), b"e", str(second).encode(),
                              b"f", later]))
        assert ours.recv(64) == b"s" and report(side) == b"o2"
        assert second.read_text() == "d"


def test_a_write_other_than_the_announced_one_waits_for_that_one(tmp_path):
    first, second, other = tmp_path / "unbind", tmp_path / "drivers_probe", tmp_path / "bind"
    for f in (first, second, other):
        f.write_text("")
    deadline.in_child(str(first), "sys/unbind", "a", 5, then=[(str(second), "b")])
    deadline.in_child(str(other), "sys/bind", "c", 5)
    assert (first.read_text(), second.read_text(), other.read_text()) == ("a", "b", "c")
    assert getattr(deadline._held, "then", None) is None


def test_a_second_write_the_writer_skipped_is_asked_for_again(tmp_path, monkeypatch):
    """The writer skips the second write when the first ended past the
    deadline by its clock; if the caller still took the first in time, the
    second is then made by a request of its own, not lost."""
    first, second = tmp_path / "unbind", tmp_path / "drivers_probe"
    first.write_text("")
    second.write_text("")
    deadline.in_child(str(first), "sys/unbind", "0", 5)    # a writer forked beforehand
    sent = []
    real_send = deadline._send_fds
    monkeypatch.setattr(deadline, "_send_fds", lambda *a: (sent.append(a[1]), real_send(*a)))
    real_ns = deadline.time.monotonic_ns
    # The deadline handed to the writer is past by the writer's clock.
    monkeypatch.setattr(deadline.time, "monotonic_ns", lambda: real_ns() - 10**12)
    deadline.in_child(str(first), "sys/unbind", "a", 5, then=[(str(second), "b")])
    monkeypatch.setattr(deadline.time, "monotonic_ns", real_ns)
    assert second.read_text() == ""             # skipped by the writer
    deadline.in_child(str(second), "sys/drivers_probe", "b", 5)
    assert (first.read_text(), second.read_text()) == ("a", "b")
    assert len(sent) == 2 and getattr(deadline._held, "then", None) is None


def test_the_waiting_hook_is_called_only_for_a_write_past_hold(tmp_path, monkeypatch):
    # A thread with a waiting hook (the daemon's binding thread) keeps what
    # it holds through a write that returns within HOLD, and calls the hook
    # once one has not (deadline._await), in the writer process's case.
    monkeypatch.setattr(deadline, "HOLD", 0.3)
    called = []
    target = tmp_path / "attr"
    target.write_text("")
    with deadline.waiting_hook(lambda: called.append(time.monotonic())):
        deadline.in_child(str(target), "sys/attr", "0000:01:00.0", 5)
        assert target.read_text() == "0000:01:00.0" and called == []
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)             # open(O_WRONLY) blocks until a reader comes
        began = time.monotonic()
        with pytest.raises(deadline.Stuck):
            deadline.in_child(str(fifo), "sys/fifo", "x", 0.8)
        assert len(called) == 1 and 0.3 <= called[0] - began < 0.8, (called, began)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)    # let the abandoned write finish
    try:
        assert wait_for(lambda: (deadline._reap(), not deadline._abandoned)[1], 10)
    finally:
        os.close(fd)


def test_the_writer_keeps_open_only_what_is_under_keep_under(tmp_path, monkeypatch):
    # Outside KEEP_UNDER (the host's /sys/) every write opens its file.
    opened = {}
    target = tmp_path / "attr"
    target.write_text("")
    assert deadline._write_one(str(target).encode(), b"a", opened) == b"w0"
    assert opened == {} and target.read_text() == "a"
    # Under it the descriptor is kept for the next write to the same file:
    # a file renamed over this one is not opened, the kept one is written.
    monkeypatch.setattr(deadline, "KEEP_UNDER", str(tmp_path).encode() + b"/")
    path = str(target).encode()
    assert deadline._write_one(path, b"b", opened) == b"w0" and list(opened) == [path]
    os.link(target, tmp_path / "old")
    (tmp_path / "new").write_text("")
    os.replace(tmp_path / "new", target)
    assert deadline._write_one(path, b"c", opened) == b"w0"
    assert (tmp_path / "old").read_text() == "c" and target.read_text() == ""
    # A failed write keeps nothing.
    assert deadline._write_one(str(tmp_path / "none").encode(), b"x", opened) == b"o2"
    assert list(opened) == [path]
    for fd in opened.values():
        os.close(fd)


def test_a_kept_file_the_kernel_removed_is_opened_again_once(tmp_path, monkeypatch):
    # sysfs answers ENODEV on a descriptor whose file it removed (a driver
    # unregistered): the writer opens the path again and writes there.
    monkeypatch.setattr(deadline, "KEEP_UNDER", str(tmp_path).encode() + b"/")
    target = tmp_path / "unbind"
    target.write_text("")
    path = str(target).encode()
    opened = {}
    assert deadline._write_one(path, b"a", opened) == b"w0"
    stale = opened[path]
    os.replace(tmp_path / "unbind", tmp_path / "removed")
    target.write_text("")
    tried = []

    def removed(fd, data, offset):
        tried.append(fd)
        raise OSError(errno.ENODEV, "No such device")
    monkeypatch.setattr(os, "pwrite", removed)
    assert deadline._write_one(path, b"0000:01:00.0", opened) == b"w0"
    assert tried == [stale], tried
    assert target.read_text() == "0000:01:00.0" and (tmp_path / "removed").read_text() == "a"
    assert list(opened) == [path]
    # ENODEV from a file opened just now is the kernel's answer: reported,
    # and the file is not kept.
    write = os.write

    def answers_enodev(fd, data):
        raise OSError(errno.ENODEV, "No such device")
    monkeypatch.setattr(os, "write", answers_enodev)
    fresh = {}
    assert deadline._write_one(path, b"x", fresh) == b"w%d" % errno.ENODEV and fresh == {}
    monkeypatch.setattr(os, "write", write)
    for fd in opened.values():
        os.close(fd)


def test_the_writer_process_keeps_the_file_for_its_next_request(tmp_path, monkeypatch):
    monkeypatch.setattr(deadline, "KEEP_UNDER", str(tmp_path).encode() + b"/")
    while deadline._writers:            # a writer forked with KEEP_UNDER patched
        deadline._abandon(deadline._writers.pop())
    target = tmp_path / "drivers_probe"
    target.write_text("")
    deadline.in_child(str(target), "sys/bus/pci/drivers_probe", "0000:01:00.0", 5)
    os.link(target, tmp_path / "old")
    (tmp_path / "new").write_text("")
    os.replace(tmp_path / "new", target)
    deadline.in_child(str(target), "sys/bus/pci/drivers_probe", "0000:02:00.0", 5)
    assert (tmp_path / "old").read_text() == "0000:02:00.0" and target.read_text() == ""
    while deadline._writers:            # none kept with the test's KEEP_UNDER
        deadline._abandon(deadline._writers.pop())


def test_the_first_write_of_a_request_returns_with_the_second(tmp_path):
    # The first write's report wakes nobody: the caller waits for the last
    # one, so the writer goes from the first write to the second without
    # the caller taking its CPU in between.  The second (a FIFO whose
    # reader comes after 0.3 s) is made by the time the first returns.
    import threading
    first, fifo = tmp_path / "unbind", tmp_path / "drivers_probe"
    first.write_text("")
    os.mkfifo(fifo)
    got = []

    def reader():
        time.sleep(0.3)
        with open(fifo, "rb") as f:
            got.append(f.read())
    t = threading.Thread(target=reader)
    t.start()
    began = time.monotonic()
    deadline.in_child(str(first), "sys/unbind", "a", 5, then=[(str(fifo), "b")])
    assert time.monotonic() - began >= 0.25 and first.read_text() == "a"
    deadline.in_child(str(fifo), "sys/drivers_probe", "b", 5)      # collected, not waited
    t.join(5)
    assert got == [b"b"]
    assert getattr(deadline._held, "then", None) is None


def test_a_second_write_that_hangs_leaves_the_first_done_and_is_stuck(tmp_path):
    # Past the deadline without the last report, the first one says the
    # first write was made: the second is the stuck one.
    first, fifo = tmp_path / "unbind", tmp_path / "drivers_probe"
    first.write_text("")
    os.mkfifo(fifo)             # no reader: the second write's open blocks
    deadline.in_child(str(first), "sys/unbind", "a", 0.4, then=[(str(fifo), "b")])
    assert first.read_text() == "a"
    with pytest.raises(deadline.Stuck) as e:
        deadline.in_child(str(fifo), "sys/drivers_probe", "b", 0.4)
    assert e.value.rel == "sys/drivers_probe"
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)    # let the abandoned write finish
    try:
        assert wait_for(lambda: (deadline._reap(), not deadline._abandoned)[1], 10)
    finally:
        os.close(fd)


def three(tmp_path):
    """An override, an unbind and a drivers_probe, as files."""
    files = [tmp_path / "driver_override", tmp_path / "unbind", tmp_path / "drivers_probe"]
    for f in files:
        f.write_text("")
    return files


def test_three_writes_of_one_request_each_collected_in_turn(tmp_path, monkeypatch):
    override, unbind, probe = three(tmp_path)
    sent = []
    real_send = deadline._send_fds
    monkeypatch.setattr(deadline, "_send_fds", lambda *a: (sent.append(a[1]), real_send(*a)))
    deadline.in_child(str(override), "sys/driver_override", "v", 5,
                      then=[(str(unbind), "a"), (str(probe), "a")])
    assert [f.read_text() for f in (override, unbind, probe)] == ["v", "a", "a"]
    deadline.in_child(str(unbind), "sys/unbind", "a", 5)
    assert deadline._held.then is not None             # the probe's report still to take
    deadline.in_child(str(probe), "sys/drivers_probe", "a", 5)
    assert len(sent) == 1 and getattr(deadline._held, "then", None) is None
    deadline.in_child(str(probe), "sys/drivers_probe", "b", 5)
    assert probe.read_text() == "b" and len(sent) == 2


def test_a_middle_write_that_fails_ends_the_request_there(tmp_path):
    override, _unbind, probe = three(tmp_path)
    deadline.in_child(str(override), "sys/driver_override", "v", 5,
                      then=[(str(tmp_path / "none"), "a"), (str(probe), "a")])
    with pytest.raises(SysfsError, match="cannot open for writing: No such file"):
        deadline.in_child(str(tmp_path / "none"), "sys/unbind", "a", 5)
    assert probe.read_text() == "" and getattr(deadline._held, "then", None) is None
    assert deadline._writers            # the writer goes back to the idle ones
    deadline.in_child(str(probe), "sys/drivers_probe", "b", 5)
    assert probe.read_text() == "b"


def test_a_middle_write_that_hangs_is_the_stuck_one_and_the_last_is_not_made(tmp_path):
    override, unbind, probe = three(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)             # no reader: the unbind's open blocks
    began = time.monotonic()
    deadline.in_child(str(override), "sys/driver_override", "v", 1.0,
                      then=[(str(fifo), "a"), (str(probe), "a")])
    assert override.read_text() == "v"
    with pytest.raises(deadline.Stuck) as e:
        deadline.in_child(str(fifo), "sys/unbind", "a", 1.0)
    # Given up once its own deadline passed, counted from when the writer
    # began it (right after the override), not after the override's wait.
    assert time.monotonic() - began < 1.7
    assert e.value.rel == "sys/unbind" and getattr(deadline._held, "then", None) is None
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)    # the kernel "returns" past the deadline
    try:
        assert wait_for(lambda: (deadline._reap(), not deadline._abandoned)[1], 10)
    finally:
        os.close(fd)
    assert probe.read_text() == ""


def test_a_course_change_after_the_first_of_three_waits_for_the_other_two(tmp_path):
    override, unbind, probe = three(tmp_path)
    other = tmp_path / "bind"
    other.write_text("")
    deadline.in_child(str(override), "sys/driver_override", "v", 5,
                      then=[(str(unbind), "a"), (str(probe), "a")])
    deadline.in_child(str(other), "sys/bind", "c", 5)
    assert [f.read_text() for f in (unbind, probe, other)] == ["a", "a", "c"]
    assert getattr(deadline._held, "then", None) is None


def test_the_writer_reports_each_write_but_the_last_on_the_side(tmp_path):
    override, unbind, probe = three(tmp_path)
    later = str(time.monotonic_ns() + 10**10).encode()
    with writer_in_a_thread() as (ours, side):
        before = time.monotonic_ns()
        ours.send(b"\0".join([str(override).encode(), b"v", str(unbind).encode(), b"a",
                              str(probe).encode(), b"a", later]))
        assert ours.recv(64) == b"w0"
        # Each with the time the write after it began.
        first, second = side.recv(64).split(b"@"), side.recv(64).split(b"@")
        assert (first[0], second[0]) == (b"w0", b"w0")
        assert before <= int(first[1]) <= int(second[1]) <= time.monotonic_ns()
        assert [f.read_text() for f in (override, unbind, probe)] == ["v", "a", "a"]
        # A failed middle write: reported on the side, then b"s" for the rest.
        ours.send(b"\0".join([str(override).encode(), b"w", str(tmp_path / "none").encode(),
                              b"b", str(probe).encode(), b"b", later]))
        assert ours.recv(64) == b"s"
        assert (report(side), report(side)) == (b"w0", b"o2")
        assert override.read_text() == "w" and probe.read_text() == "a"
        side.setblocking(False)
        with pytest.raises(BlockingIOError):
            side.recv(64)           # nothing for the write not made
