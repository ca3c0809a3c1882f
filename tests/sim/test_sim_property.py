"""Whatever sequence of writes, loads, unplugs and faults, the tree the
simulated kernel leaves behind says the same as its model, and the model
obeys the PCI core's rules."""

import dataclasses
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfio_flavourd.errors import ModprobeError, SysfsError
from vfio_flavourd.sim import SimKernel, catalog
from vfio_flavourd.sim.strategies import fault_lists

from sim_hosts import E1000E, MF0, MF1, MGMT, PF, QAT_PF, VF0, VF1, VIRTIO, small_host

ADDRS = [VF0, VF1, PF, MF0, MF1, E1000E, VIRTIO, MGMT, QAT_PF, "0000:3b:00.4", "0000:6b:00.1"]
DRIVERS = ["vfio-pci", "mlx5_vfio_pci", "mlx5_core", "pci-stub", "virtio_vfio_pci", "e1000e",
           "igb", "4xxx", "qat_vfio_pci"]
MODULES = ["vfio_pci", "mlx5_vfio_pci", "pci_stub", "virtio_vfio_pci", "qat_vfio_pci"]

addr = st.sampled_from(ADDRS)
ops = st.one_of(
    st.tuples(st.just("override"), addr, st.sampled_from(["\n", "vfio-pci", "mlx5_vfio_pci",
                                                           "pci-stub", "vfio_pci", "bogus"])),
    st.tuples(st.just("unbind"), addr),
    st.tuples(st.just("probe"), addr),
    st.tuples(st.just("bind"), st.sampled_from(DRIVERS), addr),
    st.tuples(st.just("load"), st.sampled_from(MODULES)),
    st.tuples(st.just("unload"), st.sampled_from(MODULES + ["mlx5_core", "e1000e"])),
    st.tuples(st.just("numvfs"), st.sampled_from([PF, QAT_PF]), st.integers(0, 3)),
    st.tuples(st.just("autoprobe"), st.sampled_from([PF, QAT_PF]), st.sampled_from(["0", "1"])),
    st.tuples(st.just("new_id"), st.sampled_from(["vfio-pci", "pci-stub"]),
              st.sampled_from(["8086 10d3", "15b3 101e"])),
    st.tuples(st.just("remove"), addr),
    st.tuples(st.just("rescan")),
    st.tuples(st.just("unplug"), addr),
)


def run(kernel, op):
    s, kind = kernel.sysfs, op[0]
    dev = f"sys/bus/pci/devices/{op[-1]}"
    if kind == "override":
        s.write(f"sys/bus/pci/devices/{op[1]}/driver_override", op[2])
    elif kind == "unbind":
        s.write(f"{dev}/driver/unbind", op[1])
    elif kind == "probe":
        s.write("sys/bus/pci/drivers_probe", op[1])
    elif kind == "bind":
        s.write(f"sys/bus/pci/drivers/{op[1]}/bind", op[2])
    elif kind == "load":
        kernel.loader.load(op[1])
    elif kind == "unload":
        kernel.loader.unload(op[1])
    elif kind == "numvfs":
        s.write(f"sys/bus/pci/devices/{op[1]}/sriov_numvfs", str(op[2]))
    elif kind == "autoprobe":
        s.write(f"sys/bus/pci/devices/{op[1]}/sriov_drivers_autoprobe", op[2])
    elif kind == "new_id":
        s.write(f"sys/bus/pci/drivers/{op[1]}/new_id", op[2])
    elif kind == "remove":
        s.write(f"{dev}/remove", "1")
    elif kind == "rescan":
        s.write("sys/bus/pci/rescan", "1")
    elif kind == "unplug":
        kernel.remove_device(op[1])


def visible(devices):
    """A device as the tree shows it: interfaces and disks exist only while
    their driver holds the device, so compare those separately."""
    return {a: dataclasses.replace(d, nets=[], disks=[], console=False, children_owner=None,
                                   children_live=True) for a, d in devices.items()}


def check(kernel, initial):
    root = kernel.root.dir
    devices = kernel.devices
    # the tree, read back, is the model
    again = SimKernel(root, catalog=dict(catalog.CATALOG))
    assert visible(again.state.devices) == visible(devices)
    nets = {n.ifname for d in devices.values() if d.children_live for n in d.nets}
    assert set(os.listdir(root / "sys/class/net")) == nets
    assert sorted(again.state.loaded) == sorted(kernel.state.loaded)
    assert sorted(os.listdir(root / "sys/bus/pci/devices")) == sorted(devices)
    for name, drv in kernel.drivers.items():
        held = {e for e in os.listdir(root / f"sys/bus/pci/drivers/{name}") if e[:4] == "0000"}
        assert held == {a for a, d in devices.items() if d.driver == name}
    vfio_groups = {d.iommu_group for d in devices.values()
                   if d.driver and kernel.drivers[d.driver].info.vfio}
    nodes = set(os.listdir(root / "dev/vfio")) - {"vfio"} if (root / "dev/vfio").is_dir() else set()
    assert nodes == {str(g) for g in vfio_groups}
    for d in devices.values():
        assert d.driver is None or d.driver in kernel.drivers
        if d.is_pf:
            assert len(d.vfs) == d.sriov_numvfs
            assert all(devices[v].physfn == d.address for v in d.vfs if v in devices)
        if d.physfn:
            assert d.physfn in devices
    # the uevents, replayed, end where the model is
    bound = dict(initial)
    for ev in kernel.uevents:
        if ev.action == "bind":
            assert bound.get(ev.address) is None, ev
            bound[ev.address] = ev.driver
        elif ev.action in ("unbind", "remove"):
            if ev.action == "unbind":
                assert bound.get(ev.address) == ev.driver, ev
            else:
                assert bound.get(ev.address) is None, ev
            bound[ev.address] = None
    assert {a: drv for a, drv in bound.items() if drv} == {
        a: d.driver for a, d in devices.items() if d.driver and a in bound}
    assert [e.seqnum for e in kernel.uevents] == sorted({e.seqnum for e in kernel.uevents})


@settings(max_examples=int(os.environ.get("SIM_PROPERTY_EXAMPLES", "30")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(ops, max_size=25),
       fault_lists(ADDRS, DRIVERS, MODULES, max_size=3, max_writes=25))
def test_tree_model_and_events_agree_after_anything(program, faults):
    with tempfile.TemporaryDirectory() as tmp:
        kernel = small_host(tmp).kernel()
        initial = {a: d.driver for a, d in kernel.devices.items()}
        kernel.inject(*faults)
        for op in program:
            try:
                run(kernel, op)
            except (SysfsError, ModprobeError, KeyError):
                pass
        check(kernel, initial)
