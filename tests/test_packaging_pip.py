"""A plain `pip install .` into a bare venv (no system site packages) gives a
daemon that starts and stops cleanly: pyudev comes with it, systemd-python
is not needed.  Uses PyPI (and pip's own cache, so a second run downloads
nothing).  VFIO_FLAVOURD_SKIP_PACKAGING=1 skips it, like the .deb tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[1]
EXAMPLE = TOP / "examples/hosts/virt-server"

pytestmark = pytest.mark.skipif(os.environ.get("VFIO_FLAVOURD_SKIP_PACKAGING") == "1",
                                reason="VFIO_FLAVOURD_SKIP_PACKAGING=1")


def source_copy(dest: Path) -> Path:
    """What pip needs to build the package, copied: pip builds in the
    source tree and would leave build/ and *.egg-info in the checkout."""
    for name in ("pyproject.toml", "README.md", "COPYING"):
        shutil.copy2(TOP / name, dest / name)
    shutil.copytree(TOP / "vfio_flavourd", dest / "vfio_flavourd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory):
    base = tmp_path_factory.mktemp("pip")
    venv = base / "venv"
    # Debian's python, as a user would; the test's own venv has system
    # site packages (python3-pyudev among them), which is what must not help.
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    (base / "src").mkdir()
    src = source_copy(base / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    res = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", str(src)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return venv, env


def test_the_venv_sees_no_system_packages(bare_venv):
    venv, env = bare_venv
    out = subprocess.run([str(venv / "bin/python"), "-c",
                          "import sys, pyudev, yaml, vfio_flavourd\n"
                          "try:\n from systemd import journal\nexcept ImportError:\n"
                          " print('no systemd')\n"
                          "print(pyudev.__file__.startswith(sys.prefix))"],
                         capture_output=True, text=True, env=env, check=True,
                         cwd="/").stdout.splitlines()
    assert out == ["no systemd", "True"]


def test_the_daemon_starts_and_stops_on_sigterm(bare_venv):
    venv, env = bare_venv
    proc = subprocess.Popen([str(venv / "bin/vfio-flavourd"), "--root", str(EXAMPLE),
                             "--simulate", "daemon", "--dry-run", "--source", "kernel"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd="/")
    err = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            err.append(line)
            if "coldplug done" in line:
                break
        # --simulate: the daemon listens to the simulated kernel's events.
        assert any("listening on simulated kernel events" in e for e in err), "".join(err)
        proc.send_signal(signal.SIGTERM)
        out, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(err) + rest
    assert proc.returncode == 0, text
    assert "INFO: stopped: " in rest, text
    assert "Traceback" not in text
    assert "would" in text          # --dry-run: decisions logged, nothing done
    assert sys.prefix not in text   # nothing from the test's own venv
