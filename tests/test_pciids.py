"""Names from pci.ids, found in its bytes, and kept in a small cache."""

import os

import pytest

from vfio_flavourd.pciids import PciIds

PCI_IDS = """\
# comment
0001  SafeNet (wrong ID)
1af4  Red Hat, Inc.
\t1041  Virtio 1.0 network device
\t\t1af4 1100  QEMU Virtual Machine
# a comment inside the vendor list
15b3  Mellanox Technologies
\t101d  MT2892 Family [ConnectX-6 Dx]
\t101e  ConnectX Family mlx5Gen Virtual Function
8086  Intel Corporation
\t10d3  82574L Gigabit Network Connection
C 02  Network controller
\t00  Ethernet controller
"""


@pytest.fixture
def ids_file(tmp_path):
    p = tmp_path / "pci.ids"
    p.write_text(PCI_IDS)
    return p


@pytest.mark.parametrize("vid, did, vendor, device", [
    (0x1AF4, 0x1041, "Red Hat, Inc.", "Virtio 1.0 network device"),
    (0x15B3, 0x101E, "Mellanox Technologies", "ConnectX Family mlx5Gen Virtual Function"),
    (0x8086, 0x10D3, "Intel Corporation", "82574L Gigabit Network Connection"),
    (0x1AF4, 0x101E, "Red Hat, Inc.", None),        # the id is another vendor's
    (0x0001, 0x1041, "SafeNet (wrong ID)", None),
    (0x8086, 0x0200, "Intel Corporation", None),    # not a class line's id
    (0x1234, 0x1041, None, None),
])
def test_names(ids_file, vid, did, vendor, device):
    ids = PciIds(ids_file)
    assert (ids.vendor(vid), ids.device(vid, did)) == (vendor, device)


def test_names_found_are_cached_and_the_cache_follows_the_file(ids_file, tmp_path):
    cache = str(tmp_path / "cache/names")
    first = PciIds(ids_file, cache)
    assert first.device(0x8086, 0x10D3) == "82574L Gigabit Network Connection"
    first.save()
    assert oct(os.stat(cache).st_mode & 0o777) == "0o600"
    second = PciIds(ids_file, cache)
    assert second.device(0x8086, 0x10D3) == "82574L Gigabit Network Connection"
    assert second._data is None                     # pci.ids was not read
    ids_file.write_text(PCI_IDS.replace("82574L", "82574X"))
    third = PciIds(ids_file, cache)
    assert third.device(0x8086, 0x10D3) == "82574X Gigabit Network Connection"


def test_no_file_no_names(tmp_path):
    ids = PciIds(None, str(tmp_path / "names"))
    assert (ids.vendor(0x8086), ids.device(0x8086, 0x10D3)) == (None, None)
