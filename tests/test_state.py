import json
import threading

import pytest

from vfio_flavourd.errors import FlavourdError
from vfio_flavourd.root import Root
from vfio_flavourd.state import DeviceLock, State


def test_update_and_forget(tmp_path):
    st = State(Root(tmp_path))
    assert st.read() == {}
    st.update("0000:01:00.0", {"module": "vfio_pci", "driver": "vfio-pci"})
    rec = st.get("0000:01:00.0")
    assert rec["driver"] == "vfio-pci" and "since" in rec
    data = json.loads((tmp_path / "run/vfio-flavourd/devices/0000:01:00.0.json").read_text())
    assert data["version"] == 1 and data["record"]["driver"] == "vfio-pci"
    assert st.count() == 1
    (tmp_path / "run/vfio-flavourd/udev").mkdir()
    (tmp_path / "run/vfio-flavourd/udev/0000:01:00.0").write_text("vfio-pci\n")
    st.update("0000:01:00.0", None)
    assert st.read() == {}
    assert not (tmp_path / "run/vfio-flavourd/udev/0000:01:00.0").exists()
    assert st.count() == 0
    assert [p.name for p in (tmp_path / "run/vfio-flavourd/devices").iterdir()] == []


def test_corrupt_state_is_a_warning_not_a_crash(tmp_path):
    warnings = []
    (tmp_path / "run/vfio-flavourd/devices").mkdir(parents=True)
    (tmp_path / "run/vfio-flavourd/devices/0000:01:00.0.json").write_text("{not json")
    st = State(Root(tmp_path), warn=warnings.append)
    assert st.read() == {} and st.get("0000:01:00.0") is None
    assert len(warnings) == 2 and "unreadable state" in warnings[0]


def test_state_json_of_an_older_version_is_split_per_device(tmp_path):
    # An upgrade restarts the daemon but keeps /run: the overrides the old
    # version recorded must stay ours.
    (tmp_path / "run/vfio-flavourd").mkdir(parents=True)
    (tmp_path / "run/vfio-flavourd/state.json").write_text(json.dumps(
        {"version": 1, "devices": {"0000:01:00.0": {"override": "vfio-pci"}}}))
    st = State(Root(tmp_path))
    assert st.get("0000:01:00.0") == {"override": "vfio-pci"}
    assert not (tmp_path / "run/vfio-flavourd/state.json").exists()
    assert list(st.read()) == ["0000:01:00.0"]


def test_corrupt_state_json_of_an_older_version_is_a_warning(tmp_path):
    warnings = []
    (tmp_path / "run/vfio-flavourd").mkdir(parents=True)
    (tmp_path / "run/vfio-flavourd/state.json").write_text("{not json")
    st = State(Root(tmp_path), warn=warnings.append)
    assert st.read() == {}
    assert len(warnings) == 1 and "unreadable state" in warnings[0]


def test_concurrent_updates_lose_nothing(tmp_path):
    st = State(Root(tmp_path))

    def work(n):
        for i in range(20):
            st.update(f"0000:{n:02x}:{i:02x}.0", {"n": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(st.read()) == 80


def test_device_lock_excludes_and_times_out(tmp_path):
    root = Root(tmp_path)
    with DeviceLock(root, "0000:01:00.0"):
        with pytest.raises(FlavourdError) as e:
            with DeviceLock(root, "0000:01:00.0", timeout=0.05):
                pass
        assert str(e.value).startswith("0000:01:00.0: another vfio-flavourd is working on this "
                                       "device")
        with DeviceLock(root, "0000:01:00.1", timeout=0.05):
            pass
    with DeviceLock(root, "0000:01:00.0", timeout=0.05):
        pass
