"""Hypothesis strategies that draw faults for the simulated kernel.

Test-only: importing this module needs hypothesis.

    @given(fault_lists(addresses=[VF0, VF1], drivers=["mlx5_vfio_pci"],
                       modules=["mlx5_vfio_pci"]))
    def test_x(faults): kernel.inject(*faults); ...
"""

from __future__ import annotations

import errno
from typing import Sequence

from hypothesis import strategies as st

from . import faults as F

WRITE_ERRNOS = (errno.EIO, errno.EBUSY, errno.ENODEV, errno.EINVAL, errno.ENOMEM,
                errno.EAGAIN, errno.EPERM)
PROBE_ERRNOS = (errno.EIO, errno.EINVAL, errno.ENOMEM, errno.ENODEV, errno.EBUSY)
TIMES = st.one_of(st.none(), st.integers(1, 3))


def faults(addresses: Sequence[str], drivers: Sequence[str], modules: Sequence[str],
           paths: Sequence[str] = ("*/driver_override", "*/unbind", "*/bind",
                                   "*/drivers_probe", "*"),
           max_writes: int = 30, old_kernels: bool = True) -> st.SearchStrategy:
    """One fault of any kind, aimed at the given devices, drivers, modules."""
    addr = st.sampled_from(list(addresses))
    kinds = [
        st.builds(F.ModprobeFails, st.sampled_from(list(modules)), times=TIMES),
        st.builds(F.ProbeFails, st.sampled_from(list(drivers)),
                  address=st.one_of(st.none(), addr),
                  errno=st.sampled_from(PROBE_ERRNOS), times=TIMES),
        st.builds(F.UnbindBusy, driver=st.one_of(st.none(), st.sampled_from(list(drivers))),
                  address=st.one_of(st.none(), addr), times=TIMES),
        st.builds(F.WriteFails, st.sampled_from(list(paths)), errno=st.sampled_from(WRITE_ERRNOS),
                  nth=st.one_of(st.none(), st.integers(1, max_writes)), times=TIMES),
        st.builds(F.Vanish, addr, at_write=st.integers(1, max_writes),
                  when=st.sampled_from(["before", "after"])),
    ]
    if old_kernels:
        kinds += [st.builds(F.OverrideMissing),
                  st.builds(F.OverrideLocked, address=st.one_of(st.none(), addr),
                            errno=st.sampled_from([errno.EACCES, errno.EROFS, errno.EPERM]))]
    return st.one_of(kinds)


def fault_lists(addresses, drivers, modules, max_size: int = 4, **kw) -> st.SearchStrategy:
    return st.lists(faults(addresses, drivers, modules, **kw), max_size=max_size)
