"""The daemon as a Kubernetes DaemonSet runs it (deploy/kubernetes/): no
systemd, so no NOTIFY_SOCKET; a health file for the probes; SIGTERM from
the kubelet ends it cleanly.  On the simulated kernel of the example host."""

import json
import os
import re
import signal
import subprocess
import sys
import time

from fleet_host import EXAMPLE


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "vfio_flavourd", *args], capture_output=True,
                          text=True, env=env)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
           and not k.startswith("VFIO_FLAVOURD_")}
    env.update(extra)
    return env


def test_no_notify_socket_health_file_and_sigterm(tmp_path):
    health = tmp_path / "run" / "health"
    prom = tmp_path / "textfile" / "vfio-flavourd.prom"
    # Options from the environment, as the DaemonSet sets them.
    env = clean_env(VFIO_FLAVOURD_HEALTH_FILE=str(health),
                    VFIO_FLAVOURD_PROMETHEUS_TEXTFILE=str(prom))
    proc = subprocess.Popen([sys.executable, "-m", "vfio_flavourd", "--root", EXAMPLE,
                             "--simulate", "daemon"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not health.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no health file within 60 s"
            time.sleep(0.1)
        probe = cli("health", env=env)
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.startswith("healthy: 30 managed, 30 bound, 0 failed")
        assert json.loads(health.read_text())["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "INFO: stopped: 30 managed, 30 bound, 0 failed, 0 refused"
    assert not health.exists()           # not ready once stopped
    assert "vfio_flavourd_bind_outcomes_total{result=\"bound\"} 30" in prom.read_text()
    probe = cli("health", "--file", str(health))
    assert probe.returncode == 1
    assert probe.stderr == (f"vfio-flavourd: error: {health}: no health file: the daemon is "
                            "not running, or its coldplug is not done\n")


def test_a_stale_health_file_is_unhealthy(tmp_path):
    health = tmp_path / "health"
    health.write_text('{"pid": 1, "time": 0, "status": "x"}\n')
    old = time.time() - 600
    os.utime(health, (old, old))
    r = cli("health", "--file", str(health), env=clean_env())
    assert r.returncode == 1
    # The age grows while the command starts (seconds, on a loaded machine).
    m = re.fullmatch(rf"vfio-flavourd: error: {re.escape(str(health))}: last written (\d+) s "
                     r"ago \(more than 60 s\): the daemon is stuck or gone\n", r.stderr)
    assert m and 600 <= int(m.group(1)) < 660, r.stderr
    r = cli("health", env=clean_env())
    assert r.returncode == 1
    assert r.stderr == ("vfio-flavourd: error: health: give --file FILE or set "
                        "VFIO_FLAVOURD_HEALTH_FILE\n")
