"""leave(): out of a one-shot process at once, with what sys.exit gives."""

import os
import subprocess
import sys

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_py(code, stdout=subprocess.PIPE):
    # Buffered streams, as a command run from a shell has them.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-c", "from vfio_flavourd.leave import leave\n" + code],
                          cwd=TOP, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60,
                          env=env)


@pytest.mark.parametrize("arg, status, stderr", [
    ("None", 0, ""), ("0", 0, ""), ("3", 3, ""), ("'no such device'", 1, "no such device\n"),
    ("256 + 7", 7, "")])
def test_status_is_what_sys_exit_gives(arg, status, stderr):
    res = run_py(f"leave({arg})")
    assert (res.returncode, res.stderr) == (status, stderr)


def test_atexit_functions_run_and_buffered_output_is_written():
    res = run_py("import atexit, sys\n"
                 "atexit.register(lambda: print('at exit'))\n"
                 "print('work', end=' ')\n"
                 "sys.stderr.write('warning')\n"
                 "leave(0)")
    assert (res.returncode, res.stdout, res.stderr) == (0, "work at exit\n", "warning")


def test_a_reader_that_went_away_is_not_an_error():
    r, w = os.pipe()
    os.close(r)
    res = run_py("print('x' * 100)\nleave(0)", stdout=w)
    os.close(w)
    assert (res.returncode, res.stderr) == (0, "")


def test_one_shot_commands_run_without_the_collector_and_the_daemon_with_it(monkeypatch):
    """cli.run() turns the cyclic collector off; the daemon, which runs for
    months, turns it back on before anything else."""
    import gc
    from vfio_flavourd import cli
    from vfio_flavourd.commands import daemon
    seen = {}

    def fake_main():
        seen["one-shot"] = gc.isenabled()
        daemon.run(None, type("Args", (), {"verbose": False})())

    def fake_leave(code):
        raise SystemExit(code)

    class Stop(Exception):
        pass

    def fake_setup(verbose=False):
        seen["daemon"] = gc.isenabled()
        raise Stop
    monkeypatch.setattr(cli, "main", fake_main)
    monkeypatch.setattr("vfio_flavourd.leave.leave", fake_leave)
    monkeypatch.setattr("vfio_flavourd.log.setup", fake_setup)
    try:
        with pytest.raises(Stop):
            cli.run()
    finally:
        gc.enable()
    assert seen == {"one-shot": False, "daemon": True}
