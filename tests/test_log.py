import io
import logging

from vfio_flavourd import log
from vfio_flavourd.binder import Outcome


def test_stderr_lines_carry_the_fields():
    stream = io.StringIO()
    logger = log.setup(stream=stream)
    log.log_outcome(logger, Outcome("0000:3b:00.2", "bind", "bound", module="mlx5_vfio_pci",
                                    driver="mlx5_vfio_pci", rule="vfs", message="bound to x"))
    assert stream.getvalue() == (
        "INFO: 0000:3b:00.2: bound: bound to x [PCI_SLOT=0000:3b:00.2 MODULE=mlx5_vfio_pci "
        f"DRIVER=mlx5_vfio_pci RULE=vfs RESULT=bound MESSAGE_ID={log.MSG_BOUND}]\n")


def test_failures_are_warnings_and_kept_devices_debug():
    stream = io.StringIO()
    logger = log.setup(stream=stream)
    log.log_outcome(logger, Outcome("0000:01:00.0", "bind", "failed", message="x"))
    log.log_outcome(logger, Outcome("0000:01:00.1", "keep", "kept", message="y"))
    assert stream.getvalue().startswith("WARNING: 0000:01:00.0: failed: x")
    assert "0000:01:00.1" not in stream.getvalue()


def test_journal_filter_turns_fields_into_record_attributes():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.fields = {"PCI_SLOT": "0000:01:00.0", "MODULE": None}
    assert log._JournalFields().filter(record)
    assert record.PCI_SLOT == "0000:01:00.0" and not hasattr(record, "MODULE")


def test_message_ids_are_distinct_uuids():
    ids = [v for k, v in vars(log).items() if k.startswith("MSG_")]
    assert len(ids) == len(set(ids)) == 9
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
