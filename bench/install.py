"""The package as a distribution installs it: a plain (non-editable) copy of
vfio_flavourd/ with its byte code compiled, and the two scripts, run by
/usr/bin/python3 as their #! lines say."""

from __future__ import annotations

import compileall
import os
import shutil

from .report import PY

# Where Debian's python3-* packages (yaml, pyudev) are, and the .deb puts
# the modules.
DEBIAN_DIST = "/usr/lib/python3/dist-packages"

SAFE_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    # Belt and braces: nothing here may load a real module.  A modprobe the
    # benchmark did not expect fails, and the figure with it.
    "VFIO_FLAVOURD_MODPROBE": "/bin/false",
}


class Install:
    def __init__(self, repo: str, dest: str):
        self.site = os.path.join(dest, "site-packages")
        shutil.copytree(os.path.join(repo, "vfio_flavourd"),
                        os.path.join(self.site, "vfio_flavourd"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        compileall.compile_dir(self.site, quiet=1)
        bindir = os.path.join(dest, "bin")
        os.makedirs(bindir)
        # The launchers the packages install (data/vfio-flavourd,
        # udev-rules/vfio-flavourd-udev), with their flags and their
        # SITE_DIRS written in as packaging/debian/rules does, the copy
        # first, where Debian's dist-packages holds the modules.
        self.cli = self._launcher(repo, bindir, "data/vfio-flavourd")
        self.callout = self._launcher(repo, bindir, "udev-rules/vfio-flavourd-udev")

    def _launcher(self, repo: str, bindir: str, source: str) -> str:
        with open(os.path.join(repo, source)) as f:
            text = f.read()
        flags, _, body = text.partition("\n")
        pinned = body.replace("SITE_DIRS: list = []\n",
                              f"SITE_DIRS: list = {[self.site, DEBIAN_DIST]!r}\n")
        if pinned == body:
            raise RuntimeError(f"{source}: no SITE_DIRS line to write the directories in")
        body = pinned
        return self._script(bindir, os.path.basename(source), flags[len("#!" + PY):].strip(),
                            body)

    def _script(self, bindir: str, name: str, flags: str, body: str) -> str:
        path = os.path.join(bindir, name)
        with open(path, "w") as f:
            f.write(f"#!{PY} {flags}".rstrip() + "\n")
            f.write(body)
        os.chmod(path, 0o755)
        return path

    def env(self, **extra) -> dict:
        return {**SAFE_ENV, **extra}
