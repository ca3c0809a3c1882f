"""A small machine under a temp root, laid out the way the kernel lays out
sysfs, for the migrate and coexistence tests (the simulated kernel is not
needed for read-only commands):

    sys/devices/pci0000:00/ADDR/{vendor,device,...,driver_override}
    sys/bus/pci/devices/ADDR -> ../../../devices/pci0000:00/ADDR
    ADDR/driver -> ../../../bus/pci/drivers/DRIVER
    sys/bus/pci/drivers/DRIVER/module -> ../../../../module/MODULE
    sys/module/MODULE/drivers/pci:DRIVER -> ../../../bus/pci/drivers/DRIVER
    ADDR/physfn -> ../PF, PF/virtfnN -> ../VF
    lib/modules/RELEASE/modules.alias, proc/sys/kernel/osrelease
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from conftest import REAL_MODULES_ALIAS

from vfio_flavourd import cli
from vfio_flavourd.pci import make_modalias

RELEASE = "6.12.0-test"


class Tree:
    def __init__(self, root: Path, release: str = RELEASE, alias_text: str = REAL_MODULES_ALIAS):
        self.root = Path(root)
        self.file("proc/sys/kernel/osrelease", release + "\n")
        self.file(f"lib/modules/{release}/modules.alias", alias_text)
        (self.root / "sys/bus/pci/devices").mkdir(parents=True, exist_ok=True)
        self._vfs: dict = {}

    def __repr__(self) -> str:
        return f"Tree({self.root})"

    def file(self, rel: str, text: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
        return p

    def _link(self, rel: str, target: str) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.is_symlink():
            os.symlink(target, p)

    def driver(self, driver: str, module: str) -> "Tree":
        """A registered PCI driver and the loaded module behind it."""
        self._link(f"sys/bus/pci/drivers/{driver}/module", f"../../../../module/{module}")
        self._link(f"sys/module/{module}/drivers/pci:{driver}",
                   f"../../../bus/pci/drivers/{driver}")
        return self

    def device(self, address: str, vendor: int, device: int, class_code: int = 0x020000,
               sv: int = 0, sd: int = 0, driver: str = None, module: str = None,
               override: str = None, physfn: str = None) -> "Tree":
        rel = f"sys/devices/pci0000:00/{address}"
        attrs = {"vendor": f"0x{vendor:04x}", "device": f"0x{device:04x}",
                 "subsystem_vendor": f"0x{sv:04x}", "subsystem_device": f"0x{sd:04x}",
                 "class": f"0x{class_code:06x}",
                 "modalias": make_modalias(vendor, device, sv, sd, class_code),
                 "driver_override": override or "(null)"}
        for name, value in attrs.items():
            self.file(f"{rel}/{name}", value + "\n")
        self._link(f"sys/bus/pci/devices/{address}", f"../../../devices/pci0000:00/{address}")
        if driver:
            self.driver(driver, module or driver.replace("-", "_"))
            self._link(f"{rel}/driver", f"../../../bus/pci/drivers/{driver}")
        if physfn:
            self._link(f"{rel}/physfn", f"../{physfn}")
            n = self._vfs.get(physfn, 0)
            self._vfs[physfn] = n + 1
            self._link(f"sys/devices/pci0000:00/{physfn}/virtfn{n}", f"../{address}")
        return self

    def driverctl(self, address: str, driver: str) -> "Tree":
        """What `driverctl set-override ADDRESS DRIVER` leaves behind: the
        saved file, and the override in the kernel."""
        self.file(f"etc/driverctl.d/pci-{address}", driver + "\n")
        self.file(f"sys/devices/pci0000:00/{address}/driver_override", driver + "\n")
        return self

    def run(self, capsys, *argv) -> tuple:
        """(exit code, stdout, stderr) of the CLI on this root."""
        code = cli.main(["--root", str(self.root), *argv])
        out, err = capsys.readouterr()
        return code, out, err


# A small server: a ConnectX-6 Dx PF with two VFs, an Intel 82599 pair, an
# NVIDIA GPU with its audio function, and an e1000e for management.
def small_server(root: Path) -> Tree:
    t = Tree(root)
    t.device("0000:3b:00.0", 0x15B3, 0x101D, sv=0x15B3, sd=0x0016, driver="mlx5_core")
    t.device("0000:3b:00.2", 0x15B3, 0x101E, sv=0x15B3, sd=0x0016, driver="mlx5_core",
             physfn="0000:3b:00.0")
    t.device("0000:3b:00.3", 0x15B3, 0x101E, sv=0x15B3, sd=0x0016, driver="mlx5_core",
             physfn="0000:3b:00.0")
    t.device("0000:03:00.0", 0x8086, 0x10FB, sv=0x8086, sd=0x000C, driver="ixgbe")
    t.device("0000:03:00.1", 0x8086, 0x10FB, sv=0x8086, sd=0x000C, driver="ixgbe")
    t.device("0000:65:00.0", 0x10DE, 0x1B80, class_code=0x030000, sv=0x1043, sd=0x85F4,
             driver="nouveau")
    t.device("0000:65:00.1", 0x10DE, 0x10F0, class_code=0x040300, sv=0x1043, sd=0x85F4,
             driver="snd_hda_intel")
    t.device("0000:00:19.0", 0x8086, 0x10D3, sv=0x8086, sd=0xA01F, driver="e1000e")
    t.driver("vfio-pci", "vfio_pci")
    return t
