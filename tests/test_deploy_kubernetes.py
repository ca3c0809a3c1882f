"""deploy/kubernetes/: every manifest validates against Kubernetes' own
schemas (kubernetes-validate ships them: no network), and the DaemonSet
wires the daemon the way the code expects."""

import glob
import os
import subprocess
import sys

import pytest
import yaml

from vfio_flavourd.publish import ENV

kubernetes_validate = pytest.importorskip("kubernetes_validate")

# The Kubernetes version the manifests are written for and checked against.
KUBERNETES = "1.33.0"
DEPLOY = os.path.join(os.path.dirname(__file__), "..", "deploy", "kubernetes")


def manifests():
    out = []
    for path in sorted(glob.glob(os.path.join(DEPLOY, "*.yaml"))):
        with open(path) as f:
            out += [(os.path.basename(path), doc) for doc in yaml.safe_load_all(f) if doc]
    return out


def by_kind(kind):
    docs = [doc for _, doc in manifests() if doc["kind"] == kind]
    assert len(docs) == 1
    return docs[0]


@pytest.mark.parametrize("name,doc", manifests(), ids=lambda x: x if isinstance(x, str) else "")
def test_manifest_validates(name, doc):
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_a_broken_manifest_fails_validation():
    ds = by_kind("DaemonSet")
    ds["spec"]["template"]["spec"]["hostNetwork"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBERNETES, strict=True)


def test_all_kinds_are_there():
    assert sorted(d["kind"] for _, d in manifests()) == ["ConfigMap", "DaemonSet", "Namespace"]


def test_daemonset_mounts_and_environment():
    pod = by_kind("DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    assert pod["nodeSelector"] == {"feature.node.kubernetes.io/iommu-enabled": "true"}
    c, = pod["containers"]
    assert c["securityContext"]["privileged"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    host = {path: volumes[m["name"]].get("hostPath", {}).get("path") for path, m in mounts.items()}
    for path in ("/sys", "/dev", "/lib/modules", "/run/udev", "/run/vfio-flavourd",
                 "/etc/kubernetes/node-feature-discovery/features.d", "/var/run/cdi",
                 "/var/lib/prometheus/node-exporter"):
        assert host[path] == path, path
    assert mounts["/lib/modules"]["readOnly"] is True
    assert volumes[mounts["/etc/vfio-flavourd/policy.d"]["name"]]["configMap"]["name"] == \
        by_kind("ConfigMap")["metadata"]["name"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert set(env) <= set(ENV.values())
    # Every published file lands in a mounted directory.
    for var in ("prometheus_textfile", "nfd_features", "cdi_spec", "health_file"):
        assert os.path.dirname(env[ENV[var]]) in mounts, var
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["exec"]["command"][:2] == ["vfio-flavourd", "health"]


def test_daemonset_comment_says_why_host_network():
    text = open(os.path.join(DEPLOY, "daemonset.yaml")).read()
    before = text[:text.index("hostNetwork: true")]
    assert "initial network namespace" in before[-300:]


def test_the_configmap_policy_passes_check_config(tmp_path):
    data = by_kind("ConfigMap")["data"]
    for key, text in data.items():
        f = tmp_path / key
        f.write_text(text)
        r = subprocess.run([sys.executable, "-m", "vfio_flavourd", "--policy", str(f),
                            "check-config"], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
