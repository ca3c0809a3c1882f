"""The real-kernel tier's watch on the guest's own kernel (tests/vm/stall.py)
and what the runner does with it: a guest whose kernel has stopped is
killed at once rather than at the half-hour timeout.  The console lines
are those of the guest that stopped on 3 December (kept from that run)."""

from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest

VM = os.path.join(os.path.dirname(__file__), "vm")

# The guest that stopped: two reports of grace period 69241, 63 s apart.
STOPPED = """\
vm-guest: stage 2 up at 5.17s, running payload
[  315.170615] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[  315.172423] rcu: \t0-...!: (0 ticks this GP) idle=6ae8/0/0x0 softirq=35927/35927 fqs=0 (false positive?)
[  315.173080] rcu: \t(detected by 1, t=5252 jiffies, g=69241, q=56 ncpus=2)
[  315.184691] rcu: rcu_preempt kthread timer wakeup didn't happen for 5251 jiffies! g69241 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402
[  315.185429] rcu: \tPossible timer handling issue on cpu=0 timer-softirq=9469
[  315.185852] rcu: RCU grace-period kthread stack dump:
[  378.189369] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[  378.190165] rcu: \t0-...!: (0 ticks this GP) idle=6b38/0/0x0 softirq=35927/35927 fqs=1 (false positive?)
[  378.190289] rcu: \t(detected by 1, t=21007 jiffies, g=69241, q=73 ncpus=2)
"""


# The guest of 4 December: grace periods still ended, pushed by CPU 1's
# reports, while CPU 0 ran no timer softirq (2463 in every report).
TIMERS_STOPPED = """\
[   96.429992] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[   96.431895] rcu: \t0-...!: (2 ticks this GP) idle=7260/0/0x0 softirq=6752/6757 fqs=1 (false positive?)
[   96.432406] rcu: \t(detected by 1, t=5252 jiffies, g=13017, q=56 ncpus=2)
[   96.442227] rcu: rcu_preempt kthread timer wakeup didn't happen for 5245 jiffies! g13017 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402
[   96.443268] rcu: \tPossible timer handling issue on cpu=0 timer-softirq=2463
[   96.443798] rcu: rcu_preempt kthread starved for 5246 jiffies! g13017 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402 ->cpu=0
[  117.437788] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[  117.438803] rcu: \t0-...!: (0 ticks this GP) idle=7280/0/0x0 softirq=6757/6757 fqs=0 (false positive?)
[  117.439845] rcu: \t(detected by 1, t=5252 jiffies, g=13021, q=55 ncpus=2)
[  117.441458] rcu: rcu_preempt kthread timer wakeup didn't happen for 5251 jiffies! g13021 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402
[  117.441925] rcu: \tPossible timer handling issue on cpu=0 timer-softirq=2463
"""


@pytest.fixture
def stall(monkeypatch):
    monkeypatch.syspath_prepend(VM)
    import stall
    return stall


def fed(stall, text):
    w = stall.StallWatch()
    for line in text.splitlines(keepends=True):
        w.feed(line)
    return w


def test_one_grace_period_reported_twice_is_a_stopped_kernel(stall):
    w = fed(stall, STOPPED)
    assert w.stopped is not None
    assert "g=69241 stalled twice" in w.stopped
    assert "t=21007 jiffies" in w.stopped
    assert "Possible timer handling issue on cpu=0" in w.stopped


def test_the_first_report_alone_is_not(stall):
    first = "".join(STOPPED.splitlines(keepends=True)[:7])
    assert fed(stall, first).stopped is None


def test_stalls_of_grace_periods_that_end_are_a_slow_guest(stall):
    # The same report twice, but of two grace periods: the first one ended.
    text = STOPPED.replace("t=21007 jiffies, g=69241", "t=5260 jiffies, g=69245")
    assert fed(stall, text).stopped is None


def test_a_cpu_whose_timers_stopped_is_told_before_any_grace_period_repeats(stall):
    w = fed(stall, TIMERS_STOPPED)
    assert w.stopped is not None
    assert "cpu 0 with no timer softirq run between two stall reports" in w.stopped
    assert "timer-softirq=2463" in w.stopped
    # Told on the second report, not before.
    first = "".join(TIMERS_STOPPED.splitlines(keepends=True)[:6])
    assert fed(stall, first).stopped is None


def test_a_cpu_whose_timer_softirqs_still_run_is_a_slow_guest(stall):
    lines = TIMERS_STOPPED.splitlines(keepends=True)
    lines[-1] = lines[-1].replace("timer-softirq=2463", "timer-softirq=2511")
    assert fed(stall, "".join(lines)).stopped is None


def test_a_cpu_that_saw_its_own_stall_counts_as_well(stall):
    text = textwrap.dedent("""\
        [  40.1] rcu: INFO: rcu_preempt self-detected stall on CPU
        [  40.1] rcu: \t1-....: (5249 ticks this GP) idle=d0c/1/0x4000000000000000
        [  40.1] rcu: \t(t=5250 jiffies g=1205 q=89 ncpus=2)
        [ 103.2] rcu: INFO: rcu_preempt self-detected stall on CPU
        [ 103.2] rcu: \t1-....: (21002 ticks this GP) idle=d0c/1/0x4000000000000000
        [ 103.2] rcu: \t(t=21003 jiffies g=1205 q=91 ncpus=2)
        """)
    w = fed(stall, text)
    assert w.stopped is not None and "g=1205" in w.stopped


def test_a_grace_period_number_outside_a_report_is_not_counted(stall):
    # Only the line that closes a stall report counts: the same words in
    # any other line (a test's own output, say) do not.
    text = "t=5 jiffies, g=7 in a test's output\n" * 3
    assert fed(stall, text).stopped is None


def test_an_ordinary_console_is_no_stall(stall):
    text = textwrap.dedent("""\
        qemu-system-x86_64: warning: nic nic0 has no peer
        vm-guest: stage 2 up at 5.17s, running payload
        [   46.763448] virtio_vfio_pci 0000:81:00.0: probe with driver virtio_vfio_pci failed with error -22
        [  481.333136] 9pnet_virtio: no channels available for device hostroot
        vm-guest: payload exited 0
        [  634.503223] reboot: Power down
        """)
    assert fed(stall, text).stopped is None


# --- the runner: a stand-in for QEMU that prints the stalled console --------

FAKE_QEMU = r'''
import json, socket, sys, time
path, console = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(1)
conn, _ = srv.accept()
f = conn.makefile("rb")
conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
f.readline()
conn.sendall(b'{"return": {}}\n')
for line in open(console):
    sys.stdout.write(line)
    sys.stdout.flush()
    time.sleep(0.01)
time.sleep(600)
'''


def stand_in(vm_runner, tmp_path, console):
    (tmp_path / "fake_qemu.py").write_text(FAKE_QEMU)
    (tmp_path / "console.txt").write_text(console)
    guest = vm_runner.Guest({"kernel_release": "6.12", "linux_source": "-"},
                         str(tmp_path / "run"))
    os.makedirs(guest.rundir)
    guest.qemu_argv = lambda: [sys.executable, str(tmp_path / "fake_qemu.py"),
                               guest.qmp_path, str(tmp_path / "console.txt")]
    return guest


def test_the_runner_kills_a_guest_whose_kernel_stopped(vm_runner, tmp_path):
    guest = stand_in(vm_runner, tmp_path, STOPPED)
    t0 = time.monotonic()
    code = guest.run("true\n", timeout=120)
    assert code is None
    assert guest.stall.stopped and "g=69241" in guest.stall.stopped
    assert not guest.timed_out
    # Killed on the second report, not at the timeout.
    assert time.monotonic() - t0 < 60
    assert any(line.startswith("guest stopped: its kernel reported") for line in guest.host_log)


def test_the_runner_leaves_a_slow_guest_to_its_timeout(vm_runner, tmp_path):
    slow = STOPPED.replace("t=21007 jiffies, g=69241", "t=5260 jiffies, g=69245")
    guest = stand_in(vm_runner, tmp_path, slow)
    assert guest.run("true\n", timeout=3) is None
    assert guest.stall.stopped is None
    assert guest.timed_out
