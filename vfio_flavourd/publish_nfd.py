"""A feature file for Node Feature Discovery's local source.

NFD's rules (docs/usage/customization-guide.md, "Local feature source",
node-feature-discovery): one `<namespace>/<name>[=<value>]` a line, `#`
starts a comment, a file over 64 kB is ignored whole, dot-files are
skipped (so we write `.vfio-flavourd` and rename it).  The names become
node labels, so Kubernetes' label syntax applies: a DNS-subdomain prefix,
a name of at most 63 characters `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`,
a value of at most 63 of the same, or empty.  `kubernetes.io` namespaces
are denied; ours is vfio-flavourd.io.
"""

from __future__ import annotations

import collections
import re

from .migration import implements_migration

NAMESPACE = "vfio-flavourd.io"
DEFAULT_PATH = "/etc/kubernetes/node-feature-discovery/features.d/vfio-flavourd"
MAX_FILE = 64 * 1024
MAX_NAME = 63
MAX_VALUE = 63
MAX_PREFIX = 253
_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def label_problem(line: str) -> str | None:
    """Why a `name=value` line breaks NFD's or Kubernetes' label rules, or None."""
    key, _, value = line.partition("=")
    prefix, slash, name = key.rpartition("/")
    if not slash:
        return "no namespace: NFD wants <namespace>/<name>"
    if len(prefix) > MAX_PREFIX or not all(_DNS_LABEL_RE.match(p) for p in prefix.split(".")):
        return f"namespace {prefix!r} is not a DNS subdomain"
    if prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io"):
        if not (prefix == "feature.node.kubernetes.io" or prefix.endswith(".feature.node.kubernetes.io")
                or prefix == "profile.node.kubernetes.io" or prefix.endswith(".profile.node.kubernetes.io")):
            return f"namespace {prefix!r} is denied by NFD"
    if len(name) > MAX_NAME or not _NAME_RE.match(name):
        return f"name {name!r} is not a label name (at most {MAX_NAME} of [-A-Za-z0-9_.], " \
               "alphanumeric at both ends)"
    if value and (len(value) > MAX_VALUE or not _NAME_RE.match(value)):
        return f"value {value!r} is not a label value"
    return None


def _part(text: str) -> str:
    """A driver or module name as a piece of a label name: kernel names are
    [A-Za-z0-9_-] already, anything else becomes '_'."""
    return re.sub(r"[^-A-Za-z0-9_.]", "_", text)


def lines(facts) -> list:
    out = [f"{NAMESPACE}/variant.{_part(m)}=true" for m in facts.variant_modules]
    bound = collections.Counter((d.driver, d.vendor, d.device) for d in facts.devices)
    for (driver, vendor, device), n in sorted(bound.items()):
        out.append(f"{NAMESPACE}/bound.{_part(driver)}.{vendor:04x}-{device:04x}={n}")
    migratable = sorted({d.driver for d in facts.devices
                         if implements_migration(d.module or d.driver, facts.kernel_release)})
    out.append(f"{NAMESPACE}/live-migration-driver={'true' if migratable else 'false'}")
    return out


def render(facts, warn=None) -> str:
    """The file.  A line that would break the rules is left out (and
    reported through `warn`) rather than making NFD drop the whole file."""
    header = (f"# Written by vfio-flavourd {facts.version}; rewritten on every change, "
              "do not edit.\n")
    text = header
    for line in lines(facts):
        problem = label_problem(line)
        if problem:
            if warn:
                warn(f"NFD feature {line!r} left out: {problem}")
            continue
        if len(text) + len(line) + 1 > MAX_FILE:
            if warn:
                warn(f"NFD feature file would pass {MAX_FILE} bytes; later features left out")
            break
        text += line + "\n"
    return text
