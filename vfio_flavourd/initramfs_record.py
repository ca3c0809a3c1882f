"""Is the running kernel's initramfs holding the rules of today's policy?

The initramfs hooks (initramfs/ in the source tree) record the rules they
put into an image under var/lib/vfio-flavourd/initramfs/RELEASE.rules.
Comparing that record with a fresh compilation tells, without unpacking the
image, whether `update-initramfs -u` (or `dracut -f`) is due.
"""

from __future__ import annotations

import os

from .errors import FlavourdError

RECORD_DIR = "var/lib/vfio-flavourd/initramfs"
HOOKS = ("usr/share/initramfs-tools/hooks/vfio-flavourd",
         "usr/lib/dracut/modules.d/90vfio-flavourd/module-setup.sh")
ADVICE = "run update-initramfs -u (or dracut -f) so that boot follows today's policy"


def warnings(ctx) -> list:
    """Sentences for check-config and status; empty when all is well, when
    no initramfs hook is installed, or when the policy does not load (the
    commands report that themselves)."""
    try:
        return _warnings(ctx)
    except FlavourdError:
        return []


def _warnings(ctx) -> list:
    from .safeio import read_text
    rel = ctx.root.kernel_release
    record = ctx.root.fspath(f"{RECORD_DIR}/{rel}.rules")
    try:
        # safeio: a FIFO planted as the record must not hang `status`.
        old = read_text(record, errors="replace")
    except FileNotFoundError:
        # No hook installed, the usual case on a host without initramfs
        # tools: nothing to compare, and nothing compiled (`status` stays
        # a one-shot command).
        if not any(os.path.exists(ctx.root.fspath(h)) for h in HOOKS):
            return []
        from .rules_file import generate
        _, compiled = generate(ctx, initramfs=True)
        if not compiled.modules:
            return []
        return [f"the initramfs of kernel {rel} has no vfio-flavourd rules, but the policy "
                f"claims devices there; {ADVICE}"]
    except OSError as e:
        return [f"{record}: cannot read: {e.strerror or e}"]
    from .rules_file import generate, staleness
    text, _ = generate(ctx, initramfs=True)
    changes = staleness(old, text)
    if not changes:
        return []
    return [f"the initramfs of kernel {rel} holds rules older than the policy "
            f"({'; '.join(changes)}); {ADVICE}"]
