"""The daemon and the carry-out path on the simulated kernel, as the
tests drive them (tests/test_daemon.py), quiet."""

from __future__ import annotations

import logging
import threading

from vfio_flavourd.context import Context
from vfio_flavourd.daemon import Daemon
from vfio_flavourd.events import FakeSource
from vfio_flavourd.notify import Notifier
from vfio_flavourd.root import Root


def context(kernel) -> Context:
    ctx = Context(Root(kernel.root.dir))
    ctx.sysfs = kernel.sysfs
    ctx.loader = kernel.loader
    return ctx


def quiet_logger() -> logging.Logger:
    """INFO records are made, as under the journal, and dropped."""
    logger = logging.getLogger("vfio-flavourd-bench")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def start_daemon(kernel, publisher=None) -> Daemon:
    """A daemon fed by the kernel's uevents; returns once coldplug is done
    and it reported ready."""
    source = FakeSource()
    kernel.subscribe(source.push_uevent)
    d = Daemon(context(kernel), source, Notifier(environ={}), logger=quiet_logger(),
               make_context=lambda old: context(kernel), settle_timeout=0,
               publisher=publisher)
    ready = threading.Event()
    t = threading.Thread(target=d.run, kwargs={"ready_hook": lambda _: ready.set()},
                         daemon=True)
    t.start()
    if not ready.wait(600):
        raise RuntimeError("the daemon never became ready")
    d.thread = t
    return d


def stop_daemon(d: Daemon) -> None:
    d.request_stop()
    d.thread.join(60)
