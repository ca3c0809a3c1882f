"""Which vfio_pci variant drivers implement VFIO live migration.

Known from the kernel's source, never by opening a device: a driver
supports migration when its probe/init sets `vfio_device.migration_flags`
to include VFIO_MIGRATION_STOP_COPY and installs `mig_ops` (what the
VFIO_DEVICE_FEATURE_MIGRATION ioctl then reports to a VMM).  Each of
them sets those only when the device or its PF can (noted below), so this
says "the driver can", not "this device will": the VMM's migration still
asks the device.

module: (first kernel with migration in that driver, where it is set)
"""

from __future__ import annotations

import re
from typing import Optional

from .modprobe import normalise_module

MIGRATION_DRIVERS = {
    # drivers/vfio/pci/mlx5/cmd.c mlx5vf_cmd_set_migratable(): when the VF's
    # firmware reports MLX5_CAP_GEN(migration).
    "mlx5_vfio_pci": ((5, 18), "mlx5/cmd.c mlx5vf_cmd_set_migratable"),
    # drivers/vfio/pci/hisilicon/hisi_acc_vfio_pci.c
    # hisi_acc_vfio_pci_migrn_init_dev(): when the PF is on the HiSilicon QM driver.
    "hisi_acc_vfio_pci": ((5, 18), "hisilicon/hisi_acc_vfio_pci.c hisi_acc_vfio_pci_migrn_init_dev"),
    # drivers/vfio/pci/pds/vfio_dev.c pds_vfio_init_device(): always.
    "pds_vfio_pci": ((6, 6), "pds/vfio_dev.c pds_vfio_init_device"),
    # drivers/vfio/pci/qat/main.c qat_vf_pci_init_dev(): always.
    "qat_vfio_pci": ((6, 10), "qat/main.c qat_vf_pci_init_dev"),
    # drivers/vfio/pci/virtio/migrate.c virtiovf_set_migratable(), called from
    # main.c when the device offers admin-queue device parts.  6.12's
    # virtio/main.c (Debian 12's kernel) has no migration code at all.
    "virtio_vfio_pci": ((6, 13), "virtio/migrate.c virtiovf_set_migratable"),
    # drivers/vfio/pci/xe/main.c xe_vfio_pci_migration_init(): when the PF's
    # xe driver supports SR-IOV VF migration.
    "xe_vfio_pci": ((6, 19), "xe/main.c xe_vfio_pci_migration_init"),
}
# drivers/vfio/pci/nvgrace-gpu/main.c sets no migration_flags: nvgrace_gpu_vfio_pci
# has no live migration, nor has plain vfio_pci.


def kernel_version(release: str) -> Optional[tuple]:
    m = re.match(r"^(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def implements_migration(module: str, kernel_release: str) -> bool:
    entry = MIGRATION_DRIVERS.get(normalise_module(module or ""))
    if entry is None:
        return False
    version = kernel_version(kernel_release)
    # An unreadable release: trust the table rather than say no.
    return version is None or version >= entry[0]
