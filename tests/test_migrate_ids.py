import pytest
from hypothesis import given, strategies as st

from vfio_flavourd.migrate.ids import ANY, IdError, parse_id, parse_ids
from vfio_flavourd.policy import ClassPrefix, Match

from conftest import make_device


def test_vendor_device_only():
    spec = parse_id("10de:1b80")
    assert (spec.vendor, spec.device, spec.subvendor, spec.subdevice) == (0x10DE, 0x1B80, ANY, ANY)
    assert (spec.class_code, spec.class_mask) == (0, 0)
    assert spec.match_keys() == {"vendor": "0x10de", "device": "0x1b80"}
    assert spec.short == "10de:1b80"


def test_all_six_fields_and_0x_prefixes():
    spec = parse_id("0x10DE:1B80:1043:85f4:030000:ff0000")
    assert spec.match_keys() == {"vendor": "0x10de", "device": "0x1b80",
                                 "subsystem_vendor": "0x1043", "subsystem_device": "0x85f4",
                                 "class": "03"}
    assert spec.short == "10de:1b80:1043:85f4:030000:ff0000"


def test_any_id_drops_the_key():
    spec = parse_id("ffffffff:ffffffff:ffffffff:ffffffff:020000:ffff00")
    assert spec.match_keys() == {"class": "0200"}
    assert spec.short == "any:any:any:any:020000:ffff00"


def test_class_without_mask_is_ignored_as_the_kernel_does():
    assert parse_id("8086:10fb:ffffffff:ffffffff:020000").match_keys() == {
        "vendor": "0x8086", "device": "0x10fb"}


@pytest.mark.parametrize("text, reason", [
    ("zzzz:1", "vendor 'zzzz' is not a hex number"),
    ("10de", "expected VENDOR:DEVICE[:SUBVENDOR[:SUBDEVICE[:CLASS[:CLASS_MASK]]]] in hex, "
             "found no ':' (the kernel skips it too)"),
    ("10de:1b80zz", "device '1b80zz' is not a hex number"),
    ("10de:", "device '' is not a hex number"),
    ("1:2:3:4:5:6:7", "expected at most 6 fields "
                      "(VENDOR:DEVICE[:SUBVENDOR[:SUBDEVICE[:CLASS[:CLASS_MASK]]]]), found 7"),
    ("12345:1", "vendor 0x12345 is not a 16-bit id (ffffffff means any)"),
    ("10de:1b80:ffffffff:ffffffff:030000:00ff00",
     "class mask 00ff00 is not ff0000, ffff00 or ffffff: a policy class matches a prefix of "
     "the class code only"),
    ("10de:1:ffffffff:ffffffff:1000000:ff0000",
     "class and class mask are 24-bit values such as 030000 and ff0000"),
    ("ffffffff:ffffffff", "it matches every PCI device; write such a rule by hand if you "
                          "mean it"),
])
def test_bad_entries_say_why(text, reason):
    with pytest.raises(IdError) as e:
        parse_id(text)
    assert str(e.value) == reason


def test_parse_ids_skips_empty_entries_and_keeps_going():
    out = parse_ids("10de:1b80,,zzzz:1, 10de:10f0 ,")
    assert [(e, s is not None, r) for e, s, r in out] == [
        ("10de:1b80", True, None),
        ("zzzz:1", False, "vendor 'zzzz' is not a hex number"),
        ("10de:10f0", True, None)]


def test_matches_like_pci_match_one_device():
    gpu = make_device(vendor=0x10DE, device=0x1B80, sv=0x1043, sd=0x85F4, class_code=0x030000)
    assert parse_id("10de:1b80").matches(gpu)
    assert parse_id("10de:1b80:1043:85f4").matches(gpu)
    assert not parse_id("10de:1b80:1043:0001").matches(gpu)
    assert parse_id("ffffffff:ffffffff:ffffffff:ffffffff:030000:ff0000").matches(gpu)
    assert not parse_id("ffffffff:ffffffff:ffffffff:ffffffff:020000:ff0000").matches(gpu)
    assert not parse_id("10de:1b81").matches(gpu)


def _as_match(keys: dict) -> Match:
    kw = {}
    for k, v in keys.items():
        if k == "class":
            kw["class_"] = (ClassPrefix(int(v, 16), len(v)),)
        else:
            kw[k] = (int(v, 16),)
    return Match(**kw)


IDS = st.sampled_from([0x10DE, 0x8086, 0x1B80, 0x10F0, ANY])
CLASSES = st.sampled_from([0x030000, 0x030200, 0x020000, 0x040300])


@given(IDS, IDS, IDS, IDS, CLASSES, st.sampled_from([0, 0xFF0000, 0xFFFF00, 0xFFFFFF]),
       st.sampled_from([0x10DE, 0x8086]), st.sampled_from([0x1B80, 0x10F0]),
       st.sampled_from([0x10DE, 0x8086, 0x1B80]), st.sampled_from([0x10F0, 0x1B80]), CLASSES)
def test_the_policy_match_claims_what_the_kernel_id_claims(v, d, sv, sd, cls, mask,
                                                           dv, dd, dsv, dsd, dcls):
    """The round trip in miniature: for any id entry and any device, the
    migrated match keys claim the device exactly when the kernel would."""
    text = ":".join(f"{x:x}" for x in (v, d, sv, sd, cls, mask))
    try:
        spec = parse_id(text)
    except IdError:
        return
    dev = make_device(vendor=dv, device=dd, sv=dsv, sd=dsd, class_code=dcls)
    assert _as_match(spec.match_keys()).matches(dev) == spec.matches(dev)
