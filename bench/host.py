"""The benchmark's simulated host: 8 ConnectX PFs with 511 VFs each, plus
GPUs and NICs, with a full-size modules.alias, and its policy."""

from __future__ import annotations

import glob
import os
import random

from vfio_flavourd.sim import HostBuilder, catalog

KERNEL_RELEASE = "6.12.0-bench-amd64"
PFS, VFS_PER_PF = 8, 511
REAL_ALIAS_GLOB = "/var/cache/vfio-flavourd-vm/6.12.*/mods/usr/lib/modules/*/modules.alias"
ALIAS_LINES = 27_000

POLICY = """\
version: 1
rules:
  - name: mlx5-vfs
    match: {vendor: 0x15b3, virtfn: true}
    flavour: vfio
  - name: gpus
    match: {vendor: 0x10de, class: "03"}
    flavour: vfio
"""


def build(root_dir: str, alias_text: str, pfs: int = PFS, vfs: int = VFS_PER_PF) -> HostBuilder:
    """Write the host under root_dir; returns the builder (builder.kernel()
    gives the simulated kernel over it)."""
    b = (HostBuilder(root_dir, kernel_release=KERNEL_RELEASE)
         .host_bridge("0000:00:00.0")
         .bridge("0000:00:01.0", secondary=0x01)
         .device("0000:01:00.0", 0x144D, 0xA808, 0x010802, driver="nvme")
         .nvme_disk("0000:01:00.0", mounted_at="/")
         .bridge("0000:00:02.0", secondary=0x02)
         .device("0000:02:00.0", 0x8086, 0x1521, 0x020000, driver="igb")
         .netdev("0000:02:00.0", "eno1", up=True, routed=True)
         .device("0000:02:00.1", 0x8086, 0x1521, 0x020000, driver="igb"))
    # Two dual-port E810s on the host, and four GPUs: two H100s (vfio-pci,
    # no variant) and two GH200s (nvgrace_gpu_vfio_pci).
    for i, (vendor, device, cls, drv) in enumerate([
            (0x8086, 0x159B, 0x020000, "ice"), (0x8086, 0x159B, 0x020000, "ice"),
            (0x10DE, 0x2330, 0x030200, "nouveau"), (0x10DE, 0x2330, 0x030200, "nouveau"),
            (0x10DE, 0x2342, 0x030200, "nouveau"), (0x10DE, 0x2342, 0x030200, "nouveau")]):
        bus = 0x03 + i
        b.bridge(f"0000:00:{3 + i:02x}.0", secondary=bus)
        b.device(f"0000:{bus:02x}:00.0", vendor, device, cls, driver=drv)
        if drv == "ice":
            b.device(f"0000:{bus:02x}:00.1", vendor, device, cls, driver=drv)
    # Each PF's 511 VFs span three buses (offset 2, stride 1).
    for i in range(pfs):
        bus = 0x10 + 4 * i
        b.bridge(f"0000:00:{0x10 + i:02x}.0", secondary=bus)
        b.sriov_pf(f"0000:{bus:02x}:00.0", 0x15B3, 0x101D, 0x020000, vf_device=0x101E,
                   totalvfs=vfs, numvfs=vfs, vf_driver="mlx5_core", driver="mlx5_core",
                   subsys=(0x15B3, 0x0016))
    return _build(b, alias_text)


def modules_alias():
    """(text, source): Debian 6.12's modules.alias from the real-kernel
    tier's cache with the in-tree variants' vfio_pci lines appended, or a
    synthetic file of the same size when that cache is absent."""
    variants = [line for line in catalog.alias_lines(unrelated=False)
                if line.startswith("alias vfio_pci:") and not line.endswith(" vfio_pci")]
    found = sorted(glob.glob(REAL_ALIAS_GLOB))
    if found:
        with open(found[-1]) as f:
            real = f.read()
        have = set(real.splitlines())
        extra = [line for line in variants if line not in have]
        return real + "\n".join(extra) + "\n", f"{found[-1]} + {len(extra)} catalog vfio_pci lines"
    return synthetic(variants), f"synthetic: catalog + generated lines ({ALIAS_LINES})"


def synthetic(variants) -> str:
    """About ALIAS_LINES lines shaped like a distro kernel's: pci:, usb:,
    acpi and of: aliases around the catalog's own lines."""
    rng = random.Random(8)
    lines = ["# Aliases extracted from modules themselves.",
             "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci"]
    lines += list(catalog.alias_lines()) + variants
    while len(lines) < ALIAS_LINES:
        n = len(lines)
        kind = n % 4
        mod = f"mod{n % 1500}"
        if kind == 0:
            lines.append(f"alias pci:v{rng.randrange(0x10000):08X}d{rng.randrange(0x10000):08X}"
                         f"sv*sd*bc*sc*i* {mod}")
        elif kind == 1:
            lines.append(f"alias usb:v{rng.randrange(0x10000):04X}p{rng.randrange(0x10000):04X}"
                         f"d*dc*dsc*dp*ic*isc*ip*in* {mod}")
        elif kind == 2:
            lines.append(f"alias acpi*:PNP{rng.randrange(0x10000):04X}:* {mod}")
        else:
            lines.append(f"alias of:N*T*Cvendor,dev{n}C* {mod}")
    return "\n".join(lines) + "\n"


def write_policy(root_dir: str, text: str = POLICY) -> None:
    d = os.path.join(root_dir, "etc/vfio-flavourd/policy.d")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "50-bench.yaml"), "w") as f:
        f.write(text)


def build_callout_host(root_dir: str, alias_text: str) -> str:
    """A PF with two unbound VFs while mlx5_vfio_pci is loaded (so the
    callout has no module to load); returns the first VF's address."""
    pf = "0000:3b:00.0"
    b = (HostBuilder(root_dir, kernel_release=KERNEL_RELEASE)
         .host_bridge("0000:00:00.0")
         .bridge("0000:3a:00.0", secondary=0x3B)
         .sriov_pf(pf, 0x15B3, 0x101D, 0x020000, vf_device=0x101E, totalvfs=8, numvfs=2,
                   driver="mlx5_core", subsys=(0x15B3, 0x0016), autoprobe=False)
         .load("mlx5_vfio_pci"))
    _build(b, alias_text)
    return b.state.devices[pf].vfs[0]


def build_burst_host(root_dir: str, alias_text: str, vfs: int) -> HostBuilder:
    """A PF able to take `vfs` VFs, none enabled yet."""
    b = (HostBuilder(root_dir, kernel_release=KERNEL_RELEASE)
         .host_bridge("0000:00:00.0")
         .bridge("0000:00:01.0", secondary=0x01)
         .sriov_pf("0000:01:00.0", 0x15B3, 0x101D, 0x020000, vf_device=0x101E,
                   totalvfs=vfs, numvfs=0, driver="mlx5_core"))
    return _build(b, alias_text)


def _build(b: HostBuilder, alias_text: str) -> HostBuilder:
    """Write the tree, with the benchmark's modules.alias and policy."""
    b.build()
    with open(os.path.join(b.root, "lib/modules", KERNEL_RELEASE, "modules.alias"), "w") as f:
        f.write(alias_text)
    write_policy(b.root)
    return b
