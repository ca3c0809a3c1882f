"""The systemd unit and the udev rule as shipped."""

import pathlib
import re
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd/vfio-flavourd.service"
RULE = REPO / "udev-rules/70-vfio-flavourd.rules"
RULES_UNIT = REPO / "systemd/vfio-flavourd-rules.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit", [UNIT, RULES_UNIT], ids=lambda u: u.name)
def test_unit_verifies_clean(tmp_path, unit):
    # verify checks that ExecStart's program exists: point it at one that does.
    text = unit.read_text().replace("/usr/sbin/vfio-flavourd", "/bin/true")
    copy = tmp_path / unit.name
    copy.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_unit_shape():
    text = UNIT.read_text()
    assert "Type=notify" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert re.search(r"^Before=.*libvirtd\.service.*virtqemud\.service", text, re.M)
    # the job needs modules and sysfs: these must not be switched on
    for forbidden in ("ProtectKernelModules=yes", "ProtectKernelTunables=yes",
                      "PrivateDevices=yes"):
        assert forbidden not in text
    assert "RestrictAddressFamilies=AF_UNIX AF_NETLINK" in text
    assert "NoNewPrivileges=yes" in text


def test_rule_sorts_before_80_drivers_and_only_imports():
    assert RULE.name < "80-drivers.rules"
    text = RULE.read_text()
    lines = [l for l in text.splitlines() if l and not l.startswith("#")]
    assert 'IMPORT{program}="/usr/libexec/vfio-flavourd/vfio-flavourd-udev %k"' in lines
    assert ('ENV{VFIO_FLAVOURD_DRIVER}=="?*", '
            'ATTR{driver_override}="$env{VFIO_FLAVOURD_DRIVER}"') in lines
    assert not any("RUN" in l for l in lines)    # no long work in RUN
    assert any('ENV{SYSTEMD_WANTS}+="vfio-flavourd.service"' in l for l in lines)


def test_rules_unit_writes_before_udev_reads():
    """The native rules must be in /run before udevd loads its rules and
    before coldplug, and the unit must not wait for local-fs.target (whose
    disks coldplug announces)."""
    text = RULES_UNIT.read_text()
    assert "DefaultDependencies=no" in text
    assert re.search(r"^Before=.*systemd-udevd\.service.*systemd-udev-trigger\.service", text,
                     re.M)
    assert not re.search(r"^(After|Requires|Wants)=.*local-fs", text, re.M)
    assert ("ExecStart=/usr/sbin/vfio-flavourd generate-rules --output "
            "/run/udev/rules.d/70-vfio-flavourd.rules") in text
    assert "ReloadPropagatedFrom=vfio-flavourd.service" in text
    assert RULE.name == "70-vfio-flavourd.rules"     # the name it replaces


def test_journald_reads_the_priority_prefixes():
    # Without systemd-python and journald's socket, the daemon's stderr lines
    # carry "<N>" prefixes (log.py); SyslogLevelPrefix=no would print them.
    assert "SyslogLevelPrefix" not in UNIT.read_text()
