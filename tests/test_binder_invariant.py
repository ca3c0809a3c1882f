"""The binder's promise, checked over generated fault sequences:

afterwards each device is on the chosen module's driver, the fallback's, or
the driver it had before; no override names a driver that does not hold it;
nothing that had a driver is left without one.

Faults: modprobe and probe failures of the vfio drivers (persistent or
transient), a transient probe failure of the host driver, EBUSY on unbind,
one transient write error anywhere, and hot-unplug at any write.  A
persistent failure of every way back (say every write to every bind file)
cannot be recovered from by any tool and is not generated.
"""

import errno
import os
import pathlib
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from vfio_flavourd import actions
from vfio_flavourd.sim import (HostBuilder, ModprobeFails, ProbeFails, UnbindBusy, Vanish,
                               WriteFails)

from simhost import driver_of, make_ctx, override_of, write_policy

VF0, VF1, NIC = "0000:3b:00.2", "0000:3b:00.3", "0000:04:00.0"
DEVICES = (VF0, VF1, NIC)
TIMES = st.sampled_from([None, 1, 2])

faults = st.one_of(
    st.builds(ModprobeFails, st.sampled_from(["mlx5_vfio_pci", "vfio_pci"]), times=TIMES),
    st.builds(ProbeFails, st.sampled_from(["mlx5_vfio_pci", "vfio-pci"]),
              address=st.sampled_from([None, VF0, NIC]), times=TIMES),
    st.builds(ProbeFails, st.sampled_from(["mlx5_core", "e1000e"]), times=st.just(1)),
    st.builds(UnbindBusy, driver=st.sampled_from([None, "mlx5_core", "e1000e"]), times=TIMES),
    st.builds(WriteFails, st.sampled_from(["*/driver_override", "*/unbind", "*/drivers_probe",
                                           "*/bind", "*"]),
              errno=st.sampled_from([errno.EIO, errno.ENOMEM, errno.EINVAL]),
              nth=st.one_of(st.none(), st.integers(1, 12)), times=st.just(1)),
    st.builds(Vanish, st.sampled_from(DEVICES), at_write=st.integers(1, 12),
              when=st.sampled_from(["before", "after"])),
)


def host(tmp):
    return (HostBuilder(tmp)
            .host_bridge("0000:00:00.0")
            .bridge("0000:00:03.0", secondary=0x04)
            .device(NIC, 0x8086, 0x10D3, 0x020000, driver="e1000e")
            .bridge("0000:3a:00.0", secondary=0x3B)
            .sriov_pf("0000:3b:00.0", 0x15B3, 0x101D, 0x020000, vf_device=0x101E,
                      totalvfs=4, numvfs=2, vf_driver="mlx5_core", driver="mlx5_core")
            .kernel())


# Thousands of sequences in the full suite; set fewer for a quick loop.
EXAMPLES = int(os.environ.get("VFIO_FLAVOURD_INVARIANT_EXAMPLES", "2000"))
# Each sequence builds a tree of a few hundred files: on tmpfs that takes
# 18 ms, on this machine's disk 450 ms.
TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(faults, max_size=4), st.sampled_from(["vfio_pci", "none"]), st.booleans())
def test_no_device_is_stranded(fault_list, fallback, preloaded):
    with tempfile.TemporaryDirectory(prefix="vfio-flavourd-inv-", dir=TMP) as tmp:
        check_sequence(pathlib.Path(tmp), fault_list, fallback, preloaded)


def check_sequence(tmp, fault_list, fallback, preloaded):
    kernel = host(tmp)
    if preloaded:
        kernel.loader.load("vfio_pci")
    write_policy(tmp, f"""\
        version: 1
        rules:
          - {{name: vfs, match: {{vendor: 0x15b3, virtfn: true}}, flavour: vfio,
              fallback: {fallback}}}
          - {{name: nic, match: {{address: "{NIC}"}}, flavour: vfio, fallback: {fallback}}}
        """)
    ctx = make_ctx(kernel)
    before = {a: driver_of(kernel, a) for a in DEVICES}
    kernel.inject(*fault_list)
    binder = ctx.binder(0)
    outcomes = {}
    for d in actions.decisions_for(ctx):
        o = actions.carry_out(ctx, binder, d)
        outcomes[o.address] = o
    allowed_new = {VF0: {"mlx5_vfio_pci", "vfio-pci"}, VF1: {"mlx5_vfio_pci", "vfio-pci"},
                   NIC: {"vfio-pci"}}
    for a in DEVICES:
        if not kernel.sysfs.exists(f"sys/bus/pci/devices/{a}"):
            continue      # unplugged: nothing is left to strand
        now = driver_of(kernel, a)
        override = override_of(kernel, a)
        assert now in allowed_new[a] | {before[a]}, (a, now, outcomes[a])
        assert override == "(null)" or override == now, (a, override, now, outcomes[a])
        assert now is not None or before[a] is None, (a, outcomes[a])
        o = outcomes[a]
        if o.result == "bound":
            assert o.driver == now
        if fallback == "none":
            assert now in {"mlx5_vfio_pci", before[a]}
