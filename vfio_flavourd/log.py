"""Logging: structured fields to the journal under systemd, plain lines to
stderr otherwise.  No log files: systemd keeps logs.

Under the journal (JOURNAL_STREAM names our stderr), in order of choice:
systemd-python's JournalHandler when it is installed; else our own
journal.JournalHandler, the same native protocol, when journald's socket is
there; else stderr lines with a "<N>" priority prefix, which journald turns
into priorities (SyslogLevelPrefix=, on by default; the unit leaves it on),
with the structured fields only as text.
"""

from __future__ import annotations

import logging
import os
import sys

LOGGER = "vfio-flavourd"

# MESSAGE_IDs, one per kind of event, so `journalctl MESSAGE_ID=...` finds
# every bind failure across a fleet.
MSG_STARTED = "750e5905e0664bc196aa9d81f40239d6"
MSG_BOUND = "00d030c85e944d1d85c6c528aaa31b6c"
MSG_FAILED = "8f8e167f1f58449ea8b1aad157034cfa"
MSG_REFUSED = "bf3d52dcbb8e410eb107af8e032fae2b"
MSG_RELEASED = "e97e1dba0d4540fdafe622c04481068e"
MSG_GONE = "89fe6f4b2cde4dc18a96cae9f1f9b205"
MSG_RELOADED = "0773fd8552304d44a5aba99ea474e0df"
MSG_RELOAD_FAILED = "e368b7b48f1445de85afe58b1995d0aa"
# An unbind or probe that did not return within its deadline.
MSG_STUCK = "1c412baae165441dba1e69a5e8838bb5"

RESULT_MESSAGE_IDS = {"bound": MSG_BOUND, "failed": MSG_FAILED, "refused": MSG_REFUSED,
                      "released": MSG_RELEASED, "gone": MSG_GONE, "stuck": MSG_STUCK}


class _FieldsFormatter(logging.Formatter):
    """For stderr: the message, then the structured fields as k=v."""

    def format(self, record):
        base = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            base += " [" + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None) + "]"
        return base


class _PriorityPrefix(_FieldsFormatter):
    """For stderr read by journald: "<N>" before each line (sd-daemon(3))."""

    def format(self, record):
        from .journal import priority
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


class _JournalFields(logging.Filter):
    """systemd.journal.JournalHandler sends extra record attributes as journal
    fields; copy ours there."""

    def filter(self, record):
        for k, v in (getattr(record, "fields", None) or {}).items():
            if v is not None:
                setattr(record, k, str(v))
        return True


def under_journal() -> bool:
    """stderr is connected to the journal (JOURNAL_STREAM names its device and
    inode), the documented way to tell."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup(verbose: bool = False, stream=None) -> logging.Logger:
    logger = logging.getLogger(LOGGER)
    logger.handlers.clear()
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    journald = stream is None and under_journal()
    handler = journal_handler() if journald else None
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        formatter = _PriorityPrefix if journald else _FieldsFormatter
        handler.setFormatter(formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    if journald and isinstance(handler, logging.StreamHandler):
        logger.info(NO_JOURNAL)
    return logger


NO_JOURNAL = ("journald's socket is missing and systemd-python is not installed (pip install "
              "'vfio-flavourd[journal]', or on Debian apt install python3-systemd): logging "
              "to stderr, where journald keeps the priorities but not the fields")


def journal_handler(socket_path: str | None = None):
    """A handler that writes journal entries with our fields, or None when
    journald's socket is not there."""
    from . import journal
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        path = socket_path or journal.SOCKET
        return journal.JournalHandler(LOGGER, path) if journal.available(path) else None
    handler = JournalHandler(SYSLOG_IDENTIFIER=LOGGER)
    handler.addFilter(_JournalFields())
    return handler


def log_outcome(logger, outcome) -> None:
    level = logging.INFO if outcome.ok else logging.WARNING
    if outcome.result in ("kept", "skipped"):
        level = logging.DEBUG
    fields = {"PCI_SLOT": outcome.address, "MODULE": outcome.module, "DRIVER": outcome.driver,
              "RULE": outcome.rule, "RESULT": outcome.result,
              "MESSAGE_ID": RESULT_MESSAGE_IDS.get(outcome.result)}
    logger.log(level, "%s: %s: %s", outcome.address, outcome.result, outcome.message,
               extra={"fields": fields})
