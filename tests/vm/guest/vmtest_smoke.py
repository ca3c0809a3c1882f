"""Smoke tests of the real-kernel tier: the plumbing, with raw sysfs.

They need no project code. They prove that the guest has what the project's
scenarios rely on (an IOMMU, vfio-pci, the out-of-tree virtio_vfio_pci and
its alias, QMP hotplug) and pin down kernel behaviour the project depends on
(tests named test_fact_*; README.md records what they saw). Each test puts
the devices back as it found them.
"""

import errno
import os
import re
import time

import pytest

import vmguest as g

INTEL, E1000E_82574 = 0x8086, 0x10D3
REDHAT_VIRTIO, VIRTIO_NET_MODERN = 0x1AF4, 0x1041


@pytest.fixture
def e1000e():
    addr = g.device_behind("rp1")
    assert g.ids(addr) == (INTEL, E1000E_82574)
    g.modprobe("e1000e")
    # Registering a driver attaches it to every unbound device it matches.
    g.wait_for(lambda: g.driver(addr) == "e1000e", what="e1000e bound")
    yield addr
    assert g.restore(addr) == "e1000e"


@pytest.fixture
def vnet1():
    addr = g.device_behind("rp2")
    assert g.ids(addr) == (REDHAT_VIRTIO, VIRTIO_NET_MODERN)
    assert g.driver(addr) == "virtio-pci"  # built in: bound from boot
    yield addr
    assert g.restore(addr) == "virtio-pci"


def assert_vfio_viable(addr):
    group = g.iommu_group(addr)
    g.wait_for(lambda: os.path.exists(f"/dev/vfio/{group}"), what=f"/dev/vfio/{group}")
    flags = g.vfio_group_status(group)
    assert flags & g.VFIO_GROUP_FLAGS_VIABLE, f"group {group} not viable: flags {flags:#x}"


def test_vfio_uapi_numbers_match_kernel_header(vm):
    """The ioctl the tests use, checked against the uapi header of the
    kernel under test (from Debian's linux-source)."""
    with open(os.path.join(vm["linux_source"], "include/uapi/linux/vfio.h")) as f:
        h = f.read()
    assert re.search(r"#define VFIO_TYPE\s+\(';'\)", h)
    assert re.search(r"#define VFIO_BASE\s+100\b", h)
    assert re.search(r"#define VFIO_GROUP_GET_STATUS\s+_IO\(VFIO_TYPE, VFIO_BASE \+ 3\)", h)
    assert re.search(r"#define VFIO_GROUP_FLAGS_VIABLE\s+\(1 << 0\)", h)
    assert re.search(r"struct vfio_group_status \{\s+__u32\s+argsz;\s+__u32\s+flags;", h)
    assert g.VFIO_GROUP_GET_STATUS == 0x3B67


def test_guest_has_iommu_and_variant_alias(vm, vnet1):
    assert os.listdir("/sys/class/iommu"), "no IOMMU: was intel_iommu=on passed?"
    # Every device sits in its own group: the root ports isolate them.
    groups = {g.iommu_group(g.device_behind(p)) for p in ("rp1", "rp2", "rp3")}
    assert len(groups) == 3
    # Except the one behind the IOMMU-bypassing root bus: no group at all.
    assert not os.path.exists(g.dev_path(g.device_behind("rp6"), "iommu_group"))
    release = os.uname().release
    assert release == vm["kernel_release"]
    with open(f"/lib/modules/{release}/modules.alias") as f:
        aliases = f.read().splitlines()
    assert "alias vfio_pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_vfio_pci" in aliases
    assert "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci" in aliases
    # kmod resolves the vfio_ form of the device's modalias to both, the
    # catch-all first: picking the most specific match is the caller's job.
    assert g.resolve_alias("vfio_" + g.modalias(vnet1)) == ["vfio_pci", "virtio_vfio_pci"]


def test_e1000e_binds_to_vfio_pci(e1000e):
    g.modprobe("vfio-pci")
    # Module vfio_pci registers driver "vfio-pci".
    assert g.module_drivers("vfio_pci") == ["vfio-pci"]
    t0 = time.monotonic()
    assert g.rebind(e1000e, "vfio-pci") == "vfio-pci"
    g.record_timing("raw rebind e1000e -> vfio-pci", time.monotonic() - t0)
    assert g.driver_override(e1000e) == "vfio-pci"
    assert_vfio_viable(e1000e)


def test_virtio_net_binds_to_virtio_vfio_pci(vnet1):
    g.modprobe("virtio_vfio_pci")
    # Module virtio_vfio_pci registers driver "virtio_vfio_pci" (its
    # KBUILD_MODNAME, with underscores), unlike vfio_pci's "vfio-pci".
    (drv,) = g.module_drivers("virtio_vfio_pci")
    assert drv == "virtio_vfio_pci"
    t0 = time.monotonic()
    assert g.rebind(vnet1, drv) == drv
    g.record_timing("raw rebind virtio-net -> virtio_vfio_pci", time.monotonic() - t0)
    assert_vfio_viable(vnet1)


def test_qmp_hotplug_virtio_net():
    port = "rp4"
    assert g.device_behind(port) is None, "the hotplug port must start empty"
    t0 = time.monotonic()
    g.device_add("hot1", port, **{"disable-legacy": "on"})
    addr = g.wait_for(lambda: g.device_behind(port), timeout=10, what="hotplugged device")
    g.record_timing("hotplug: device_add to device in sysfs", time.monotonic() - t0)
    try:
        assert g.ids(addr) == (REDHAT_VIRTIO, VIRTIO_NET_MODERN)
        # The kernel probes a hotplugged device at once; virtio-pci is built in.
        g.wait_for(lambda: g.driver(addr) == "virtio-pci", what="virtio-pci bound")
    finally:
        t1 = time.monotonic()
        answer = g.device_del("hot1")
        g.record_timing("unplug: device_del to DEVICE_DELETED", time.monotonic() - t1)
    assert answer["event"]["data"]["device"] == "hot1"
    assert not os.path.exists(g.dev_path(addr))


def test_fact_variant_driver_binds_to_a_device_it_does_not_match(e1000e):
    """driver_override is a name match only: nothing checks the variant's
    id table, so virtio_vfio_pci binds an e1000e (and makes a VFIO group)."""
    g.modprobe("virtio_vfio_pci")
    assert g.rebind(e1000e, "virtio_vfio_pci") == "virtio_vfio_pci"
    assert_vfio_viable(e1000e)


def test_fact_drivers_probe_reports_success_when_the_probe_failed():
    """vfio-pci refuses anything but a normal header (-EINVAL from
    vfio_pci_core_register_device). On a free root port, a bridge, that
    probe fails; writing drivers_probe still succeeds, only the driver link
    and the kernel log tell. bind returns the error."""
    g.modprobe("vfio-pci")
    port = g.port_address("rp5")
    assert g.driver(port) == "pcieport"
    mark = g.kmsg_mark()
    try:
        g.set_override(port, "vfio-pci")
        g.unbind(port)
        g.drivers_probe(port)  # no exception: the write "succeeded"
        assert g.driver(port) is None
        with pytest.raises(OSError) as bind_error:
            g.bind(port, "vfio-pci")
        assert bind_error.value.errno == errno.EINVAL
        log = g.kmsg_since(mark)
        assert sum("probe with driver vfio-pci failed with error -22" in l for l in log) == 2
    finally:
        assert g.restore(port) == "pcieport"


def test_fact_vfio_probes_fail_on_a_device_without_iommu_group():
    """A device with no IOMMU group (here: behind a root bus that bypasses
    the IOMMU; on real machines: the IOMMU is off) makes every vfio probe
    fail (Debian builds no VFIO_NOIOMMU), the variant's and vfio-pci's
    alike, and drivers_probe reports success both times."""
    g.modprobe("vfio-pci", "virtio_vfio_pci")
    addr = g.device_behind("rp6")
    assert g.ids(addr) == (REDHAT_VIRTIO, VIRTIO_NET_MODERN)
    assert g.driver(addr) == "virtio-pci"
    try:
        for drv in ("virtio_vfio_pci", "vfio-pci"):
            mark = g.kmsg_mark()
            assert g.rebind(addr, drv) is None
            log = g.kmsg_since(mark)
            assert any(f"probe with driver {drv} failed with error -22" in l for l in log), log
    finally:
        assert g.restore(addr) == "virtio-pci"


def test_fact_override_naming_a_module_leaves_device_unbound():
    """driver_override must name a driver: the module name vfio_pci is not
    one (the driver is vfio-pci), so nothing binds, silently."""
    g.modprobe("vfio-pci")
    addr = g.device_behind("rp3")
    assert g.driver(addr) == "virtio-pci"
    try:
        assert g.rebind(addr, "vfio_pci") is None
        assert g.driver_override(addr) == "vfio_pci"
    finally:
        assert g.restore(addr) == "virtio-pci"


def test_fact_empty_write_keeps_override():
    """Clearing driver_override takes a "\\n" (or any whitespace-only
    string); a zero-length write(2) returns 0 without reaching the kernel's
    store, so the override stays. Python's f.write("") is such a write."""
    addr = g.device_behind("rp3")
    path = g.dev_path(addr, "driver_override")
    try:
        g.write(path, "vfio-pci")
        fd = os.open(path, os.O_WRONLY)
        try:
            assert os.write(fd, b"") == 0
        finally:
            os.close(fd)
        assert g.driver_override(addr) == "vfio-pci"
        g.write(path, "\n")
        assert g.driver_override(addr) is None
    finally:
        g.set_override(addr, None)
    assert g.driver(addr) == "virtio-pci"
