import os
import textwrap

from vfio_flavourd.migrate.sources import (Found, logical_lines, read_all, read_cmdline,
                                           read_driverctl, read_modprobe, split_args)
from vfio_flavourd.root import Root


def put(root, rel, text):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(textwrap.dedent(text))
    return p


def read(tmp_path, reader) -> Found:
    found = Found()
    reader(Root(tmp_path), found)
    return found


def texts(items):
    return [str(i) for i in items]


# -- driverctl ---------------------------------------------------------------------

def test_driverctl_overrides_are_read_as_driver_names(tmp_path):
    put(tmp_path, "etc/driverctl.d/pci-0000:3b:00.2", "vfio-pci\n")
    put(tmp_path, "etc/driverctl.d/pci-0000:3b:00.3", "mlx5_vfio_pci")
    found = read(tmp_path, read_driverctl)
    assert [(s.kind, str(s.origin), s.address, s.driver) for s in found.sources] == [
        ("driverctl", "/etc/driverctl.d/pci-0000:3b:00.2:1", "0000:3b:00.2", "vfio-pci"),
        ("driverctl", "/etc/driverctl.d/pci-0000:3b:00.3:1", "0000:3b:00.3", "mlx5_vfio_pci")]
    assert found.problems == [] and found.notes == []


def test_driverctl_bad_files_are_reported_one_by_one(tmp_path):
    d = "etc/driverctl.d"
    put(tmp_path, f"{d}/pci-0000:01:00.0", "\n")
    put(tmp_path, f"{d}/pci-0000:01:00.1", "vfio-pci\nixgbe\n")
    put(tmp_path, f"{d}/pci-0000:01:00.2", "vfio pci\n")
    put(tmp_path, f"{d}/pci-0000:01:00.3", b"\xff\xfe\n")
    (tmp_path / d / "pci-0000:01:00.4").mkdir()
    put(tmp_path, f"{d}/pci-3b:00.5", "vfio-pci\n")
    put(tmp_path, f"{d}/pci-0000:01:00.6", "vfio-pci\n")
    found = read(tmp_path, read_driverctl)
    p = "/etc/driverctl.d/pci-"
    assert texts(found.problems) == [
        f"{p}0000:01:00.0:1: empty: driverctl does not load an empty override; skipped",
        f"{p}0000:01:00.1:1: expected one driver name, found 2 lines; skipped",
        f"{p}0000:01:00.2:1: 'vfio pci' is not a driver name; skipped",
        f"{p}0000:01:00.3: not UTF-8 text; skipped",
        f"{p}0000:01:00.4: cannot read: a directory, not a regular file; skipped",
        f"{p}3b:00.5:1: '3b:00.5' is not a PCI address (DOMAIN:BUS:SLOT.FUNCTION, "
        "lower-case); skipped"]
    assert [s.address for s in found.sources] == ["0000:01:00.6"]


def test_driverctl_other_buses_and_stray_files_are_notes(tmp_path):
    put(tmp_path, "etc/driverctl.d/platform-vfio-dev.0", "vfio-platform\n")
    put(tmp_path, "etc/driverctl.d/README", "notes\n")
    found = read(tmp_path, read_driverctl)
    assert found.sources == [] and found.problems == []
    assert texts(found.notes) == [
        "/etc/driverctl.d/README: not a driverctl override (BUS-DEVICE); ignored",
        "/etc/driverctl.d/platform-vfio-dev.0: an override on bus 'platform': vfio-flavourd "
        "handles PCI devices only; left to driverctl"]


def test_no_driverctl_dir_is_nothing(tmp_path):
    assert read(tmp_path, read_driverctl) == Found()


# -- the kernel command line -------------------------------------------------------

def test_split_args_like_the_kernel():
    assert split_args('ro quiet "vfio-pci.ids=10de:1b80,10de:10f0" a="b c" -- vfio-pci.ids=1:2') \
        == ["ro", "quiet", "vfio-pci.ids=10de:1b80,10de:10f0", "a=b c"]
    assert split_args("  x=\"\"  y ") == ["x=", "y"]


def test_cmdline_ids_in_both_spellings(tmp_path):
    put(tmp_path, "proc/cmdline",
        "BOOT_IMAGE=/vmlinuz ro vfio-pci.ids=10de:1b80,10de:10f0 vfio_pci.ids=8086:10fb "
        "vfio_pci.disable_vga=1\n")
    found = read(tmp_path, read_cmdline)
    assert [(s.kind, str(s.origin), s.option, [i.text for i in s.ids]) for s in found.sources] == [
        ("cmdline", "/proc/cmdline:1", "vfio-pci.ids=10de:1b80,10de:10f0",
         ["10de:1b80", "10de:10f0"]),
        ("cmdline", "/proc/cmdline:1", "vfio_pci.ids=8086:10fb", ["8086:10fb"])]


def test_cmdline_bad_ids_are_problems_and_the_rest_is_kept(tmp_path):
    put(tmp_path, "proc/cmdline", "ro vfio-pci.ids=zzzz:1,10de:1b80 vfio-pci.ids=\n")
    found = read(tmp_path, read_cmdline)
    assert texts(found.problems) == [
        "/proc/cmdline:1: vfio-pci.ids: 'zzzz:1': vendor 'zzzz' is not a hex number; skipped"]
    assert texts(found.notes) == ["/proc/cmdline:1: vfio-pci.ids=: empty value, no ids"]
    assert [[i.text for i in s.ids] for s in found.sources] == [["10de:1b80"], []]


def test_no_cmdline_is_nothing(tmp_path):
    assert read(tmp_path, read_cmdline) == Found()


# -- modprobe.d --------------------------------------------------------------------

def test_logical_lines_join_continuations():
    assert list(logical_lines("a \\\n  b\nc\n\\\n")) == [(1, 2, "a b"), (3, 3, "c"), (4, 4, "")]


def test_options_and_softdeps(tmp_path):
    put(tmp_path, "etc/modprobe.d/vfio.conf", """\
        # GPU passthrough
        options vfio_pci ids=10de:1b80,10de:10f0 disable_vga=1
        softdep nouveau pre: vfio-pci
        softdep snd_hda_intel pre: vfio vfio_pci post: foo
        softdep drm post: vfio-pci
        options vfio-pci disable_idle_d3=1
        options kvm ignore_msrs=1
        """)
    found = read(tmp_path, read_modprobe)
    assert found.problems == [] and found.notes == []
    p = "/etc/modprobe.d/vfio.conf"
    assert [(s.kind, str(s.origin)) for s in found.sources] == [
        ("modprobe", f"{p}:2"), ("softdep", f"{p}:3"), ("softdep", f"{p}:4")]
    opts = found.sources[0]
    assert (opts.option, opts.other_options) == ("ids=10de:1b80,10de:10f0", ("disable_vga=1",))
    assert [s.module for s in found.sources[1:]] == ["nouveau", "snd_hda_intel"]


def test_continued_options_line_and_bad_entries(tmp_path):
    put(tmp_path, "etc/modprobe.d/vfio.conf", "options vfio-pci \\\n  ids=8086:10fb,10de:xyz\n")
    found = read(tmp_path, read_modprobe)
    assert texts(found.problems) == [
        "/etc/modprobe.d/vfio.conf:1: ids: '10de:xyz': device 'xyz' is not a hex number; skipped"]
    (s,) = found.sources
    assert (s.origin.lines, s.text, [i.text for i in s.ids]) == (
        "lines 1-2", "options vfio-pci ids=8086:10fb,10de:xyz", ["8086:10fb"])


def test_install_command_is_a_note(tmp_path):
    put(tmp_path, "etc/modprobe.d/vfio.conf",
        "install vfio-pci /usr/local/sbin/vfio-override.sh; modprobe --ignore-install vfio-pci\n")
    found = read(tmp_path, read_modprobe)
    assert found.sources == []
    assert texts(found.notes) == [
        "/etc/modprobe.d/vfio.conf:1: 'install vfio-pci /usr/local/sbin/vfio-override.sh; "
        "modprobe --ignore-install vfio-pci' runs a command of its own when vfio-pci loads; "
        "vfio-flavourd cannot translate it: read it, and write rules for the devices it "
        "claims (match: address) by hand"]


def test_etc_hides_the_vendor_file_of_the_same_name(tmp_path):
    put(tmp_path, "usr/lib/modprobe.d/vfio.conf", "options vfio-pci ids=1af4:1041\n")
    put(tmp_path, "etc/modprobe.d/vfio.conf", "options vfio-pci ids=8086:10fb\n")
    put(tmp_path, "lib/modprobe.d/other.conf", "softdep nouveau pre: vfio-pci\n")
    put(tmp_path, "lib/modprobe.d/ignored.txt", "options vfio-pci ids=1:2\n")
    found = read(tmp_path, read_modprobe)
    assert [str(s.origin) for s in found.sources] == [
        "/lib/modprobe.d/other.conf:1", "/etc/modprobe.d/vfio.conf:1"]
    assert texts(found.notes) == [
        "/usr/lib/modprobe.d/vfio.conf: hidden by /etc/modprobe.d/vfio.conf, so modprobe "
        "does not read it; its vfio-pci settings are not in effect and were not migrated"]


def test_merged_usr_is_read_once(tmp_path):
    put(tmp_path, "usr/lib/modprobe.d/vfio.conf", "options vfio-pci ids=8086:10fb\n")
    os.symlink("usr/lib", tmp_path / "lib")
    found = read(tmp_path, read_modprobe)
    assert [str(s.origin) for s in found.sources] == ["/usr/lib/modprobe.d/vfio.conf:1"]
    assert found.notes == []


def test_unreadable_conf_is_a_problem(tmp_path):
    (tmp_path / "etc/modprobe.d/broken.conf").mkdir(parents=True)
    put(tmp_path, "etc/modprobe.d/vfio.conf", "options vfio-pci ids=8086:10fb\n")
    found = read(tmp_path, read_modprobe)
    assert texts(found.problems) == [
        "/etc/modprobe.d/broken.conf: cannot read: a directory, not a regular file; skipped"]
    assert len(found.sources) == 1


def test_read_all_in_order(tmp_path):
    put(tmp_path, "etc/modprobe.d/vfio.conf", "options vfio-pci ids=8086:10fb\n")
    put(tmp_path, "proc/cmdline", "vfio-pci.ids=10de:1b80\n")
    put(tmp_path, "etc/driverctl.d/pci-0000:3b:00.2", "vfio-pci\n")
    assert [s.kind for s in read_all(Root(tmp_path)).sources] == [
        "driverctl", "cmdline", "modprobe"]
