import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from vfio_flavourd import publish_prom
from vfio_flavourd.publish import Targets, targets_from
from vfio_flavourd.publish_facts import Facts, HeldDevice

from fleet_host import EXAMPLE, PublishingDaemon, virt_server

REQUIRE = os.environ.get("VFIO_FLAVOURD_REQUIRE_FLEET_TOOLS") == "1"
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
PROMTOOL = shutil.which("promtool")


def need(tool, name):
    if tool is None:
        if REQUIRE:
            pytest.fail(f"{name} is missing: scripts/install-fleet-test-deps installs it")
        pytest.skip(f"{name} not installed (scripts/install-fleet-test-deps)")
    return tool


SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text, prefix="vfio_flavourd_"):
    """{(name, frozenset(labels)): value} for every sample line of `prefix`."""
    out = {}
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(LABEL_RE.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def promtool_check(text):
    r = subprocess.run([need(PROMTOOL, "promtool"), "check", "metrics"], input=text,
                       capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        r.stdout + r.stderr


def facts(devices=(), **kw):
    base = dict(version="0.1.0", kernel_release="6.12.0", variant_modules=("mlx5_vfio_pci",),
                devices=tuple(devices), groups_not_viable=0)
    base.update(kw)
    return Facts(**base)


def held(address, rule="r", driver="vfio-pci", module="vfio_pci", group="7"):
    return HeldDevice(address, 0x8086, 0x10d3, driver, module, rule, group, None)


# -- the format ------------------------------------------------------------------------


def test_label_values_are_escaped():
    text = publish_prom.render(facts([held("0000:01:00.0", rule='a "q" \\ b\nc')]))
    assert ('vfio_flavourd_managed_devices{driver="vfio-pci",module="vfio_pci",'
            'rule="a \\"q\\" \\\\ b\\nc"} 1') in text.splitlines()
    promtool_check(text)


def test_every_family_has_help_and_type_and_no_timestamps():
    m = publish_prom.DaemonMetrics()
    m.outcome("bound", "bind", 0.003)
    m.outcome("failed", "bind", 7.0)
    m.outcome("kept", "keep", 0.001)
    m.outcome("skipped", "none", 0.001)
    m.outcome("dry-run", "bind", 0.001)
    m.policy_loaded(True, reload=False)
    m.policy_loaded(False)
    text = publish_prom.render(facts([held("0000:01:00.0")], groups_not_viable=2),
                               m.snapshot(), uevents=12)
    promtool_check(text)
    lines = text.splitlines()
    names = {SAMPLE_RE.match(l).group(1) for l in lines if not l.startswith("#")}
    for name in names:
        family = re.sub(r"_(bucket|sum|count)$", "", name) \
            if name.startswith("vfio_flavourd_bind_duration_seconds") else name
        assert f"# TYPE {family} " in text and f"# HELP {family} " in text, family
    for line in lines:
        if not line.startswith("#"):
            assert len(line.rsplit(" ", 1)) == 2 and "}" not in line.rsplit(" ", 1)[1]
    s = samples(text)
    assert s[("vfio_flavourd_bind_outcomes_total", frozenset({("result", "bound")}))] == 1
    assert s[("vfio_flavourd_bind_outcomes_total", frozenset({("result", "stuck")}))] == 0
    assert s[("vfio_flavourd_bind_outcomes_total", frozenset({("result", "rolled_back")}))] == 0
    assert s[("vfio_flavourd_bind_outcomes_total", frozenset({("result", "dry_run")}))] == 1
    assert ("vfio_flavourd_bind_outcomes_total", frozenset({("result", "skipped")})) not in s
    # Three binds (bound 3 ms, failed 7 s, dry-run 1 ms); keep is not a bind.
    assert s[("vfio_flavourd_bind_duration_seconds_count", frozenset())] == 3
    assert s[("vfio_flavourd_bind_duration_seconds_bucket", frozenset({("le", "0.005")}))] == 2
    assert s[("vfio_flavourd_bind_duration_seconds_bucket", frozenset({("le", "5")}))] == 2
    assert s[("vfio_flavourd_bind_duration_seconds_bucket", frozenset({("le", "10")}))] == 3
    assert s[("vfio_flavourd_bind_duration_seconds_bucket", frozenset({("le", "+Inf")}))] == 3
    assert s[("vfio_flavourd_policy_reloads_total", frozenset({("result", "failed")}))] == 1
    assert s[("vfio_flavourd_policy_reloads_total", frozenset({("result", "ok")}))] == 0
    assert s[("vfio_flavourd_iommu_groups_not_viable", frozenset())] == 2
    assert s[("vfio_flavourd_uevents_handled_total", frozenset())] == 12
    assert abs(s[("vfio_flavourd_policy_last_load_timestamp_seconds", frozenset())]
               - time.time()) < 60


def test_one_shot_has_no_counters():
    text = publish_prom.render(facts())
    promtool_check(text)
    assert "_total" not in text and "histogram" not in text
    assert 'vfio_flavourd_info{version="0.1.0",kernel_release="6.12.0"} 1' in text


def test_options_come_from_the_environment_file():
    class Args:
        prometheus_textfile = None
        nfd_features = None
        cdi_spec = None
        cdi_interface = None
    t = targets_from(Args(), {"VFIO_FLAVOURD_PROMETHEUS_TEXTFILE": "/x/vfio.prom",
                              "VFIO_FLAVOURD_CDI_INTERFACE": "cdev"})
    assert t == Targets(prometheus_textfile="/x/vfio.prom", cdi_interface="cdev")
    Args.prometheus_textfile = "/y.prom"
    assert targets_from(Args(), {"VFIO_FLAVOURD_PROMETHEUS_TEXTFILE": "/x/vfio.prom"}) \
        .prometheus_textfile == "/y.prom"


# -- the daemon on the example host ----------------------------------------------------


def simulate_apply():
    """What `vfio-flavourd --simulate apply` does to the example host, run as a
    separate process: the reference the published values are checked against."""
    r = subprocess.run([sys.executable, "-m", "vfio_flavourd", "--root", EXAMPLE, "--simulate",
                        "apply", "--json"], capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def test_daemon_metrics_match_a_simulate_run(tmp_path):
    prom_dir = tmp_path / "textfile"
    prom = prom_dir / "vfio-flavourd.prom"
    kernel = virt_server(tmp_path)
    with PublishingDaemon(kernel, Targets(prometheus_textfile=str(prom))) as pd:
        pd.idle()
    text = prom.read_text()
    promtool_check(text)
    assert os.stat(prom).st_mode & 0o777 == 0o644
    assert [p.name for p in prom_dir.iterdir()] == ["vfio-flavourd.prom"]   # no temp left

    ref = simulate_apply()
    results = collections.Counter(o["result"] for o in ref if o["result"] != "skipped")
    bound = collections.Counter((o["driver"], o["module"], o["rule"])
                                for o in ref if o["result"] == "bound")
    assert bound, "the example host binds devices"
    s = samples(text)
    for result, n in results.items():
        assert s[("vfio_flavourd_bind_outcomes_total",
                  frozenset({("result", result.replace("-", "_"))}))] == n, result
    managed = {k: v for k, v in s.items() if k[0] == "vfio_flavourd_managed_devices"}
    assert managed == {("vfio_flavourd_managed_devices",
                        frozenset({("driver", d), ("module", m), ("rule", r)})): n
                       for (d, m, r), n in bound.items()}
    assert s[("vfio_flavourd_bind_duration_seconds_count", frozenset())] == sum(
        1 for o in ref if o["action"] == "bind")


def test_rewrites_are_coalesced_under_a_burst(tmp_path):
    prom = tmp_path / "m.prom"
    kernel = virt_server(tmp_path)
    with PublishingDaemon(kernel, Targets(prometheus_textfile=str(prom)), interval=0.5) as pd:
        pd.idle()
        before = pd.publisher.writes
        t0 = time.monotonic()
        for _ in range(200):
            pd.publisher.changed()
            time.sleep(0.005)
        time.sleep(0.6)
        elapsed = time.monotonic() - t0
        during = pd.publisher.writes - before
    assert 1 <= during <= elapsed / 0.5 + 1, (during, elapsed)


def test_a_failing_write_is_logged_once_and_the_daemon_carries_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    kernel = virt_server(tmp_path)
    target = Targets(prometheus_textfile=str(blocker / "sub" / "m.prom"))
    with PublishingDaemon(kernel, target, interval=0.05) as pd:
        pd.idle()
        for _ in range(5):
            pd.publisher.changed()
            time.sleep(0.06)
        assert pd.daemon.counts["bound"] > 0
    errors = [r.getMessage() for r in pd.logger.records if r.levelname == "ERROR"]
    assert errors == [f"publishing: {blocker}/sub: cannot write: Not a directory"]


def test_publish_command_once(tmp_path):
    prom = tmp_path / "once.prom"
    r = subprocess.run([sys.executable, "-m", "vfio_flavourd", "--root", EXAMPLE, "--simulate",
                        "publish", "--prometheus-textfile", str(prom)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    promtool_check(prom.read_text())
    r = subprocess.run([sys.executable, "-m", "vfio_flavourd", "--root", EXAMPLE, "--simulate",
                        "publish"], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items()
                            if not k.startswith("VFIO_FLAVOURD_")})
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == (
        "vfio-flavourd: error: publish: nothing to write; give --prometheus-textfile FILE, "
        "--nfd-features [FILE] or --cdi-spec [FILE]")


# -- a real node_exporter ------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(proc, port, log, deadline):
    """The exporter's /metrics once it listens; None when it exited first."""
    while True:
        try:
            # No proxy: pybuild sets http_proxy=http://127.0.0.1:9/ to keep
            # package builds off the network, which would catch this too.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            if proc.poll() is not None:
                return None
            assert time.monotonic() < deadline, \
                "node_exporter did not answer within 60 s:\n" + log.read_text()[-2000:]
            time.sleep(0.2)


def test_node_exporter_serves_the_metrics(tmp_path):
    exporter = need(NODE_EXPORTER, "prometheus-node-exporter")
    textdir = tmp_path / "textfile"
    kernel = virt_server(tmp_path)
    with PublishingDaemon(kernel, Targets(
            prometheus_textfile=str(textdir / "vfio-flavourd.prom"))) as pd:
        pd.idle()
    written = samples((textdir / "vfio-flavourd.prom").read_text())
    log = tmp_path / "node_exporter.log"
    text = None
    for attempt in range(3):     # a port taken between free_port() and the bind
        port = free_port()
        with open(log, "w") as err:
            proc = subprocess.Popen(
                [exporter, f"--web.listen-address=127.0.0.1:{port}",
                 "--collector.disable-defaults", "--collector.textfile",
                 f"--collector.textfile.directory={textdir}"],
                stdout=subprocess.DEVNULL, stderr=err)
        try:
            text = scrape(proc, port, log, time.monotonic() + 60)
        finally:
            proc.terminate()
            proc.wait(10)
        if text is not None or "address already in use" not in log.read_text():
            break
    assert text is not None, "node_exporter exited:\n" + log.read_text()[-2000:]
    served = samples(text)
    assert served == written
    assert samples(text, "node_textfile_scrape_error")[("node_textfile_scrape_error",
                                                        frozenset())] == 0
    bound = sum(v for (name, _), v in served.items()
                if name == "vfio_flavourd_managed_devices")
    ref = simulate_apply()
    assert bound == sum(1 for o in ref if o["result"] == "bound") > 0
