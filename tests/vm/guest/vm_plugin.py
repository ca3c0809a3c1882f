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

# Modules run in this order (pytest's own is alphabetical). The packaged
# scenario and the benchmark come last: the package they install stays
# installed until the end of the session, and its files (the udev rule, the
# callout, the policy layers under /etc and /usr/lib) must not change what
# the earlier scenarios see.
MODULE_ORDER = ["vmtest_scenarios", "vmtest_smoke", "vmtest_package", "vmtest_bench",
                "vmtest_guards"]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(MODULE_ORDER)}
    items.sort(key=lambda item: rank.get(item.path.stem, rank["vmtest_package"] - 0.5))


@pytest.fixture(autouse=True)
def _only_in_guest():
    if not vmguest.in_guest():
        pytest.skip("real-kernel tier: runs only inside the vm-test guest (tests/vm/run)")


@pytest.fixture
def vm():
    """The guest's layout as the host runner wrote it (vm.json)."""
    return vmguest.vm_info()


@pytest.fixture(scope="session")
def installed_package():
    """vfio-flavourd's .deb, built on the host from this checkout, installed
    with dpkg -i into the guest's overlay once per boot. A failed build fails
    every test that uses this, with the build log."""
    import vmpkg
    skip = fail = None
    try:
        info, seconds, out = vmpkg.install(vmpkg.PKG)
    except vmpkg.NotPrepared as e:
        skip = str(e)
    except vmpkg.InstallError as e:
        fail = str(e)
    # Outside the except clauses, so the message is not shown twice, chained.
    if skip:
        pytest.skip(skip)
    if fail:
        pytest.fail(fail, pytrace=False)
    vmguest.record_timing("package: dpkg -i vfio-flavourd in the guest", seconds)
    # Not purged afterwards: the guest's root goes with the power-off, and
    # under TCG every dpkg run costs 10 to 20 s of reading dpkg's database
    # (900 packages, 120,000 paths).
    return dict(info, dpkg_output=out, install_seconds=seconds)


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
