"""safeio.resolved gives realpath's answer, from the kernel."""

import os

import pytest
from hypothesis import given, settings, strategies as st

from vfio_flavourd import safeio


def build(root):
    """A sysfs-like tree: a bus directory of relative links into devices/,
    a link to a link, a dangling link, a FIFO, a link loop and an absolute
    link."""
    dev = root / "sys/devices/pci0000:00/0000:00:1c.3/0000:04:00.0"
    (dev / "virtio8").mkdir(parents=True)
    bus = root / "sys/bus/pci/devices"
    bus.mkdir(parents=True)
    os.symlink("../../../devices/pci0000:00/0000:00:1c.3/0000:04:00.0", bus / "0000:04:00.0")
    os.symlink("0000:04:00.0", bus / "alias")
    os.symlink("../nowhere", bus / "dangling")
    os.symlink("loop", bus / "loop")
    os.mkfifo(dev / "fifo")
    os.symlink(str(dev), root / "abs")
    return root


@pytest.fixture
def tree(tmp_path):
    return build(tmp_path)


NAMES = ["sys/bus/pci/devices/0000:04:00.0", "sys/bus/pci/devices/alias",
         "sys/bus/pci/devices/alias/virtio8", "sys/bus/pci/devices/dangling",
         "sys/bus/pci/devices/loop", "sys/bus/pci/devices/0000:04:00.0/fifo",
         "sys/bus/pci/devices/0000:04:00.0/../../", "abs/virtio8", "abs/missing/x", "sys"]


@pytest.mark.parametrize("name", NAMES)
def test_same_answer_as_realpath(tree, name):
    path = os.path.join(tree, name)
    assert safeio.resolved(path) == os.path.realpath(path)


def test_a_device_link_resolves_to_its_directory(tree):
    got = safeio.resolved(tree / "sys/bus/pci/devices/alias")
    assert got == str(tree / "sys/devices/pci0000:00/0000:00:1c.3/0000:04:00.0")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["sys", "bus", "pci", "devices", "alias", "0000:04:00.0", "..",
                                 ".", "virtio8", "abs", "loop", "fifo", "dangling", "x"]),
                min_size=1, max_size=7))
def test_any_walk_through_the_tree_agrees_with_realpath(tmp_path_factory, parts):
    root = build(tmp_path_factory.mktemp("r"))
    path = os.path.join(root, *parts)
    assert safeio.resolved(path) == os.path.realpath(path)
