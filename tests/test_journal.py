"""journald's native protocol without systemd-python, and the stderr
fallback with priority prefixes."""

import logging
import socket
import struct
import sys

import pytest

from vfio_flavourd import journal, log
from vfio_flavourd.outcome import Outcome


def parse(datagram: bytes) -> dict:
    """The fields of one native-protocol datagram (text and binary forms)."""
    fields, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            i = nl + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", datagram[nl + 1:nl + 9])
            value = datagram[nl + 9:nl + 9 + size]
            assert datagram[nl + 9 + size:nl + 10 + size] == b"\n"
            i = nl + 10 + size
        fields[name.decode()] = value.decode()
    return fields


@pytest.fixture
def journald(tmp_path):
    path = str(tmp_path / "journal.socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    yield path, lambda: parse(s.recv(1 << 20))
    s.close()


def logger_to(handler):
    logger = logging.getLogger("vfio-flavourd-test-journal")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def test_an_outcome_arrives_with_its_fields_and_priority(journald):
    path, receive = journald
    logger = logger_to(journal.JournalHandler("vfio-flavourd", path))
    log.log_outcome(logger, Outcome("0000:3b:00.2", "bind", "failed", module="mlx5_vfio_pci",
                                    rule="vfs", message="probe failed"))
    f = receive()
    assert f["MESSAGE"] == "0000:3b:00.2: failed: probe failed"
    assert f["PRIORITY"] == "4" and f["SYSLOG_IDENTIFIER"] == "vfio-flavourd"
    assert (f["PCI_SLOT"], f["MODULE"], f["RULE"], f["RESULT"], f["MESSAGE_ID"]) == (
        "0000:3b:00.2", "mlx5_vfio_pci", "vfs", "failed", log.MSG_FAILED)
    assert "DRIVER" not in f            # None: not sent
    assert f["CODE_FUNC"] == "log_outcome"


def test_multi_line_values_use_the_binary_form_and_bad_names_are_dropped(journald):
    path, receive = journald
    logger = logger_to(journal.JournalHandler("vfio-flavourd", path))
    logger.error("first\nsecond", extra={"fields": {"lower": "x", "_TRUSTED": "y",
                                                    "GOOD_1": "z"}})
    f = receive()
    assert f["MESSAGE"] == "first\nsecond" and f["PRIORITY"] == "3"
    assert f["GOOD_1"] == "z" and "lower" not in f and "_TRUSTED" not in f


def test_an_oversized_entry_is_cut_to_whole_fields(journald):
    path, receive = journald
    logger = logger_to(journal.JournalHandler("vfio-flavourd", path))
    logger.info("x" * (journal.MAX_DATAGRAM * 2))
    f = receive()
    assert f["MESSAGE"].startswith("x" * 1000) and "[cut: the entry was" in f["MESSAGE"]
    assert f["PRIORITY"] == "6"


@pytest.mark.parametrize("level, prio", [(logging.DEBUG, 7), (logging.INFO, 6),
                                         (logging.WARNING, 4), (logging.ERROR, 3),
                                         (logging.CRITICAL, 2)])
def test_priorities(level, prio):
    assert journal.priority(level) == prio


def test_without_systemd_python_the_daemon_speaks_the_protocol_itself(journald, monkeypatch):
    path, receive = journald
    monkeypatch.setitem(sys.modules, "systemd", None)       # import fails
    handler = log.journal_handler(socket_path=path)
    assert isinstance(handler, journal.JournalHandler)
    assert log.journal_handler(socket_path=path + ".none") is None


def test_without_the_socket_stderr_lines_carry_priority_prefixes(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "systemd", None)
    monkeypatch.setattr(journal, "SOCKET", str(tmp_path / "none"))
    monkeypatch.setattr(log, "under_journal", lambda: True)
    logger = log.setup()
    logger.warning("two\nlines")
    logger.info("fine", extra={"fields": {"PCI_SLOT": "0000:01:00.0"}})
    assert capsys.readouterr().err == (
        f"<6>INFO: {log.NO_JOURNAL}\n"
        "<4>WARNING: two\n<4>lines\n<6>INFO: fine [PCI_SLOT=0000:01:00.0]\n")
