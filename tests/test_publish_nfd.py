import collections
import os
import re

from vfio_flavourd import publish_files, publish_nfd
from vfio_flavourd.migration import implements_migration
from vfio_flavourd.publish import Targets
from vfio_flavourd.publish_facts import Facts, HeldDevice

from fleet_host import run_example

# NFD's rules for a local-source feature file, restated here from its docs
# (docs/usage/customization-guide.md, "Local feature source" and "Node
# labels") and Kubernetes' label syntax, independently of publish_nfd.py.
NFD_MAX_FILE = 64 * 1024
DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^((?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def nfd_violations(text: str) -> list:
    bad = []
    if len(text.encode()) > NFD_MAX_FILE:
        bad.append("file over 64 KiB")
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("#") or not line.strip():
            continue
        key, _, value = line.partition("=")
        if "/" not in key:
            bad.append(f"{n}: no namespace")
            continue
        prefix, name = key.rsplit("/", 1)
        if not DNS_SUBDOMAIN.match(prefix):
            bad.append(f"{n}: prefix {prefix!r}")
        if (prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io")) and not \
                prefix.endswith("feature.node.kubernetes.io") and \
                not prefix.endswith("profile.node.kubernetes.io"):
            bad.append(f"{n}: denied namespace {prefix!r}")
        if not LABEL_NAME.match(name):
            bad.append(f"{n}: name {name!r}")
        if not LABEL_VALUE.match(value):
            bad.append(f"{n}: value {value!r}")
    return bad


def labels(text):
    return dict(line.partition("=")[::2] for line in text.splitlines()
                if line and not line.startswith("#"))


def facts(devices, release="6.12.0", variants=("mlx5_vfio_pci", "virtio_vfio_pci")):
    return Facts("0.1.0", release, variants, tuple(devices), 0)


def dev(address, vendor, device, driver, module):
    return HeldDevice(address, vendor, device, driver, module, "r", "1", None)


def test_the_example_host_file(tmp_path):
    path = tmp_path / "features.d" / "vfio-flavourd"
    kernel, state, variants = run_example(tmp_path, Targets(nfd_features=str(path)))
    text = path.read_text()
    assert nfd_violations(text) == []
    got = labels(text)
    # Every line is ours, in our namespace.
    assert all(k.startswith("vfio-flavourd.io/") for k in got)
    assert {k for k in got if ".io/variant." in k} == {
        f"vfio-flavourd.io/variant.{m}" for m in variants}
    want = collections.Counter()
    for address, rec in state.items():
        if rec["outcome"] == "bound":
            d = kernel.device(address)
            want[f"vfio-flavourd.io/bound.{rec['driver']}.{d.vendor:04x}-{d.device:04x}"] += 1
    assert want, "the example host binds devices"
    assert {k: int(v) for k, v in got.items() if ".io/bound." in k} == dict(want)
    # mlx5 VFs on mlx5_vfio_pci: a driver that implements migration.
    assert got["vfio-flavourd.io/live-migration-driver"] == "true"
    assert [p.name for p in path.parent.iterdir()] == ["vfio-flavourd"]


def test_written_as_a_dot_file_then_renamed(tmp_path, monkeypatch):
    renames = []
    real = os.replace
    monkeypatch.setattr(publish_files.os, "replace",
                        lambda a, b: (renames.append((a, b)), real(a, b)))
    path = tmp_path / "vfio-flavourd"
    publish_files.write_atomic(str(path), "vfio-flavourd.io/x=1\n")
    (src, dst), = renames
    assert os.path.dirname(src) == str(tmp_path) and os.path.basename(src).startswith(".")
    assert dst == str(path) and path.read_text() == "vfio-flavourd.io/x=1\n"


def test_live_migration_only_for_variants_that_implement_it():
    vfio = dev("0000:01:00.0", 0x8086, 0x10D3, "vfio-pci", "vfio_pci")
    grace = dev("0000:02:00.0", 0x10DE, 0x2342, "nvgrace_gpu_vfio_pci", "nvgrace_gpu_vfio_pci")
    virtio = dev("0000:03:00.0", 0x1AF4, 0x1041, "virtio_vfio_pci", "virtio_vfio_pci")
    assert labels(publish_nfd.render(facts([vfio, grace])))[
        "vfio-flavourd.io/live-migration-driver"] == "false"
    # virtio_vfio_pci migrates from 6.13 on; Debian 12's 6.12 has no migration code.
    assert labels(publish_nfd.render(facts([virtio], "6.12.117+deb12-amd64")))[
        "vfio-flavourd.io/live-migration-driver"] == "false"
    assert labels(publish_nfd.render(facts([virtio], "6.13.0")))[
        "vfio-flavourd.io/live-migration-driver"] == "true"
    assert implements_migration("xe-vfio-pci", "6.19.1")
    assert not implements_migration("vfio_pci", "6.19.1")


def test_counts_by_driver_and_id():
    devices = [dev(f"0000:3b:00.{i}", 0x15B3, 0x101E, "mlx5_vfio_pci", "mlx5_vfio_pci")
               for i in range(3)] + [dev("0000:5e:01.0", 0x8086, 0x1889, "vfio-pci", "vfio_pci")]
    text = publish_nfd.render(facts(devices))
    assert text.splitlines()[1:] == [
        "vfio-flavourd.io/variant.mlx5_vfio_pci=true",
        "vfio-flavourd.io/variant.virtio_vfio_pci=true",
        "vfio-flavourd.io/bound.mlx5_vfio_pci.15b3-101e=3",
        "vfio-flavourd.io/bound.vfio-pci.8086-1889=1",
        "vfio-flavourd.io/live-migration-driver=true",
    ]
    assert nfd_violations(text) == []


def test_a_line_that_would_break_the_rules_is_left_out():
    warnings = []
    long_driver = "x" * 70
    odd = dev("0000:01:00.0", 0x1234, 0x5678, long_driver, None)
    weird = dev("0000:02:00.0", 0x1234, 0x5678, "we:ird", None)
    text = publish_nfd.render(facts([odd, weird]), warn=warnings.append)
    assert nfd_violations(text) == []
    assert f"vfio-flavourd.io/bound.{long_driver}" not in text
    assert "vfio-flavourd.io/bound.we_ird.1234-5678=1" in text.splitlines()
    assert warnings == [
        f"NFD feature 'vfio-flavourd.io/bound.{long_driver}.1234-5678=1' left out: name "
        f"'bound.{long_driver}.1234-5678' is not a label name (at most 63 of "
        "[-A-Za-z0-9_.], alphanumeric at both ends)"]


def test_the_file_stays_under_64_kib():
    variants = tuple(f"v{i:05d}_vfio_pci" for i in range(5000))
    warnings = []
    text = publish_nfd.render(facts([], variants=variants), warn=warnings.append)
    assert len(text.encode()) <= NFD_MAX_FILE
    assert nfd_violations(text) == []
    assert warnings == ["NFD feature file would pass 65536 bytes; later features left out"]


def test_the_checker_catches_what_nfd_refuses():
    assert nfd_violations("noprefix=1\n") == ["1: no namespace"]
    assert nfd_violations("kubernetes.io/x=1\n") == ["1: denied namespace 'kubernetes.io'"]
    assert nfd_violations("vfio-flavourd.io/x=" + "a" * 64 + "\n") == ["1: value '" + "a" * 64 + "'"]
    assert nfd_violations("vfio-flavourd.io/-x=1\n") == ["1: name '-x'"]
    assert nfd_violations("feature.node.kubernetes.io/x\n") == []
