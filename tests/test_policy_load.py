import os
import textwrap

import pytest

from vfio_flavourd.errors import PolicyError
from vfio_flavourd.policy import ClassPrefix
from vfio_flavourd.policy_load import discover, load, load_policy, parse_file
from vfio_flavourd.root import Root


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path):
    problems = []
    rules = parse_file(path, problems)
    return rules, [str(p) for p in problems]


GOOD = """\
version: 1
rules:
  - name: mlx5-vfs
    match:
      vendor: 0x15b3
      device: [0x101e, "101f"]
      class: "0200"
      address: "0000:3b:*"
      virtfn: true
    flavour: vfio
    prefer: [mlx5_vfio_pci]
    deny: [virtio-vfio-pci]
    fallback: none
  - name: mgmt
    match: {address: "0000:02:00.0"}
    flavour: host
"""


def test_good_file(tmp_path):
    rules, problems = problems_of(write(tmp_path / "a.yaml", GOOD))
    assert problems == []
    r = rules[0]
    assert r.name == "mlx5-vfs" and r.flavour == "vfio"
    assert r.match.vendor == (0x15B3,) and r.match.device == (0x101E, 0x101F)
    assert r.match.class_ == (ClassPrefix(0x0200, 4),)
    assert r.match.virtfn is True
    assert r.prefer == ("mlx5_vfio_pci",) and r.deny == ("virtio_vfio_pci",)
    assert r.fallback is None
    assert r.origin == f"{tmp_path}/a.yaml:3"
    assert rules[1].fallback == "vfio_pci" and rules[1].variants is True


def test_unquoted_address_is_an_address_not_a_number(tmp_path):
    rules, problems = problems_of(write(tmp_path / "a.yaml", """\
        version: 1
        rules:
          - name: r
            match: {address: 0000:03:00.0}
            flavour: vfio
        """))
    assert problems == []
    assert rules[0].match.address == ("0000:03:00.0",)


def test_ids_are_hex_as_lspci_prints_them(tmp_path):
    rules, problems = problems_of(write(tmp_path / "a.yaml", """\
        version: 1
        rules:
          - name: r
            match: {vendor: 8086, device: 1041, subsystem_vendor: "0x1AF4"}
            flavour: vfio
        """))
    assert problems == []
    assert rules[0].match.vendor == (0x8086,) and rules[0].match.device == (0x1041,)
    assert rules[0].match.subsystem_vendor == (0x1AF4,)


def test_every_error_is_reported_with_file_line_and_column(tmp_path):
    f = write(tmp_path / "bad.yaml", """\
        version: 2
        rules:
          - name: one
            match:
              vendr: 0x15b3
              device: 0x1zz
              class: "02000"
            flavour: vfioo
            prefer: ["mlx5 vfio"]
          - match: {virtfn: maybe}
            flavour: host
            fallback: false
          - name: one
            match: {}
            flavour: ignore
        """)
    _, problems = problems_of(f)
    p = str(f)
    assert problems == [
        f"{p}:1:10: version: expected 1, found 2",
        f"{p}:5:7: rules[0].match.vendr: unknown key (did you mean 'vendor'?); expected one of: "
        "vendor, device, subsystem_vendor, subsystem_device, class, address, physfn, virtfn, driver",
        f"{p}:6:15: rules[0].match.device: expected a 16-bit hex id such as 0x15b3 or \"15b3\", found 0x1zz",
        f"{p}:7:14: rules[0].match.class: expected 2, 4 or 6 hex digits (class, class+subclass, "
        "class+subclass+prog-if) such as \"0200\", found '02000'",
        f"{p}:8:14: rules[0].flavour: expected one of vfio, host, ignore, found vfioo",
        f"{p}:9:14: rules[0].prefer[0]: expected a module name (letters, digits, '_' and '-'), "
        "found 'mlx5 vfio'",
        f"{p}:10:5: rules[1]: missing required key 'name'",
        f"{p}:10:21: rules[1].match.virtfn: expected true or false, found maybe",
        f"{p}:12:15: rules[1].fallback: expected a string, found false",
        f"{p}:14:12: rules[2].match: expected at least one key: a rule must say which devices "
        "it claims",
    ]


def test_missing_version_and_unknown_top_key(tmp_path):
    f = write(tmp_path / "p.yaml", "rule:\n  - name: x\n")
    _, problems = problems_of(f)
    assert problems == [
        f"{f}:1:1: rule: unknown key (did you mean 'rules'?); expected one of: version, rules",
        f"{f}:1:1: version: missing; expected 'version: 1' at the top",
    ]


def test_yaml_syntax_error_names_line(tmp_path):
    f = write(tmp_path / "p.yaml", "version: 1\nrules:\n  - name: [x\n")
    _, problems = problems_of(f)
    assert len(problems) == 1
    assert problems[0].startswith(f"{f}:4:1: YAML syntax error: while parsing a flow sequence")


def test_duplicate_keys_and_wrong_shapes(tmp_path):
    f = write(tmp_path / "p.yaml", """\
        version: 1
        rules:
          - name: a
            name: b
            match: [1]
            flavour: vfio
          - just a string
        """)
    _, problems = problems_of(f)
    assert problems == [
        f"{f}:4:5: rules[0].name: duplicate key (first given on line 3)",
        f"{f}:5:12: rules[0].match: expected a mapping, found a list",
        f"{f}:7:5: rules[1]: expected a mapping, found just a string",
    ]


def test_duplicate_rule_names_across_files(tmp_path):
    a = write(tmp_path / "10-a.yaml", "version: 1\nrules:\n  - {name: x, match: {vendor: 1}, flavour: vfio}\n")
    b = write(tmp_path / "20-b.yaml", "version: 1\nrules:\n  - {name: x, match: {vendor: 2}, flavour: vfio}\n")
    with pytest.raises(PolicyError) as e:
        load_policy(Root(tmp_path), [a, b])
    assert [str(p) for p in e.value.problems] == [
        f"{b}:3:1: name: duplicate rule name 'x' (first defined at {a}:3)"]


def test_errors_from_all_files_are_collected(tmp_path):
    a = write(tmp_path / "a.yaml", "version: 3\n")
    b = write(tmp_path / "b.yaml", "version: 1\nrules: 5\n")
    with pytest.raises(PolicyError) as e:
        load_policy(Root(tmp_path), [a, b])
    assert [str(p) for p in e.value.problems] == [
        f"{a}:1:10: version: expected 1, found 3",
        f"{b}:2:8: rules: expected a list of rules, found 5",
    ]


def test_unreadable_file(tmp_path):
    with pytest.raises(PolicyError) as e:
        load_policy(Root(tmp_path), [tmp_path / "nope.yaml"])
    assert str(e.value) == f"{tmp_path}/nope.yaml:1:1: cannot read: No such file or directory"


RULE = "version: 1\nrules:\n  - {{name: {name}, match: {{vendor: 1}}, flavour: vfio}}\n"


def test_layering_masks_by_name_and_orders_by_name(tmp_path):
    usr = tmp_path / "usr/lib/vfio-flavourd/policy.d"
    etc = tmp_path / "etc/vfio-flavourd/policy.d"
    run = tmp_path / "run/vfio-flavourd/policy.d"
    write(usr / "10-vendor.yaml", RULE.format(name="vendor"))
    write(usr / "50-common.yaml", RULE.format(name="from-usr"))
    write(etc / "50-common.yaml", RULE.format(name="from-etc"))
    write(run / "50-common.yaml", RULE.format(name="from-run"))
    write(etc / "30-admin.yaml", RULE.format(name="admin"))
    write(etc / "README", "not policy")
    policy = load_policy(Root(tmp_path))
    assert [r.name for r in policy.rules] == ["vendor", "admin", "from-run"]
    common = [f for f in policy.files if f.path.name == "50-common.yaml"][0]
    assert common.masks == (usr / "50-common.yaml", etc / "50-common.yaml")


def test_admin_disables_vendor_file_with_empty_file_or_dev_null(tmp_path):
    usr = tmp_path / "usr/lib/vfio-flavourd/policy.d"
    etc = tmp_path / "etc/vfio-flavourd/policy.d"
    write(usr / "10-a.yaml", RULE.format(name="a"))
    write(usr / "20-b.yaml", RULE.format(name="b"))
    write(usr / "30-c.yaml", RULE.format(name="c"))
    write(etc / "10-a.yaml", "")
    os.symlink("/dev/null", etc / "20-b.yaml")
    policy = load_policy(Root(tmp_path))
    assert [r.name for r in policy.rules] == ["c"]
    assert [f.disabled for f in discover(Root(tmp_path).policy_dirs())] == [True, True, False]


def test_comment_only_file_is_fine(tmp_path):
    f = write(tmp_path / "a.yaml", "# nothing yet\n")
    assert load([*discover([tmp_path])]).rules == []
    assert problems_of(f) == ([], [])
