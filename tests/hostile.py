"""Helpers for the hostile-input tests: a small simulated host, a sentinel
directory outside the root whose contents must never change, and the CLI
run in a child process with a time bound (an input that hangs the tool must
fail the test, not hang the suite)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VF = "0000:3b:00.2"          # a ConnectX VF the policy below binds
POLICY = """\
version: 1
rules:
  - name: mlx5-vfs
    match: {vendor: 0x15b3, device: 0x101e}
    flavour: vfio
"""


def small_root(root: Path) -> Path:
    """A host with one ConnectX PF and two VFs, plus its policy in etc/."""
    from vfio_flavourd.sim import HostBuilder
    (HostBuilder(str(root))
     .host_bridge("0000:00:00.0")
     .bridge("0000:3a:00.0", secondary=0x3B)
     .sriov_pf("0000:3b:00.0", 0x15B3, 0x101D, 0x020000, vf_device=0x101E, totalvfs=8,
               numvfs=2, driver="mlx5_core", vf_driver="mlx5_core", subsys=(0x15B3, 0x0016))
     .build())
    policy = root / "etc/vfio-flavourd/policy.d/10-test.yaml"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text(POLICY)
    return root


def snapshot(path: Path) -> dict:
    """Every entry under `path` with its kind and content, links unfollowed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, path)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir",)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read())
            else:
                out[rel] = ("other", os.lstat(p).st_mode)
    return out


def run_cli(*argv, timeout: float = 60, env=None, module="vfio_flavourd"):
    """(exit status, stdout, stderr) of `python -m vfio_flavourd ARGV`; a
    run past `timeout` fails the calling test."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    try:
        p = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True,
                           text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"vfio-flavourd {' '.join(argv)} did not finish within "
                             f"{timeout} s") from None
    return p.returncode, p.stdout, p.stderr


def no_traceback(err: str) -> bool:
    return "Traceback" not in err
