import json
import os
import re

import pytest

from vfio_flavourd import publish_cdi
from vfio_flavourd.publish import Targets
from vfio_flavourd.publish_facts import Facts, HeldDevice

from fleet_host import PublishingDaemon, run_example, virt_server

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("referencing")     # jsonschema 4.18+, as the test extras require

SCHEMA_DIR = os.path.join(os.path.dirname(__file__), "cdi_schema")
# CDI's own name rules (pkg/parser/parser.go in container-device-interface):
# vendor and class [A-Za-z0-9][A-Za-z0-9_.-]*; a device name starts and ends
# with a letter or digit, with [A-Za-z0-9_.:-] between.
KIND_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*[A-Za-z0-9]/[A-Za-z][A-Za-z0-9_.-]*[A-Za-z0-9]$")
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$")


def validator():
    with open(os.path.join(SCHEMA_DIR, "schema.json")) as f:
        schema = json.load(f)
    with open(os.path.join(SCHEMA_DIR, "defs.json")) as f:
        defs = json.load(f)
    # schema.json refers to "defs.json#/definitions/...".
    from referencing import Registry
    from referencing.jsonschema import DRAFT7
    registry = Registry().with_resource("defs.json", DRAFT7.create_resource(defs))
    return jsonschema.Draft7Validator(schema, registry=registry)


def check(spec):
    errors = [e.message for e in validator().iter_errors(spec)]
    assert errors == []
    assert KIND_RE.match(spec["kind"])
    names = [d["name"] for d in spec["devices"]]
    assert len(names) == len(set(names))
    for d in spec["devices"]:
        assert NAME_RE.match(d["name"]), d["name"]
        paths = [n["path"] for n in d["containerEdits"]["deviceNodes"]]
        group = [p for p in paths if re.match(r"^/dev/vfio/(vfio|\d+)$", p)]
        cdev = [p for p in paths if p.startswith("/dev/vfio/devices/")]
        # One interface per entry: Kata refuses a mix.
        assert bool(group) != bool(cdev), paths


def held(address, group="12", cdev=None):
    return HeldDevice(address, 0x8086, 0x10D3, "vfio-pci", "vfio_pci", "nics", group, cdev)


def test_the_schema_catches_a_broken_spec():
    errors = list(validator().iter_errors({"cdiVersion": "0.6.0", "kind": "a.io/b",
                                           "devices": [{"name": "x", "containerEdits": {
                                               "deviceNodes": [{"hostPath": "/dev/x"}]}}]}))
    assert [e.message for e in errors] == ["'path' is a required property"]


def test_example_host_spec_group_interface(tmp_path):
    path = tmp_path / "cdi" / "vfio-flavourd.json"
    kernel, state, _ = run_example(tmp_path, Targets(cdi_spec=str(path)))
    spec = json.loads(path.read_text())
    check(spec)
    assert spec["cdiVersion"] == "0.6.0" and spec["kind"] == "vfio-flavourd.io/pci"
    bound = {a: r for a, r in state.items() if r["outcome"] == "bound"}
    assert bound
    assert [d["name"] for d in spec["devices"]] == [a.replace(":", "-") for a in sorted(bound)]
    for d in spec["devices"]:
        address = d["annotations"]["vfio-flavourd.io/address"]
        group = kernel.sysfs.link(f"sys/bus/pci/devices/{address}/iommu_group")
        assert d["containerEdits"]["deviceNodes"] == [{"path": "/dev/vfio/vfio"},
                                                      {"path": f"/dev/vfio/{group}"}]
        assert d["annotations"]["vfio-flavourd.io/rule"] == bound[address]["rule"]
        assert d["annotations"]["vfio-flavourd.io/driver"] == bound[address]["driver"]
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_cdev_interface_uses_the_sysfs_vfio_dev_node(tmp_path):
    path = tmp_path / "vfio-flavourd.json"
    kernel = virt_server(tmp_path)
    # The simulated kernel has no iommufd cdevs: give two VFs the
    # vfio-dev/vfioX that a 6.6+ kernel with VFIO_DEVICE_CDEV makes during
    # the vfio probe, before the driver link appears.
    bound = ["0000:3b:00.2", "0000:3b:00.3"]
    for i, address in enumerate(bound):
        os.makedirs(kernel.root.path(f"sys/bus/pci/devices/{address}/vfio-dev/vfio{i}"))
    with PublishingDaemon(kernel, Targets(cdi_spec=str(path), cdi_interface="cdev")) as pd:
        pd.idle()
        assert all(pd.daemon.ctx.state.get(a)["outcome"] == "bound" for a in bound)
    spec = json.loads(path.read_text())
    check(spec)
    assert [(d["name"], d["containerEdits"]["deviceNodes"]) for d in spec["devices"]] == [
        (bound[0].replace(":", "-"), [{"path": "/dev/vfio/devices/vfio0"}, {"path": "/dev/iommu"}]),
        (bound[1].replace(":", "-"), [{"path": "/dev/vfio/devices/vfio1"}, {"path": "/dev/iommu"}]),
    ]


def test_a_device_without_the_chosen_node_is_left_out():
    facts = Facts("0.1.0", "6.12.0", (), (held("0000:01:00.0", group=None),
                                          held("0000:02:00.0", cdev="vfio4")), 0)
    spec = publish_cdi.spec(facts, "group")
    check(spec)
    assert [d["name"] for d in spec["devices"]] == ["0000-02-00.0"]
    spec = publish_cdi.spec(facts, "cdev")
    assert [d["name"] for d in spec["devices"]] == ["0000-02-00.0"]
    assert spec["devices"][0]["containerEdits"]["deviceNodes"][0] == {
        "path": "/dev/vfio/devices/vfio4"}
