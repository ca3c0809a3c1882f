"""The generated udev rules give every device the engine's answer: on the
example host, on the 4,096-VF benchmark host, and on hypothesis-made
policies, aliases and devices.

Devices are taken as they are at their `add` event: no driver bound and no
driver_override (a copy's driver links are removed first).  The rules run
in tests/udev_eval.py, which reads udev's glob semantics over the copied
sysfs attributes; tests/vm checks the same file with the real udevd.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import make_device
from udev_eval import UdevDevice, evaluate, parse
from vfio_flavourd import engine
from vfio_flavourd.aliases import VariantIndex, make_alias
from vfio_flavourd.cli import main
from vfio_flavourd.modprobe import expected_driver_name
from vfio_flavourd.pci import PciDevice, make_modalias, read_device
from vfio_flavourd.policy import ClassPrefix, Match, Policy, Rule
from vfio_flavourd.policy_load import load_policy
from vfio_flavourd.root import Root
from vfio_flavourd.rules_compile import compile_rules
from vfio_flavourd.sysfs import Sysfs

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples/hosts/virt-server"


def as_at_add_event(root: Path) -> None:
    """Unbind every device of a copied root and clear its override: what a
    device looks like when the kernel announces it."""
    devices = root / "sys/bus/pci/devices"
    for name in os.listdir(devices):
        d = devices / name
        if os.path.lexists(d / "driver"):
            os.unlink(d / "driver")
        if (d / "driver_override").exists():
            (d / "driver_override").write_text("(null)\n")


def cli_output(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def udev_part(rule: Rule) -> Match:
    """The part of a rule's match that the generated file tests in udev."""
    return rule.match._replace(physfn=None, driver=None)


def check(result, decision, dev, policy, deferred) -> None:
    """One device: the rules' result against the engine's decision."""
    where = f"{dev.address}: engine says {decision!r}, rules did {result!r}"
    if result.callout is not None:
        # Only a left-out rule may send a device to the callout, and only one
        # that comes no later than the rule the engine chose.
        last = policy.rules.index(decision.rule) if decision.rule else len(policy.rules) - 1
        assert any(r.name in deferred and udev_part(r).matches(dev)
                   for r in policy.rules[:last + 1]), where
        assert decision.rule is None or decision.rule.name in deferred or any(
            r.name in deferred for r in policy.rules[:last]), where
        return
    if decision.rule is not None:
        assert decision.rule.name not in deferred, where
    if decision.action == engine.BIND:
        if dev.boot_vga:
            assert result.driver_override is None and "systemd" in result.tags, where
            return
        assert result.driver_override == expected_driver_name(decision.module), where
        assert result.run == [f"kmod load {decision.module}"], where
        assert result.writes.get("[subsystem/pci]drivers_probe") == dev.address, where
    else:
        assert decision.action == engine.NONE, where
        assert result.driver_override is None and result.run == [], where


def check_host(root: Path, capsys) -> int:
    """Every device of a copied host: generate-rules against plan --json,
    both through the command line.  Returns how many devices were bound."""
    as_at_add_event(root)
    plan = json.loads(cli_output(capsys, "--root", str(root), "plan", "--json"))
    text = cli_output(capsys, "--root", str(root), "generate-rules")
    rules = parse(text)
    policy = load_policy(Root(root))
    deferred = {line.split()[1] for line in text.splitlines()
                if line.startswith("#   ") and "(" in line}
    sysfs = Sysfs(Root(root))
    binds = 0
    for entry in plan:
        dev = read_device(sysfs, entry["address"])
        d = engine.Decision(dev)
        d.action, d.module = entry["action"], entry["module"]
        d.rule = next((r for r in policy.rules if r.name == entry["rule"]), None)
        result = evaluate(rules, UdevDevice.from_sysfs(
            str(root / "sys/bus/pci/devices" / entry["address"])))
        check(result, d, dev, policy, deferred)
        binds += result.driver_override is not None
    return binds


def test_example_host_agrees_with_plan(tmp_path, capsys):
    root = tmp_path / "host"
    shutil.copytree(EXAMPLE, root, symlinks=True)
    binds = check_host(root, capsys)
    assert binds >= 5       # mlx5, qat, pds VFs and the GPUs, natively


def test_benchmark_host_agrees_with_plan(tmp_path, capsys):
    sys.path.insert(0, str(REPO))
    try:
        from bench import host
    finally:
        sys.path.remove(str(REPO))
    b = host.build(str(tmp_path / "bench"), host.synthetic([
        "alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci",
        "alias vfio_pci:v000010DEd00002342sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci"]))
    binds = check_host(Path(b.root), capsys)
    assert binds == host.PFS * host.VFS_PER_PF + 4


# --- hypothesis: policies, aliases and devices from small id spaces, so
# that matches, overlaps and ties are common.

VENDORS = (0x15B3, 0x8086, 0x1AF4)
DEVICES = (0x1001, 0x1002, 0x1003)
CLASSES = (0x020000, 0x030200, 0x060400, 0x010802, 0x020001)
MODULES = ("a_vfio_pci", "b_vfio_pci", "c_vfio_pci", "vfio_pci")
# A package build asks the binder's property test for fewer examples
# (debian/rules); this one then runs a fifth as many as that.
_ASKED = os.environ.get("VFIO_FLAVOURD_INVARIANT_EXAMPLES")
EXAMPLES = max(int(_ASKED) // 5, 1) if _ASKED else 400


def hex8(v):
    return f"{v:08X}"


@st.composite
def aliases(draw):
    module = draw(st.sampled_from(MODULES[:3]))
    v = draw(st.sampled_from(VENDORS[:2] + (None,)))
    d = draw(st.sampled_from(DEVICES[:2] + (None,)))
    sv = draw(st.sampled_from(VENDORS[:1] + (None, None)))
    bc = draw(st.sampled_from(("02", "03", None, None)))
    pattern = (f"v{hex8(v) if v else '*'}d{hex8(d) if d else '*'}"
               f"sv{hex8(sv) if sv else '*'}sd*bc{bc or '*'}sc*i*")
    return module, pattern


@st.composite
def matches(draw):
    kw = {}
    if draw(st.booleans()):
        kw["vendor"] = tuple(draw(st.lists(st.sampled_from(VENDORS), min_size=1, max_size=2)))
    if draw(st.booleans()):
        kw["device"] = tuple(draw(st.lists(st.sampled_from(DEVICES), min_size=1, max_size=2)))
    if draw(st.integers(0, 5)) == 0:
        kw["subsystem_vendor"] = (draw(st.sampled_from(VENDORS)),)
    if draw(st.integers(0, 3)) == 0:
        c = draw(st.sampled_from(CLASSES))
        digits = draw(st.sampled_from((2, 4, 6)))
        kw["class_"] = (ClassPrefix(c >> (24 - 4 * digits), digits),)
    if draw(st.integers(0, 3)) == 0:
        kw["address"] = tuple(draw(st.lists(st.sampled_from(
            ("0000:3b:*", "0000:3b:00.[0-3]", "*.1", "0000:0?:00.0", "[!0]*")),
            min_size=1, max_size=2)))
    if draw(st.integers(0, 2)) == 0:
        kw["virtfn"] = draw(st.booleans())
    if draw(st.integers(0, 9)) == 0:
        kw["physfn"] = ("0000:3b:00.0",)
    if draw(st.integers(0, 9)) == 0:
        kw["driver"] = ("mlx5*",)
    return Match(**kw)


@st.composite
def rules(draw, n):
    flavour = draw(st.sampled_from(("vfio",) * 6 + ("host", "ignore")))
    return Rule(
        name=f"r{n}", match=draw(matches()), flavour=flavour, origin=f"p.yaml:{n}",
        prefer=tuple(draw(st.lists(st.sampled_from(MODULES), max_size=2))),
        deny=tuple(draw(st.lists(st.sampled_from(MODULES), max_size=1))),
        variants=draw(st.booleans()),
        fallback=draw(st.sampled_from(("vfio_pci", "vfio_pci", None, "b_vfio_pci"))),
        takeover=draw(st.integers(0, 9)) == 0,
        group="all" if draw(st.integers(0, 9)) == 0 else "device")


@st.composite
def devices(draw):
    v, d = draw(st.sampled_from(VENDORS)), draw(st.sampled_from(DEVICES))
    sv = draw(st.sampled_from(VENDORS[:1] * 3 + (None,)))
    sd = 0x0016
    cls = draw(st.sampled_from(CLASSES))
    bus, fn = draw(st.sampled_from((0x3b, 0x05, 0x04))), draw(st.integers(0, 7))
    return PciDevice(
        address=f"0000:{bus:02x}:00.{fn}", vendor=v, device=d, subsystem_vendor=sv,
        subsystem_device=sd, class_code=cls, modalias=make_modalias(v, d, sv or 0, sd, cls),
        physfn=draw(st.sampled_from((None, "0000:3b:00.0", "0000:5e:00.0"))),
        boot_vga=draw(st.sampled_from((None, None, False, True))))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 5).flatmap(lambda n: st.tuples(*(rules(i) for i in range(n)))),
       st.lists(aliases(), max_size=8), st.lists(devices(), min_size=1, max_size=12))
def test_random_policies_agree_with_the_engine(rule_list, alias_list, device_list):
    index = VariantIndex([make_alias(m, p, f"a:{i}") for i, (m, p) in enumerate(alias_list)]
                         + [make_alias("vfio_pci", "v*d*sv*sd*bc*sc*i*", "a:cat")])
    policy = Policy(list(rule_list))
    compiled = compile_rules(policy, index)
    parsed = parse("\n".join(compiled.lines))
    deferred = {d.rule.name for d in compiled.deferred}
    for dev in device_list:
        decision = engine.decide(dev, policy, index)
        check(evaluate(parsed, UdevDevice.from_pci(dev)), decision, dev, policy, deferred)


def test_check_catches_a_wrong_answer(real_index):
    """The agreement check fails when the rules and the engine differ."""
    policy = Policy([Rule(name="r", match=Match(vendor=(0x15B3,)), flavour="vfio")])
    compiled = compile_rules(policy, real_index)
    wrong = "\n".join(compiled.lines).replace('"kmod load mlx5_vfio_pci"', '"kmod load vfio_pci"')
    dev = make_device()
    decision = engine.decide(dev, policy, real_index)
    with pytest.raises(AssertionError):
        check(evaluate(parse(wrong), UdevDevice.from_pci(dev)), decision, dev, policy, set())
