"""The steps that retire the old configuration once the policy is in place.

Commands are spelled for Debian/Ubuntu first, with the Fedora/RHEL
equivalent beside them.  Nothing here runs them: a person does, after
reading `vfio-flavourd plan`.
"""

from __future__ import annotations

import re

from ..safeio import read_text
from .sources import MIGRATED_FILE, DriverctlOverride, IdsSetting, shown
_CMDLINE_PARAM_RE = re.compile(r"(^|[\s\"'])vfio[-_]pci\.ids=")


def where_on_cmdline(root):
    """(path, line) of the boot loader setting that puts vfio-pci.ids= on
    the kernel command line, or None when none of the usual files has it."""
    grub_d = root.path("etc/default/grub.d")
    extra = sorted(f"etc/default/grub.d/{p.name}" for p in grub_d.glob("*.cfg")) \
        if grub_d.is_dir() else []
    for rel in ["etc/default/grub", *extra, "etc/kernel/cmdline"]:
        try:
            text = read_text(root.path(rel), errors="replace")
        except OSError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if not line.lstrip().startswith("#") and _CMDLINE_PARAM_RE.search(line):
                return rel, n
    return None


def _cmdline_step(root, s: IdsSetting) -> str:
    grubby = f"grubby --update-kernel=ALL --remove-args=\"{s.option}\""
    found = where_on_cmdline(root)
    if found is None:
        return (f"remove {s.option} from the kernel command line your boot loader passes "
                "(Debian/Ubuntu: GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then "
                f"update-grub; Fedora/RHEL: {grubby})")
    rel, n = found
    if rel == "etc/kernel/cmdline":
        return (f"edit {shown(rel)} (line {n}): remove {s.option}; then reinstall the boot "
                "entries: kernel-install add $(uname -r) /boot/vmlinuz-$(uname -r)")
    return (f"edit {shown(rel)} (line {n}): remove {s.option}; then run update-grub "
            f"(Fedora/RHEL: {grubby})")


def _modprobe_steps(sources) -> list:
    """One step per modprobe.d file, naming each line to change."""
    by_file: dict = {}
    for s in sources:
        if s.kind not in ("modprobe", "softdep"):
            continue
        parts = by_file.setdefault(s.origin.path, {})
        if s.kind == "modprobe" and s.other_options:
            ids = " ".join(o.option for o in sources
                           if o.kind == "modprobe" and o.origin == s.origin)
            parts[s.origin.line] = (f"on {s.origin.lines}, remove {ids} and keep "
                                    + " ".join(s.other_options))
        else:
            parts[s.origin.line] = f"delete {s.origin.lines} ({s.text})"
    steps = []
    for path, parts in by_file.items():
        todo = "; ".join(parts[n] for n in sorted(parts))
        if path.startswith("/etc/"):
            steps.append(f"edit {path}: {todo}")
        else:
            name = path.rsplit("/", 1)[1]
            # modprobe.d(5): a file in /etc/modprobe.d hides the same name in
            # the vendor directories, so a package update cannot undo this.
            steps.append(f"{path} belongs to a package or is generated: hide it with an "
                         f"edited copy: cp {path} /etc/modprobe.d/{name}; then edit "
                         f"/etc/modprobe.d/{name}: {todo}")
    return steps


def retire_steps(root, sources, rules, written: bool) -> list:
    steps = []
    if not rules and not sources:
        return steps
    if rules and not written:
        steps.append("vfio-flavourd migrate --write   # puts this policy in "
                     + shown(MIGRATED_FILE))
    if rules:
        steps.append("vfio-flavourd check-config && vfio-flavourd plan   # see what it will do")
    vfio_addrs = {r.match["address"] for r in rules
                  if r.flavour == "vfio" and r.name.startswith("driverctl-")}
    handed = [s.address for s in sources
              if isinstance(s, DriverctlOverride) and s.address in vfio_addrs]
    for a in handed:
        steps.append(f"driverctl --noprobe unset-override {a}   # forgets the override and "
                     "unbinds the device: shut down any VM using it first")
    if handed:
        steps.append("vfio-flavourd apply " + " ".join(handed)
                     + "   # binds them to their best VFIO driver now")
    reboot = False
    for s in sources:
        if isinstance(s, IdsSetting) and s.kind == "cmdline":
            steps.append(_cmdline_step(root, s))
            reboot = True
    modprobe = _modprobe_steps(sources)
    if modprobe:
        steps.extend(modprobe)
        steps.append("update-initramfs -u -k all   # the initramfs keeps its own copy of "
                     "modprobe.d (Fedora/RHEL: dracut -f --regenerate-all)")
        reboot = True
    if reboot:
        steps.append("reboot, then check: vfio-flavourd status")
    return steps

