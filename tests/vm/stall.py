"""The guest kernel's own word that it has stopped: its RCU stall reports.

Under TCG a vCPU of the guest has stopped taking timer interrupts in the
middle of the hotplug benchmark (1 guest run in 7, 3 December 2026): the
add uevent of a device QEMU had just added never reached the test, and
the console showed nothing but reports such as

    rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
    rcu:     0-...!: (0 ticks this GP) idle=6ae8/0/0x0 softirq=35927/35927 fqs=0
    rcu:     (detected by 1, t=5252 jiffies, g=69241, q=56 ncpus=2)
    rcu: rcu_preempt kthread timer wakeup didn't happen for 5251 jiffies! ...
    rcu:     Possible timer handling issue on cpu=0 timer-softirq=9469

until the runner's timeout killed it half an hour later.  Each report names
the grace period the kernel is waiting for (g=N), and the kernel repeats
the report while that grace period stays stuck: the first after
CONFIG_RCU_CPU_STALL_TIMEOUT (21 s on Debian's kernel), the next some
three times later.  One grace period reported twice has been stuck for
over a minute, which no guest test waits on a kernel that runs.

Grace periods can still end on such a guest, pushed by the other CPU's
stall reports, so that the same grace period is not reported twice for
two minutes (the guest of 4 December: g=13017, 13021 and 13025, 21 s
apart, then 13025 again).  Those reports carry the kernel's diagnosis of
the stopped CPU, though: "Possible timer handling issue on cpu=0
timer-softirq=2463", and that count of the CPU's timer softirqs did not
move from one report to the next.  A CPU that ran no timer softirq
between two reports 21 s apart handles no timers: that too is a stopped
guest, told 40 s after it stopped.  Reports of grace periods that each
end, on CPUs whose timers run, are a slow guest, not a stopped one.
"""

import re

# "(detected by 1, t=5252 jiffies, g=69241, q=56 ncpus=2)" for a stall
# another CPU saw; "(t=5252 jiffies g=69241 q=56 ncpus=2)" for one a CPU
# saw of itself.
_GRACE_PERIOD = re.compile(r"\bt=(\d+) jiffies,? g=(-?\d+)")
_STALL = re.compile(r"rcu: INFO: \w+ (?:detected stalls|self-detected stall)")
_TIMER = re.compile(r"Possible timer handling issue on cpu=(\d+) timer-softirq=(\d+)")


class StallWatch:
    """Fed the guest console line by line; `stopped` becomes a sentence
    saying why the guest counts as stopped, else stays None."""

    def __init__(self):
        self.stopped = None
        self._reports = {}      # grace period -> reports seen of it
        self._first = None      # the first stall report line, for the sentence
        self._timer = None
        self._softirqs = {}     # (cpu, its timer-softirq count) -> reports seen
        self._in_report = False

    def feed(self, line):
        line = line.rstrip("\n")
        if _STALL.search(line):
            self._in_report = True
            self._first = self._first or line.strip()
            return
        t = _TIMER.search(line) if "rcu: " in line else None
        if t:
            self._timer = self._timer or t.group(0)
            key = t.groups()
            self._softirqs[key] = self._softirqs.get(key, 0) + 1
            if self._softirqs[key] >= 2 and self.stopped is None:
                self.stopped = (f"its kernel reported cpu {key[0]} with no timer softirq "
                                f"run between two stall reports (timer-softirq={key[1]}; "
                                f"first: {self._first!r})")
            return
        m = _GRACE_PERIOD.search(line)
        if not (self._in_report and m):
            return
        self._in_report = False
        gp = m.group(2)
        self._reports[gp] = self._reports.get(gp, 0) + 1
        if self._reports[gp] >= 2 and self.stopped is None:
            jiffies = int(m.group(1))
            self.stopped = (f"its kernel reported grace period g={gp} stalled twice "
                            f"(t={jiffies} jiffies; first: {self._first!r}"
                            + (f"; {self._timer}" if self._timer else "") + ")")
