"""pytest set-up for the tests that run inside the vm-test guest.

Outside the guest (a plain `pytest` on a developer's machine) every test
here is skipped: they bind PCI devices, and the only devices they may touch
are the emulated ones of tests/vm/runner.py's QEMU guest.
"""

import json
import os

import pytest

import vmguest

_durations = {}


@pytest.fixture(autouse=True)
def _only_in_guest():
    if not vmguest.in_guest():
        pytest.skip("real-kernel tier: runs only inside the vm-test guest (tests/vm/run)")


@pytest.fixture
def vm():
    """The guest's layout as the host runner wrote it (vm.json)."""
    return vmguest.vm_info()


def pytest_runtest_logreport(report):
    if vmguest.in_guest():
        name = report.nodeid.split("::", 1)[-1]
        _durations[name] = _durations.get(name, 0.0) + report.duration


def pytest_sessionfinish(session):
    if not vmguest.in_guest():
        return
    marks = {}
    try:
        with open(os.path.join(vmguest.SHARE, "marks.jsonl")) as f:
            for line in f:
                m = json.loads(line)
                marks[m["name"]] = m["seconds"]
    except FileNotFoundError:
        pass
    with open(os.path.join(vmguest.SHARE, "timings.json"), "w") as f:
        json.dump({"tests": _durations, "marks": marks}, f, indent=2)
