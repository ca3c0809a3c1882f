from vfio_flavourd.migrate.convert import MigratedRule
from vfio_flavourd.migrate.sources import (DriverctlOverride, IdsSetting, Origin, Softdep,
                                           shown)
from vfio_flavourd.migrate.steps import retire_steps, where_on_cmdline
from vfio_flavourd.root import Root

from tiny_sysfs import Tree


def cmdline(option="vfio-pci.ids=10de:1b80"):
    return IdsSetting("cmdline", Origin("/proc/cmdline", 1), option)


def vfio_rule(address):
    return MigratedRule(f"driverctl-{address}", "vfio", {"address": address},
                        [Origin(f"/etc/driverctl.d/pci-{address}", 1)], "", "")


def test_grub_setting_is_found_by_file_and_line(tmp_path):
    t = Tree(tmp_path)
    t.file("etc/default/grub", """\
        GRUB_DEFAULT=0
        #GRUB_CMDLINE_LINUX="vfio-pci.ids=1:2"
        GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on vfio-pci.ids=10de:1b80"
        """)
    root = Root(tmp_path)
    assert where_on_cmdline(root) == ("etc/default/grub", 3)
    assert retire_steps(root, [cmdline()], [], written=False) == [
        "edit /etc/default/grub (line 3): remove vfio-pci.ids=10de:1b80; then run update-grub "
        "(Fedora/RHEL: grubby --update-kernel=ALL --remove-args=\"vfio-pci.ids=10de:1b80\")",
        "reboot, then check: vfio-flavourd status"]


def test_grub_d_and_kernel_cmdline(tmp_path):
    t = Tree(tmp_path)
    t.file("etc/default/grub", "GRUB_DEFAULT=0\n")
    t.file("etc/default/grub.d/vfio.cfg", 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX '
           'vfio_pci.ids=10de:1b80"\n')
    assert where_on_cmdline(Root(tmp_path)) == ("etc/default/grub.d/vfio.cfg", 1)
    t2 = Tree(tmp_path / "b")
    t2.file("etc/kernel/cmdline", "root=/dev/sda1 vfio-pci.ids=10de:1b80\n")
    assert retire_steps(Root(t2.root), [cmdline()], [], written=False)[0] == (
        "edit /etc/kernel/cmdline (line 1): remove vfio-pci.ids=10de:1b80; then reinstall the "
        "boot entries: kernel-install add $(uname -r) /boot/vmlinuz-$(uname -r)")


def test_cmdline_source_unknown(tmp_path):
    Tree(tmp_path)
    assert retire_steps(Root(tmp_path), [cmdline()], [], written=False)[0] == (
        "remove vfio-pci.ids=10de:1b80 from the kernel command line your boot loader passes "
        "(Debian/Ubuntu: GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then update-grub; "
        "Fedora/RHEL: grubby --update-kernel=ALL --remove-args=\"vfio-pci.ids=10de:1b80\")")


def test_driverctl_handover(tmp_path):
    Tree(tmp_path)
    sources = [DriverctlOverride(Origin("/etc/driverctl.d/pci-0000:3b:00.2", 1),
                                 "0000:3b:00.2", "vfio-pci"),
               DriverctlOverride(Origin("/etc/driverctl.d/pci-0000:03:00.1", 1),
                                 "0000:03:00.1", "ixgbe")]
    rules = [vfio_rule("0000:3b:00.2"),
             MigratedRule("driverctl-0000:03:00.1", "host", {"address": "0000:03:00.1"},
                          [], "", "")]
    assert retire_steps(Root(tmp_path), sources, rules, written=False) == [
        "vfio-flavourd migrate --write   # puts this policy in "
        "/etc/vfio-flavourd/policy.d/50-migrated.yaml",
        "vfio-flavourd check-config && vfio-flavourd plan   # see what it will do",
        "driverctl --noprobe unset-override 0000:3b:00.2   # forgets the override and unbinds "
        "the device: shut down any VM using it first",
        "vfio-flavourd apply 0000:3b:00.2   # binds them to their best VFIO driver now"]
    assert retire_steps(Root(tmp_path), sources, rules, written=True)[0].startswith(
        "vfio-flavourd check-config")


def test_modprobe_lines_grouped_by_file_then_initramfs(tmp_path):
    Tree(tmp_path)
    etc, vendor = "/etc/modprobe.d/vfio.conf", "/usr/lib/modprobe.d/gpu.conf"
    sources = [
        IdsSetting("modprobe", Origin(etc, 2), "ids=10de:1b80",
                   "options vfio_pci ids=10de:1b80 disable_vga=1", (), ("disable_vga=1",)),
        Softdep(Origin(etc, 3), "nouveau", "softdep nouveau pre: vfio-pci"),
        IdsSetting("modprobe", Origin(vendor, 4, 5), "ids=8086:10fb",
                   "options vfio-pci ids=8086:10fb"),
    ]
    assert retire_steps(Root(tmp_path), sources, [], written=False) == [
        f"edit {etc}: on line 2, remove ids=10de:1b80 and keep disable_vga=1; delete line 3 "
        "(softdep nouveau pre: vfio-pci)",
        f"{vendor} belongs to a package or is generated: hide it with an edited copy: "
        f"cp {vendor} /etc/modprobe.d/gpu.conf; then edit /etc/modprobe.d/gpu.conf: delete "
        "lines 4-5 (options vfio-pci ids=8086:10fb)",
        "update-initramfs -u -k all   # the initramfs keeps its own copy of modprobe.d "
        "(Fedora/RHEL: dracut -f --regenerate-all)",
        "reboot, then check: vfio-flavourd status"]


def test_nothing_to_retire(tmp_path):
    assert retire_steps(Root(tmp_path), [], [], written=False) == []
    assert shown("etc/x") == "/etc/x"
