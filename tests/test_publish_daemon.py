import threading
import time

from vfio_flavourd.publish import Targets
from vfio_flavourd.publish_daemon import Publisher

from fleet_host import quiet_logger, virt_server
from simhost import make_ctx


class BusyDaemon:
    """What the publisher reads of a Daemon, with a backlog we control."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._ctx_lock = threading.Lock()
        self._pending = {"0000:3b:00.2": "add"}
        self._busy = True
        self._reader_done = threading.Event()
        self._stop = threading.Event()
        self.events_seen = 0

    def status_text(self):
        return "busy"


def started(tmp_path, targets=None, **kw):
    d = BusyDaemon(make_ctx(virt_server(tmp_path)))
    p = Publisher(targets or Targets(prometheus_textfile=str(tmp_path / "m.prom")),
                  quiet_logger(), **kw)
    p.start(d)
    return d, p


def test_waits_for_the_backlog_then_writes(tmp_path):
    d, p = started(tmp_path, interval=0.1, max_age=60.0)
    assert p.writes == 1                  # the start-up round
    time.sleep(0.2)
    p.changed()
    time.sleep(0.5)
    assert p.writes == 1, "wrote while the worker had a backlog"
    d._pending.clear()
    d._busy = False
    deadline = time.monotonic() + 2
    while p.writes < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert p.writes == 2
    p.stop()


def test_a_backlog_that_never_drains_still_gets_written_after_max_age(tmp_path):
    d, p = started(tmp_path, interval=0.1, max_age=0.6)
    time.sleep(0.15)
    t0 = time.monotonic()
    p.changed()
    while p.writes < 2 and time.monotonic() - t0 < 3:
        time.sleep(0.02)
    waited = time.monotonic() - t0
    assert p.writes == 2 and 0.5 <= waited < 5, waited     # 0.6 s, slower under load
    p.stop()


def test_health_file_only_while_running(tmp_path):
    health = tmp_path / "health"
    d, p = started(tmp_path, Targets(health_file=str(health)))
    assert '"status": "busy"' in health.read_text()
    p.stop()
    assert not health.exists()
