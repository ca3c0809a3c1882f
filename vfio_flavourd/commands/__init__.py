"""One module per command, named for the command ('-' read as '_'), with
`add_arguments(parser)` and `run(ctx, args) -> int`.

COMMANDS gives each command's one-line help, so that the parser can list
every command while importing only the one that runs: a command's module
pulls in what it needs (the binder, YAML, migrate/, pyudev), and a one-shot
command should not pay for the others'.  Adding a command is one module and
one line here.
"""

from __future__ import annotations

COMMANDS = {
    "plan": "show what the policy would do to every PCI device",
    "explain": "show every rule tried and every candidate module for one device",
    "apply": "load modules and bind devices as the policy says",
    "release": "give devices back to their host drivers and forget them",
    "status": "show the devices vfio-flavourd manages and whether their groups are viable",
    "daemon": "apply the policy to every device, then to each device that appears",
    "variants": "list the vfio_pci aliases in this kernel's modules.alias",
    "check-config": "validate policy files (the whole search path when none are given)",
    "migrate": "turn driverctl, vfio-pci.ids= and modprobe.d settings into a policy",
    "publish": "write Prometheus metrics, a Node Feature Discovery feature file and a CDI "
               "spec for the devices vfio-flavourd holds, once",
    "health": "exit 0 when the daemon's health file is fresh (for container probes)",
    "generate-rules": "compile the policy into native udev rules (no program runs at a PCI "
                      "add event)",
}


def load(name: str):
    """The module of command `name` ("check-config" is commands/check_config.py)."""
    import sys
    full = f"{__name__}.{name.replace('-', '_')}"
    __import__(full)
    return sys.modules[full]


def add_timeout_argument(p) -> None:
    p.add_argument("--unbind-timeout", metavar="SECONDS", type=_seconds, default=None,
                   help="how long an unbind or probe may take before the device is "
                        "reported stuck; overrides the rules' unbind_timeout (default: "
                        "the rule's, else 60)")


def _seconds(text: str) -> float:
    import argparse
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"expected seconds (more than 0, at most 86400), "
                                         f"found {text!r}")
    return value
