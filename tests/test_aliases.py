import fnmatch

from hypothesis import given, strategies as st

from vfio_flavourd.aliases import (VariantIndex, load_index, make_alias, parse_builtin_modinfo,
                                   parse_modules_alias, wildcard_count)
from vfio_flavourd.pci import make_modalias

from conftest import REAL_MODULES_ALIAS

MLX5_VF = "pci:v000015B3d0000101Esv000015B3sd00000016bc02sc00i00"


def test_only_vfio_pci_lines_count(real_index):
    assert len(real_index) == 14
    assert real_index.modules() == {
        "mlx5_vfio_pci", "hisi_acc_vfio_pci", "pds_vfio_pci", "virtio_vfio_pci",
        "nvgrace_gpu_vfio_pci", "qat_vfio_pci", "vfio_pci"}


def test_wildcard_counts():
    assert wildcard_count("v*d*sv*sd*bc*sc*i*") == 7
    assert wildcard_count("v000015B3d0000101Esv*sd*bc*sc*i*") == 5
    # file2alias's trailing '*' after a specific prog-if is not a field wildcard
    assert wildcard_count("v000015B3d0000101Esv*sd*bc02sc00i00*") == 2
    assert wildcard_count("v000015B3d0000101Esv000015B3sd00000016bc02sc00i00") == 0


def test_matching_ranks_most_specific_first(real_index):
    found = real_index.matching(MLX5_VF)
    assert [(a.module, a.wildcards) for a in found] == [("mlx5_vfio_pci", 5), ("vfio_pci", 7)]
    assert found[0].origin == "modules.alias:6"


def test_matching_is_kept_per_modalias_and_given_as_a_new_list(real_index, monkeypatch):
    from vfio_flavourd import aliases
    first = real_index.matching(MLX5_VF)
    calls = []
    real = aliases.Alias.matches
    monkeypatch.setattr(aliases.Alias, "matches",
                        lambda self, m: (calls.append(m), real(self, m))[1])
    again = real_index.matching(MLX5_VF)
    assert again == first and again is not first and calls == []
    again.clear()                   # the caller's own list
    assert real_index.matching(MLX5_VF) == first
    # Another modalias is matched; past KEEP entries the kept ones go.
    monkeypatch.setattr(real_index, "KEEP", 1)
    assert [a.module for a in real_index.matching(MLX5_VF.lower())] == ["vfio_pci"]
    assert calls and list(real_index._matching) == [MLX5_VF.lower()]


def test_unknown_device_matches_only_the_catch_all(real_index):
    found = real_index.matching("pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00")
    assert [a.module for a in found] == ["vfio_pci"]


def test_matching_is_case_sensitive_like_kmod(real_index):
    assert [a.module for a in real_index.matching(MLX5_VF.lower())] == ["vfio_pci"]


def test_malformed_line_is_a_warning_with_its_line():
    text = "alias vfio_pci:v000015B3d* mlx5_vfio_pci extra\nalias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n"
    aliases, warnings = parse_modules_alias(text, "/lib/modules/6.12/modules.alias")
    assert [a.module for a in aliases] == ["vfio_pci"]
    assert warnings == ["/lib/modules/6.12/modules.alias:1: ignoring malformed alias line: "
                        "'alias vfio_pci:v000015B3d* mlx5_vfio_pci extra'"]


def test_missing_modules_alias_is_a_warning_naming_the_path(tmp_path):
    index = load_index(tmp_path / "lib/modules/6.12.0")
    assert len(index) == 0
    assert index.warnings == [
        f"{tmp_path}/lib/modules/6.12.0/modules.alias: cannot read (No such file or "
        "directory); no vfio variants known, falling back to vfio_pci (run depmod?)"]


def test_builtin_modinfo_adds_aliases(tmp_path):
    d = tmp_path / "lib/modules/6.12.0"
    d.mkdir(parents=True)
    (d / "modules.alias").write_text("alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n")
    (d / "modules.builtin.modinfo").write_bytes(
        b"mlx5_vfio_pci.license=GPL\0mlx5_vfio_pci.alias=vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i*\0")
    index = load_index(d)
    assert [a.module for a in index.matching(MLX5_VF)] == ["mlx5_vfio_pci", "vfio_pci"]


def test_module_names_are_normalised():
    a = make_alias("xe-vfio-pci", "v00008086d*sv*sd*bc*sc*i*", "x:1")
    assert a.module == "xe_vfio_pci"


def test_builtin_parse_skips_other_records():
    assert parse_builtin_modinfo(b"e1000e.alias=pci:v00008086d000010D3sv*sd*bc*sc*i*\0", "m") == []


FIELD_FORMATS = [("v", "%08X"), ("d", "%08X"), ("sv", "%08X"), ("sd", "%08X"),
                 ("bc", "%02X"), ("sc", "%02X"), ("i", "%02X")]


@st.composite
def device_and_aliases(draw):
    ids = draw(st.tuples(*[st.integers(0, 0xFFFF)] * 4, st.integers(0, 0xFFFFFF)))
    modalias = make_modalias(*ids)
    values = [ids[0], ids[1], ids[2], ids[3], ids[4] >> 16, (ids[4] >> 8) & 0xFF, ids[4] & 0xFF]
    aliases = []
    for n in range(draw(st.integers(1, 6))):
        wild = draw(st.lists(st.booleans(), min_size=7, max_size=7))
        # sometimes a field that does not match the device
        wrong = draw(st.sampled_from([None] + list(range(7))))
        parts = []
        for i, ((name, fmt), w) in enumerate(zip(FIELD_FORMATS, wild)):
            if w:
                parts.append(f"{name}*")
            else:
                v = values[i] ^ (1 if i == wrong else 0)
                parts.append(name + fmt % v)
        pattern = "".join(parts)
        if not pattern.endswith("*"):
            pattern += "*"
        aliases.append(make_alias(f"mod{n}", pattern, f"f:{n}"))
    return modalias, aliases


@given(device_and_aliases(), st.randoms())
def test_ranking_properties(case, rnd):
    modalias, aliases = case
    shuffled = list(aliases)
    rnd.shuffle(shuffled)
    found = VariantIndex(aliases).matching(modalias)
    # kmod's semantics: a glob match of "vfio_" + modalias on the whole pattern
    expected = {a for a in aliases if fnmatch.fnmatchcase("vfio_" + modalias, "vfio_pci:" + a.pattern)}
    assert set(found) == expected
    # fewest wildcards first, ties by name, independent of file order
    assert [a.wildcards for a in found] == sorted(a.wildcards for a in found)
    assert found == VariantIndex(shuffled).matching(modalias)
    if found:
        assert found[0].wildcards == min(a.wildcards for a in expected)
