"""The bundled example host (examples/hosts/virt-server) on the simulated
kernel, with a daemon that publishes the fleet files: what the publish
tests read."""

from __future__ import annotations

import logging
import os
import shutil
import threading

from vfio_flavourd.daemon import Daemon, wait_idle
from vfio_flavourd.events import FakeSource
from vfio_flavourd.notify import Notifier
from vfio_flavourd.publish import Targets
from vfio_flavourd.publish_daemon import Publisher
from vfio_flavourd.sim import SimKernel

from simhost import make_ctx

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "hosts", "virt-server")


def virt_server(tmp_path) -> SimKernel:
    root = tmp_path / "root"
    shutil.copytree(EXAMPLE, root, symlinks=True)
    return SimKernel(str(root))


def quiet_logger(name="fleet-test") -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.records = []
    handler = logging.Handler()
    handler.emit = logger.records.append
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    return logger


class PublishingDaemon:
    """A daemon on `kernel`, fed by its uevents, publishing to `targets`."""

    def __init__(self, kernel, targets: Targets, interval: float = 1.0):
        self.kernel = kernel
        self.source = FakeSource()
        kernel.subscribe(self.source.push_uevent)
        self.logger = quiet_logger()
        self.publisher = Publisher(targets, self.logger, interval=interval)
        self.daemon = Daemon(make_ctx(kernel), self.source, Notifier(environ={}),
                             logger=self.logger, make_context=lambda old: make_ctx(kernel),
                             settle_timeout=0, publisher=self.publisher)
        self.ready = threading.Event()
        self.thread = threading.Thread(
            target=self.daemon.run, kwargs={"ready_hook": lambda d: self.ready.set()},
            daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(60), "the daemon never became ready"
        return self

    def idle(self):
        assert wait_idle(self.daemon, 60)

    def __exit__(self, *exc):
        self.daemon.request_stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the daemon did not stop"


def run_example(tmp_path, targets: Targets):
    """The example host, a publishing daemon over it until idle and stopped:
    (kernel, its state, the variant modules its kernel offers)."""
    kernel = virt_server(tmp_path)
    with PublishingDaemon(kernel, targets) as pd:
        pd.idle()
        ctx = pd.daemon.ctx
        state = ctx.state.read()
        variants = sorted(m for m in ctx.index.modules() if m != "vfio_pci")
    return kernel, state, variants
