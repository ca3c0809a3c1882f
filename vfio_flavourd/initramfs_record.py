"""Is the running kernel's initramfs holding the rules of today's policy?

The initramfs hooks (initramfs/ in the source tree) record the rules they
put into an image under var/lib/vfio-flavourd/initramfs/RELEASE.rules.
Comparing that record with a fresh compilation tells, without unpacking the
image, whether `update-initramfs -u` (or `dracut -f`) is due.
"""

from __future__ import annotations

from .errors import FlavourdError
from .rules_file import generate, staleness

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
    rel = ctx.root.kernel_release
    record = ctx.root.path(f"{RECORD_DIR}/{rel}.rules")
    try:
        old = record.read_text()
    except FileNotFoundError:
        if not any(ctx.root.path(h).exists() for h in HOOKS):
            return []
        _, compiled = generate(ctx, initramfs=True)
        if not compiled.modules:
            return []
        return [f"the initramfs of kernel {rel} has no vfio-flavourd rules, but the policy "
                f"claims devices there; {ADVICE}"]
    except OSError as e:
        return [f"{record}: cannot read: {e.strerror}"]
    text, _ = generate(ctx, initramfs=True)
    changes = staleness(old, text)
    if not changes:
        return []
    return [f"the initramfs of kernel {rel} holds rules older than the policy "
            f"({'; '.join(changes)}); {ADVICE}"]
