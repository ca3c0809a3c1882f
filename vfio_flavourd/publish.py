"""Where the fleet files go, and writing them all from one set of facts.
Shared by `daemon` (after every change) and `publish` (once).

Each option also reads an environment variable, so the unit's
EnvironmentFile (/etc/default/vfio-flavourd) can turn publishing on
without a drop-in that rewrites ExecStart."""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

from . import publish_cdi, publish_nfd, publish_prom
from .errors import UsageError
from .publish_files import write_atomic

# Seconds between rewrites of the health file when nothing else happens.
HEARTBEAT = 10.0

ENV = {
    "prometheus_textfile": "VFIO_FLAVOURD_PROMETHEUS_TEXTFILE",
    "nfd_features": "VFIO_FLAVOURD_NFD_FEATURES",
    "cdi_spec": "VFIO_FLAVOURD_CDI_SPEC",
    "cdi_interface": "VFIO_FLAVOURD_CDI_INTERFACE",
    "health_file": "VFIO_FLAVOURD_HEALTH_FILE",
}


class Targets(NamedTuple):
    prometheus_textfile: Optional[str] = None
    nfd_features: Optional[str] = None
    cdi_spec: Optional[str] = None
    cdi_interface: str = "group"
    health_file: Optional[str] = None

    @property
    def any(self) -> bool:
        return bool(self.prometheus_textfile or self.nfd_features or self.cdi_spec
                    or self.health_file)


def add_options(p, optional_paths: bool) -> None:
    """`optional_paths`: --nfd-features and --cdi-spec may be given without
    a path, meaning their default (for `publish`)."""
    extra = dict(nargs="?", const=True) if optional_paths else {}
    p.add_argument("--prometheus-textfile", metavar="FILE", default=None,
                   help="write Prometheus metrics here, for node_exporter's textfile "
                        "collector (e.g. /var/lib/prometheus/node-exporter/vfio-flavourd.prom; "
                        f"env {ENV['prometheus_textfile']})")
    p.add_argument("--nfd-features", metavar="FILE", default=None, **extra,
                   help="write a Node Feature Discovery feature file here (default "
                        f"{publish_nfd.DEFAULT_PATH}; env {ENV['nfd_features']})")
    p.add_argument("--cdi-spec", metavar="FILE", default=None, **extra,
                   help=f"write a CDI spec here (default {publish_cdi.DEFAULT_PATH}; "
                        f"env {ENV['cdi_spec']})")
    p.add_argument("--cdi-interface", choices=publish_cdi.INTERFACES, default=None,
                   help="VFIO device nodes the CDI spec gives a container: the group "
                        "(/dev/vfio/N, default) or the iommufd cdev (/dev/vfio/devices/vfioX); "
                        f"env {ENV['cdi_interface']}")
    if not optional_paths:
        p.add_argument("--health-file", metavar="FILE", default=None,
                       help="write this file after coldplug and every "
                            f"{HEARTBEAT:.0f} s while the daemon works, for `vfio-flavourd "
                            f"health` (a container's probes); env {ENV['health_file']}")


def targets_from(args, environ=None) -> Targets:
    env = os.environ if environ is None else environ
    values = {}
    for field, var in ENV.items():
        v = getattr(args, field, None)
        if v is None:
            v = env.get(var) or None
        values[field] = v
    if values["nfd_features"] is True:
        values["nfd_features"] = publish_nfd.DEFAULT_PATH
    if values["cdi_spec"] is True:
        values["cdi_spec"] = publish_cdi.DEFAULT_PATH
    interface = values.pop("cdi_interface") or "group"
    if interface not in publish_cdi.INTERFACES:
        raise UsageError(f"{ENV['cdi_interface']}={interface!r}: expected one of "
                         + ", ".join(publish_cdi.INTERFACES))
    return Targets(cdi_interface=interface, **values)


def write_files(targets: Targets, facts, daemon_metrics=None, uevents=None, warn=None) -> int:
    """Every file asked for; returns how many were written."""
    n = 0
    if targets.prometheus_textfile:
        write_atomic(targets.prometheus_textfile,
                     publish_prom.render(facts, daemon_metrics, uevents))
        n += 1
    if targets.nfd_features:
        write_atomic(targets.nfd_features, publish_nfd.render(facts, warn=warn))
        n += 1
    if targets.cdi_spec:
        write_atomic(targets.cdi_spec, publish_cdi.render(facts, targets.cdi_interface))
        n += 1
    return n
