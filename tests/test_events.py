import socket

from vfio_flavourd.events import Event, FakeSource, udevd_running


def test_fake_source_yields_until_closed():
    src = FakeSource()
    src.push(Event("add", "0000:01:00.0"))
    src.push(Event("remove", "0000:01:00.0"))
    src.close()
    assert [e.action for e in src] == ["add", "remove"]
    assert src.pushed == 2


def test_udevd_detection_connects_rather_than_trusting_the_file(tmp_path):
    path = str(tmp_path / "control")
    assert not udevd_running(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(1)
    assert udevd_running(path)
    server.close()        # the file stays behind, as udevd's does
    assert (tmp_path / "control").exists()
    assert not udevd_running(path)
