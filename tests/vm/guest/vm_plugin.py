"""pytest plugin for the tests that run inside the vm-test guest.

Not a conftest.py on purpose: a host `pytest` walks into tests/vm/guest/ and
would load one (and a second module named "conftest" shadows the project's
tests/conftest.py for `from conftest import ...`). The guest payload loads
this with `-p vm_plugin` and collects `vmtest_*.py`, names a host run never
collects: those tests bind PCI devices, and the only devices they may touch
are the emulated ones of tests/vm/runner.py's QEMU guest. As a second guard
every test is skipped, and vmguest refuses to write, outside the guest.
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
