from hypothesis import given, strategies as st

from vfio_flavourd.aliases import VariantIndex, make_alias
from vfio_flavourd.engine import decide
from vfio_flavourd.policy import ClassPrefix, Match, Policy, Rule

from conftest import make_device


def rule(name="r", flavour="vfio", **kw):
    match = kw.pop("match", Match(vendor=(0x15B3,)))
    return Rule(name=name, match=match, flavour=flavour, origin=f"p.yaml:{len(name)}", **kw)


def test_variant_beats_catch_all(real_index):
    d = decide(make_device(driver="mlx5_core"), Policy([rule()]), real_index)
    assert (d.action, d.module) == ("bind", "mlx5_vfio_pci")
    assert [(c.alias.module, c.verdict) for c in d.candidates] == [
        ("mlx5_vfio_pci", "chosen"), ("vfio_pci", "catch-all")]


def test_no_variant_falls_back_to_catch_all(real_index):
    dev = make_device(vendor=0x8086, device=0x10D3, driver="e1000e")
    d = decide(dev, Policy([rule(match=Match(vendor=(0x8086,)))]), real_index)
    assert (d.action, d.module) == ("bind", "vfio_pci")
    assert d.notes == ["no allowed variant matches: using fallback vfio_pci"]


def test_fallback_none_leaves_device_alone(real_index):
    dev = make_device(vendor=0x8086, device=0x10D3)
    d = decide(dev, Policy([rule(match=Match(vendor=(0x8086,)), fallback=None)]), real_index)
    assert (d.action, d.module) == ("none", None)
    assert d.reason == ("no allowed variant matches and fallback is none: leaving the device alone")


def test_deny_removes_the_variant(real_index):
    d = decide(make_device(), Policy([rule(deny=("mlx5_vfio_pci",))]), real_index)
    assert d.module == "vfio_pci"
    assert [(c.alias.module, c.verdict) for c in d.candidates] == [
        ("mlx5_vfio_pci", "denied"), ("vfio_pci", "chosen")]
    assert "deny: removed mlx5_vfio_pci" in d.notes


def test_variants_false_allows_only_fallback(real_index):
    d = decide(make_device(), Policy([rule(variants=False)]), real_index)
    assert d.module == "vfio_pci"
    assert d.candidates[0].verdict == "variants-off"


def test_denied_fallback_means_nothing(real_index):
    d = decide(make_device(), Policy([rule(variants=False, deny=("vfio_pci",))]), real_index)
    assert (d.action, d.module) == ("none", None)


def test_prefer_wins_over_more_specific():
    index = VariantIndex([
        make_alias("specific_vfio", "v000015B3d0000101Esv000015B3sd*bc*sc*i*", "a:1"),
        make_alias("broad_vfio", "v000015B3d*sv*sd*bc*sc*i*", "a:2"),
        make_alias("vfio_pci", "v*d*sv*sd*bc*sc*i*", "a:3")])
    d = decide(make_device(), Policy([rule(prefer=("absent", "broad_vfio"))]), index)
    assert d.module == "broad_vfio"
    assert d.notes[0] == "prefer: broad_vfio matches the device and wins outright"
    d = decide(make_device(), Policy([rule()]), index)
    assert d.module == "specific_vfio"


def test_tie_is_broken_by_name_and_reported():
    index = VariantIndex([
        make_alias("zz_vfio", "v000015B3d0000101Esv*sd*bc*sc*i*", "a:1"),
        make_alias("aa_vfio", "v000015B3d0000101Esv*sd*bc*sc*i*", "a:2")])
    d = decide(make_device(), Policy([rule()]), index)
    assert d.module == "aa_vfio" and d.tie == ("aa_vfio", "zz_vfio")
    assert d.notes == ["tie: aa_vfio, zz_vfio match with 5 wildcard fields each; aa_vfio wins "
                       "by name (add 'prefer' to choose)"]


def test_keep_when_already_on_chosen_driver(real_index):
    dev = make_device(driver="mlx5_vfio_pci", driver_module="mlx5_vfio_pci")
    d = decide(dev, Policy([rule()]), real_index)
    assert (d.action, d.reason) == ("keep", "already on mlx5_vfio_pci")


def test_driver_and_module_names_differ(real_index):
    dev = make_device(vendor=0x8086, device=0x10D3, driver="vfio-pci", driver_module="vfio_pci")
    d = decide(dev, Policy([rule(match=Match(vendor=(0x8086,)))]), real_index)
    assert d.action == "keep"


def test_catch_all_is_kept_unless_upgrade(real_index):
    dev = make_device(driver="vfio-pci", driver_module="vfio_pci")
    d = decide(dev, Policy([rule()]), real_index)
    assert d.action == "keep"
    assert d.reason == ("already on vfio driver vfio-pci; 'upgrade: true' would move it to "
                        "mlx5_vfio_pci")
    d = decide(dev, Policy([rule(upgrade=True)]), real_index)
    assert (d.action, d.module) == ("bind", "mlx5_vfio_pci")


def test_host_flavour_releases_from_vfio(real_index):
    dev = make_device(driver="vfio-pci", driver_module="vfio_pci")
    assert decide(dev, Policy([rule(flavour="host")]), real_index).action == "release"
    dev = make_device(driver="mlx5_core", driver_module="mlx5_core")
    assert decide(dev, Policy([rule(flavour="host")]), real_index).action == "none"


def test_ignore_and_no_rule(real_index):
    dev = make_device(driver="vfio-pci")
    assert decide(dev, Policy([rule(flavour="ignore")]), real_index).action == "none"
    d = decide(dev, Policy([]), real_index)
    assert (d.action, d.rule, d.reason) == ("none", None, "no rule claims this device")


def test_bridges_are_never_bound(real_index):
    dev = make_device(vendor=0x8086, device=0x2030, class_code=0x060400)
    d = decide(dev, Policy([rule(match=Match(class_=(ClassPrefix(0x06, 2),)))]), real_index)
    assert (d.action, d.reason) == ("none", "bridges are never bound to vfio")


def test_first_matching_rule_wins_and_trace_stops_there(real_index):
    rules = [rule("gpus", match=Match(class_=(ClassPrefix(0x03, 2),))),
             rule("nics", flavour="host", match=Match(class_=(ClassPrefix(0x0200, 4),))),
             rule("mlx", match=Match(vendor=(0x15B3,)))]
    d = decide(make_device(), Policy(rules), real_index)
    assert d.rule.name == "nics"
    assert [(t.rule.name, t.matched, t.reasons) for t in d.trace] == [
        ("gpus", False, ("class 020000 does not start with 03",)),
        ("nics", True, ("class 020000 starts with 0200",))]


def test_match_keys_explain_themselves():
    m = Match(vendor=(0x15B3,), device=(0x101D, 0x101E), address=("0000:3b:*",),
              physfn=("0000:3b:00.0",), virtfn=True, driver=("mlx5_*",))
    dev = make_device(physfn="0000:3b:00.0", driver="mlx5_core")
    assert [r for _, _, r in m.check(dev)] == [
        "vendor 15b3 is 15b3", "device 101e is 101d/101e",
        "address 0000:3b:00.2 matches 0000:3b:*", "physfn 0000:3b:00.0 matches 0000:3b:00.0",
        "virtfn: device is a VF of 0000:3b:00.0 (wanted virtfn: true)",
        "driver mlx5_core matches mlx5_*"]
    assert m.matches(dev)
    pf = make_device(address="0000:3b:00.0", device=0x101D)
    assert not m.matches(pf)
    assert "physfn: device has none (wanted 0000:3b:00.0)" in [r for _, _, r in m.check(pf)]


MODS = st.sampled_from(["a_vfio", "b_vfio", "c_vfio", "d_vfio"])


@given(st.lists(st.tuples(MODS, st.integers(0, 6)), min_size=1, max_size=6),
       st.lists(MODS, max_size=2), st.lists(MODS, max_size=2), st.booleans())
def test_choice_properties(entries, prefer, deny, variants):
    """Whatever the aliases, prefer and deny: the chosen module is allowed and
    matching, a preferred match wins, else the fewest wildcards, else the
    fallback."""
    fields = ["v000015B3", "d0000101E", "sv000015B3", "sd00000016", "bc02", "sc00", "i00"]
    names = ["v", "d", "sv", "sd", "bc", "sc", "i"]
    aliases = []
    for n, (mod, wild) in enumerate(entries):
        pattern = "".join(f"{names[i]}*" if i < wild else fields[i] for i in range(7)) + "*"
        aliases.append(make_alias(mod, pattern, f"f:{n}"))
    aliases.append(make_alias("vfio_pci", "v*d*sv*sd*bc*sc*i*", "f:cat"))
    index = VariantIndex(aliases)
    r = rule(prefer=tuple(prefer), deny=tuple(deny), variants=variants)
    d = decide(make_device(), Policy([r]), index)
    allowed = {a for a in aliases if not a.is_catch_all and variants and a.module not in deny}
    if not allowed:
        assert d.module == (None if "vfio_pci" in deny else "vfio_pci")
        return
    assert d.module in {a.module for a in allowed}
    pref_hits = [p for p in prefer if p in {a.module for a in allowed}]
    if pref_hits:
        assert d.module == pref_hits[0]
    else:
        best = min(a.wildcards for a in allowed)
        assert d.module == min(a.module for a in allowed if a.wildcards == best)


# Small alphabets, so that matches and misses both come up often.
IDS = st.sampled_from([0x15B3, 0x8086, 0x1AF4])
MAYBE_IDS = st.none() | st.lists(IDS, min_size=1, max_size=2).map(tuple)
GLOBS = st.none() | st.lists(st.sampled_from(["0000:3b:*", "*.2", "0000:3b:00.0", "mlx5*",
                                              "e1000e", "vfio-pci", "[!m]*"]),
                             min_size=1, max_size=2).map(tuple)
CLASSES = st.none() | st.lists(st.sampled_from([ClassPrefix(0x02, 2), ClassPrefix(0x0200, 4),
                                                ClassPrefix(0x0108, 4)]),
                               min_size=1, max_size=2).map(tuple)


@given(st.builds(Match, vendor=MAYBE_IDS, device=MAYBE_IDS, subsystem_vendor=MAYBE_IDS,
                 subsystem_device=MAYBE_IDS, class_=CLASSES, address=GLOBS, physfn=GLOBS,
                 virtfn=st.none() | st.booleans(), driver=GLOBS),
       st.builds(lambda sv, sd, **kw: make_device(sv=sv or 0, sd=sd or 0, **kw)._replace(
                     subsystem_vendor=sv, subsystem_device=sd), address=st.sampled_from(["0000:3b:00.2", "0000:5e:00.0"]),
                 vendor=IDS, device=IDS, sv=st.none() | IDS, sd=st.none() | IDS,
                 class_code=st.sampled_from([0x020000, 0x010802, 0x030000]),
                 physfn=st.none() | st.just("0000:3b:00.0"),
                 driver=st.none() | st.sampled_from(["mlx5_core", "e1000e", "vfio-pci"])))
def test_fast_match_agrees_with_the_explained_one(match, dev):
    """The engine decides by Match.matches; `explain` shows Match.check."""
    assert match.matches(dev) == all(ok for _, ok, _ in match.check(dev))


@given(st.lists(st.sampled_from([0x15B3, 0x8086, 0x1AF4]), min_size=1, max_size=5))
def test_trace_ends_at_the_rule_that_decided(vendors):
    rules = [rule(name=f"r{i}", match=Match(vendor=(v,))) for i, v in enumerate(vendors)]
    d = decide(make_device(vendor=0x8086), Policy(rules), VariantIndex([]))
    assert [t.matched for t in d.trace][-1:] == ([True] if d.rule else [False])
    assert len(d.trace) == (vendors.index(0x8086) + 1 if 0x8086 in vendors else len(vendors))
    assert d.rule is (rules[vendors.index(0x8086)] if 0x8086 in vendors else None)
