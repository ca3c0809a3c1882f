import os
import socket

from vfio_flavourd.notify import Notifier


def listener(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    return s, path


def test_ready_status_watchdog(tmp_path):
    s, path = listener(tmp_path)
    n = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000",
                          "WATCHDOG_PID": str(os.getpid())})
    assert n.watchdog_interval() == 10.0
    n.ready("3 managed")
    assert s.recv(4096) == b"READY=1\nSTATUS=3 managed"
    n.watchdog()
    assert s.recv(4096) == b"WATCHDOG=1"
    n.reloading()
    msg = s.recv(4096).decode().split("\n")
    assert msg[0] == "RELOADING=1" and msg[1].startswith("MONOTONIC_USEC=")
    assert int(msg[1].split("=")[1]) > 0


def test_watchdog_for_another_pid_is_not_ours(tmp_path):
    n = Notifier(environ={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval() is None


def test_without_systemd_nothing_is_sent():
    n = Notifier(environ={})
    assert not n.enabled and n.send(READY=1) is False


def test_abstract_socket(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"vfio-flavourd-test-{os.getpid()}"
    s.bind("\0" + name)
    s.settimeout(2)
    Notifier(environ={"NOTIFY_SOCKET": "@" + name}).status("x")
    assert s.recv(100) == b"STATUS=x"
