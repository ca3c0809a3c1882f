"""A Container Device Interface spec for the devices vfio-flavourd bound.

One CDI device per bound device, named by its PCI address with ':' turned
into '-' (CDI allows ':' in names, but `podman run --device` and docker's
-v-style parsers split on it).  Each entry carries one VFIO interface only:
- "group": /dev/vfio/vfio and /dev/vfio/<group>;
- "cdev": /dev/vfio/devices/vfioX (the device's vfio-dev/vfioX in sysfs,
  CONFIG_VFIO_DEVICE_CDEV, 6.6+) and /dev/iommu, the iommufd a cdev must be
  attached to before use.
Kata's confidential guests accept only the cdev interface and break on a
spec that offers both for one device (NVIDIA k8s-dra-driver-gpu #1036).
A device without the chosen interface's node is left out of the spec.
"""

from __future__ import annotations

import json

NAMESPACE = "vfio-flavourd.io"
KIND = f"{NAMESPACE}/pci"
# 0.6.0 added annotations on devices, which we use.
CDI_VERSION = "0.6.0"
DEFAULT_PATH = "/var/run/cdi/vfio-flavourd.json"
INTERFACES = ("group", "cdev")


def device_name(address: str) -> str:
    return address.replace(":", "-")


def device_nodes(dev, interface: str):
    if interface == "cdev":
        if not dev.cdev:
            return None
        return [{"path": f"/dev/vfio/devices/{dev.cdev}"}, {"path": "/dev/iommu"}]
    if dev.iommu_group is None:
        return None
    return [{"path": "/dev/vfio/vfio"}, {"path": f"/dev/vfio/{dev.iommu_group}"}]


def spec(facts, interface: str = "group") -> dict:
    if interface not in INTERFACES:
        raise ValueError(f"CDI interface {interface!r}: expected one of {INTERFACES}")
    devices = []
    for dev in facts.devices:
        nodes = device_nodes(dev, interface)
        if nodes is None:
            continue
        annotations = {f"{NAMESPACE}/address": dev.address,
                       f"{NAMESPACE}/driver": dev.driver,
                       f"{NAMESPACE}/id": dev.id_text}
        if dev.rule:
            annotations[f"{NAMESPACE}/rule"] = dev.rule
        devices.append({"name": device_name(dev.address), "annotations": annotations,
                        "containerEdits": {"deviceNodes": nodes}})
    return {"cdiVersion": CDI_VERSION, "kind": KIND, "devices": devices}


def render(facts, interface: str = "group") -> str:
    return json.dumps(spec(facts, interface), indent=2, sort_keys=True) + "\n"
