"""The udev callout: `IMPORT{program}` runs it for each PCI `add` event.

It prints the decision as udev environment variables:

    VFIO_FLAVOURD_RULE=mlx5-vfs
    VFIO_FLAVOURD_MODULE=mlx5_vfio_pci
    VFIO_FLAVOURD_DRIVER=mlx5_vfio_pci    (only when the device is unbound)

and the rule writes VFIO_FLAVOURD_DRIVER into driver_override before
80-drivers.rules loads host drivers, so the host driver never claims the
device.  driver_override must hold the *driver* name, which is known only
once the module is loaded, so the callout loads it.  Probing, verifying and
the state record are the daemon's job.

Never fails loudly: udev must carry on with the event whatever happens.
Imports are kept to what this path needs (no pyudev, no YAML when the cache
is current).
"""

from __future__ import annotations

import os
import sys

UDEV_MARKS = "udev"      # run/vfio-flavourd/udev/<address>: overrides set via our rule


def decide(root, address: str, policy_paths=()):
    from . import cache, engine, pci
    from .owners import override_owner
    from .sysfs import Sysfs

    cached = cache.load_cached(root, policy_paths)
    if cached is None:
        from .aliases import load_index
        from .policy_load import load_policy
        policy = load_policy(root, policy_paths)
        index = load_index(root.modules_dir())
        cache.store(root, policy, index, policy_paths)
    else:
        policy, index = cached
    sysfs = Sysfs(root)
    dev = pci.read_device(sysfs, address)
    owner = None
    if dev.driver_override is not None:
        from .state import State
        owner = override_owner(sysfs, State(root), dev)
    return sysfs, dev, engine.decide(dev, policy, index, owner=owner)


def driver_for(sysfs, module: str):
    from .modprobe import ModuleLoader, driver_names
    names = driver_names(sysfs, module)
    if not names:
        ModuleLoader().load(module)
        names = driver_names(sysfs, module)
    return sorted(names)[0] if names else None


def is_kernel_name(name: str) -> bool:
    """DDDD:BB:DD.F as the kernel names PCI functions (pci_setup_device:
    "%04x:%02x:%02x.%d"; 5 domain digits behind Intel VMD)."""
    from .pci import is_address
    return is_address(name)


def run(argv, out=sys.stdout, err=sys.stderr) -> int:
    from .errors import FlavourdError
    from .root import RUN_DIR, Root

    if len(argv) != 1:
        print("usage: vfio-flavourd-udev ADDRESS  (run by udev's IMPORT{program})", file=err)
        return 2
    address = argv[0]
    if not is_kernel_name(address):
        # udev passes %k, the kernel's own name; anything else (a path, a
        # name with a newline) is not ours to act on or to name a file by.
        print(f"vfio-flavourd-udev: {address!r} is not a PCI kernel name "
              "(DDDD:BB:DD.F in lower-case hex); ignoring it", file=err)
        return 2
    try:
        root = Root(os.environ.get("VFIO_FLAVOURD_ROOT") or "/")
        sysfs, dev, d = decide(root, address)
        if d.rule is None or d.action != "bind" or d.module is None:
            return 0
        lines = [f"VFIO_FLAVOURD_RULE={d.rule.name}", f"VFIO_FLAVOURD_MODULE={d.module}"]
        if dev.driver is None:
            driver = driver_for(sysfs, d.module)
            if driver:
                lines.append(f"VFIO_FLAVOURD_DRIVER={driver}")
                from .safeio import write_new
                marks = root.ensure_dir(f"{RUN_DIR}/{UDEV_MARKS}")
                write_new(os.path.join(marks, address), (driver + "\n").encode())
        out.write("\n".join(lines) + "\n")
        return 0
    except FlavourdError as e:
        print(f"vfio-flavourd-udev: {address}: {e}", file=err)
        return 0
    except Exception as e:  # never fail udev's event for our sake
        print(f"vfio-flavourd-udev: {address}: unexpected error: {e!r}", file=err)
        return 0


def main() -> None:
    from .leave import leave
    leave(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
