"""The real-kernel tier's daemon helper (`vmtest_scenarios.Daemon`): a wait
for a log line that fails must say what the daemon was doing.  The CI run
of 3 December that failed on "'coldplug done' not met within 20s" kept
nothing else.  Run here on stand-in processes, not the daemon."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture
def scenarios(guest_module):
    return guest_module("vmtest_scenarios")


def stand_in(scenarios, code):
    return scenarios.Daemon(argv=[sys.executable, "-c", code])


def test_a_daemon_that_never_logs_the_line_is_shown_with_its_stacks(scenarios):
    d = stand_in(scenarios, "import time\nprint('starting', flush=True)\n"
                            "def coldplug():\n    time.sleep(60)\ncoldplug()\n")
    with pytest.raises(AssertionError) as e:
        d.wait_log("coldplug done", timeout=1.5)
    text = str(e.value)
    assert "daemon log line 'coldplug done' not met within 1.5s" in text
    assert "alive, stopped with SIGABRT for its stacks" in text
    assert "starting" in text
    # faulthandler's dump names the function the daemon was stuck in.
    assert 'in coldplug' in text
    assert not d.alive()
    d.stop()


def test_a_daemon_that_exits_first_fails_the_wait_at_once(scenarios):
    d = stand_in(scenarios, "import sys\nprint('policy.yaml:3: no such flavour', flush=True)\n"
                            "sys.exit(3)\n")
    with pytest.raises(AssertionError) as e:
        d.wait_log("coldplug done", timeout=60)
    text = str(e.value)
    assert "the daemon exited (3) before it logged 'coldplug done'" in text
    assert "policy.yaml:3: no such flavour" in text
    assert d.stop() == 3


def test_the_line_found_is_no_failure(scenarios):
    d = stand_in(scenarios, "print('coldplug done: 3 devices', flush=True)\n")
    d.wait_log("coldplug done", timeout=60)
    assert d.proc.wait(60) == 0
    d.stop()
