"""What a driver's probe() does with a device the PCI core offered it.

A probe function here takes (kernel, device) and returns 0 or a positive
errno, the way the real probe returns 0 or -errno.  Only behaviour that
changes what userspace sees is modelled."""

from __future__ import annotations

import errno


def vfio_needs_group(kernel, dev) -> int:
    """vfio_pci_core_register_device() -> vfio_group_find_or_alloc(): no
    IOMMU group and no noiommu mode means -EINVAL."""
    return errno.EINVAL if dev.iommu_group is None else 0


def pds_vfio(kernel, dev) -> int:
    """pds_vfio_init_device(): pci_iov_vf_id() is -EINVAL on a device
    that is not a VF."""
    return 0 if dev.is_virtfn else errno.EINVAL


def qat_vfio(kernel, dev) -> int:
    """qat_vf_pci_init_dev() -> qat_vfmig_create(): -ENODEV unless the
    device is a VF whose PF is driven by the QAT (4xxx) driver."""
    pf = kernel.state.devices.get(dev.physfn) if dev.physfn else None
    if pf is None or pf.driver != "4xxx":
        return errno.ENODEV
    return 0


# virtio_vfio_pci, mlx5_vfio_pci, hisi_acc_vfio_pci and nvgrace_gpu_vfio_pci
# fall back to plain vfio-pci behaviour on hardware they cannot migrate, so
# their probes succeed anywhere (forcing virtio_vfio_pci onto an e1000e
# binds).  Tests give such a variant a stricter probe with kernel.set_probe().
DEFAULT_PROBES = {
    "pds_vfio_pci": pds_vfio,
    "qat_vfio_pci": qat_vfio,
}
