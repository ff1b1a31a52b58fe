"""deploy/kubernetes/ (kustomize base) and the Dockerfile: manifests valid against the Kubernetes
schemas (kubernetes-validate, offline), the hardening and probes the daemon relies on, the example
config accepted by the orchestrator, and the PrometheusRule equal to deploy/prometheus/alerts.yml.

Regenerate deploy/kubernetes/prometheusrule.yaml after changing alerts.yml with
``.venv/bin/python tests/unit/test_kubernetes_manifests.py --write-prometheusrule``."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
KDIR = ROOT / "deploy" / "kubernetes"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DOCKERFILE = ROOT / "Dockerfile"
SECRET_DIR = "/var/run/secrets/helios/"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
PORT = 9187


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifest_files() -> list[Path]:
    return sorted(p for p in KDIR.glob("*.yaml") if p.name != "kustomization.yaml")


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((KDIR / "kustomization.yaml").read_text())


def one(kind: str) -> dict[str, Any]:
    found = [d for p in manifest_files() for d in load_docs(p) if d["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def container() -> dict[str, Any]:
    containers = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


# --- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_validates_against_kubernetes_schema(path: Path) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.latest_version()
    docs = load_docs(path)
    assert docs, f"{path.name} holds no document"
    for doc in docs:
        assert doc.get("metadata", {}).get("name"), f"{path.name}: a document has no name"
        if doc["kind"] in CRD_KINDS:
            continue  # CRDs: checked by hand below
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}: {exc}")


def test_servicemonitor_structure() -> None:
    sm = one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) <= {"apiVersion", "kind", "metadata", "spec"}
    spec = sm["spec"]
    assert spec["selector"]["matchLabels"] == one("Service")["spec"]["selector"]
    (endpoint,) = spec["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in one("Service")["spec"]["ports"]}
    # Without jobLabel the job is the Service name: the one alerts.yml expects.
    assert "jobLabel" not in spec
    assert 'job="' + one("Service")["metadata"]["name"] + '"' in ALERTS.read_text()


def test_prometheusrule_structure_and_groups_equal_alerts_yml() -> None:
    rule = one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule) <= {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r) and r["expr"]
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], (
        "prometheusrule.yaml drifted from alerts.yml; regenerate it (see the module docstring)"
    )


# --- kustomize -------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_except_the_example_secret() -> None:
    resources = kustomization()["resources"]
    assert len(resources) == len(set(resources))
    for name in resources:
        assert (KDIR / name).is_file(), f"kustomization lists missing {name}"
    expected = {p.name for p in manifest_files()} - {"secret.example.yaml"}
    assert set(resources) == expected
    # The example Secret (placeholders only) is never applied and holds no real value.
    secret = load_docs(KDIR / "secret.example.yaml")[0]
    assert secret["kind"] == "Secret"
    assert all(v == "REPLACE-ME" for v in secret["stringData"].values())
    assert "secretGenerator" not in kustomization()


def test_kustomize_build() -> None:
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(KDIR)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(KDIR)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out.stdout) if d)
    expected = {
        *("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "PersistentVolumeClaim"),
        *("Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"),
    }
    assert kinds == sorted(expected)


# --- the Deployment --------------------------------------------------------------------------


def test_deployment_probes_target_health_endpoints_on_the_container_port() -> None:
    c = container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": PORT}
    paths = {
        kind: (c[kind]["httpGet"]["path"], c[kind]["httpGet"]["port"])
        for kind in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    assert paths == {
        "livenessProbe": ("/healthz", "http"),
        "readinessProbe": ("/readyz", "http"),
        "startupProbe": ("/healthz", "http"),
    }
    service_port = one("Service")["spec"]["ports"][0]
    assert service_port["targetPort"] == "http" and service_port["port"] == PORT


def test_deployment_security_context_and_resources() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    c = container()
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    requests = c["resources"]["requests"]
    assert requests["cpu"] and requests["memory"]
    assert c["resources"]["limits"]["memory"]


def test_deployment_single_replica_recreate_and_pdb() -> None:
    dep = one("Deployment")
    assert dep["spec"]["replicas"] == 1  # no leader election yet
    assert dep["spec"]["strategy"]["type"] == "Recreate"  # never two orchestrators at once
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 0
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for selector in (
        dep["spec"]["selector"]["matchLabels"],
        pdb["spec"]["selector"]["matchLabels"],
        one("Service")["spec"]["selector"],
    ):
        assert selector.items() <= labels.items()


def test_deployment_mounts_config_state_and_secrets() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    config_mount = mounts["/etc/helios-orchestrator"]
    assert config_mount["readOnly"] is True
    cm_name = one("ConfigMap")["metadata"]["name"]
    assert volumes[config_mount["name"]]["configMap"]["name"] == cm_name
    assert container()["args"] == ["run", "--config", "/etc/helios-orchestrator/orchestrator.yaml"]
    state = volumes[mounts["/var/lib/helios-orchestrator"]["name"]]
    assert (
        state["persistentVolumeClaim"]["claimName"]
        == one("PersistentVolumeClaim")["metadata"]["name"]
    )
    secret_name = load_docs(KDIR / "secret.example.yaml")[0]["metadata"]["name"]
    secret_mount = mounts[SECRET_DIR.rstrip("/")]
    assert secret_mount["readOnly"] is True
    assert volumes[secret_mount["name"]]["secret"]["secretName"] == secret_name
    for env in container()["env"]:
        if "valueFrom" in env:
            assert env["valueFrom"]["secretKeyRef"]["name"] == secret_name
    # The Role reads only the orchestrator's own ConfigMap.
    role = one("Role")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [cm_name],
            "verbs": ["get", "watch"],
        }
    ]


# --- the example configuration ---------------------------------------------------------------


def test_configmap_config_is_valid_and_fits_the_pod(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = one("ConfigMap")["data"]["orchestrator.yaml"]
    secret_keys = set(load_docs(KDIR / "secret.example.yaml")[0]["stringData"])
    # env: references -> the Deployment's env vars; file: references -> the Secret's mount.
    env_names = {e["name"] for e in container()["env"]}
    for name in env_names:
        monkeypatch.setenv(name, "test-value")
    for key in secret_keys:
        (tmp_path / key).write_text(f"test-value-of-{key}")  # tokens need 16+ characters
    referenced = [
        line.split("file:" + SECRET_DIR, 1)[1].strip()
        for line in text.splitlines()
        if "file:" + SECRET_DIR in line
    ]
    assert set(referenced) <= secret_keys
    data = yaml.safe_load(text.replace("file:" + SECRET_DIR, f"file:{tmp_path}/"))
    cfg = parse_config(data, "configmap.yaml")
    assert cfg.listen.address == "0.0.0.0"
    assert cfg.listen.port == PORT
    assert cfg.state_dir == "/var/lib/helios-orchestrator"
    assert [t.role for t in cfg.api.tokens] == ["operator"]
    env_refs = {w.split("env:", 1)[1].strip() for w in text.splitlines() if " env:" in w}
    assert env_refs <= env_names


# --- the Dockerfile --------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if line.endswith("\\"):
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def test_dockerfile_slim_non_root_entrypoint() -> None:
    instr = dockerfile_instructions()
    froms = [rest for word, rest in instr if word == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)
    final = instr[max(i for i, (w, _) in enumerate(instr) if w == "FROM") :]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    as_of = dict(final)
    assert yaml.safe_load(as_of["ENTRYPOINT"]) == ["orchestrator"]
    assert yaml.safe_load(as_of["CMD"]) == [
        "run",
        "--config",
        "/etc/helios-orchestrator/orchestrator.yaml",
    ]
    assert as_of["EXPOSE"] == str(PORT)
    assert any(w == "RUN" and "pip install ." in shlex.join(r.split()) for w, r in instr)
    # The image's user is the one the pod runs as.
    assert container()["securityContext"]["runAsUser"] == 10001
    assert (ROOT / ".dockerignore").is_file()


# --- regeneration of prometheusrule.yaml -----------------------------------------------------

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml, do not edit by hand: the groups must stay equal
# (tests/unit/test_kubernetes_manifests.py fails when they drift). Regenerate with
#   .venv/bin/python tests/unit/test_kubernetes_manifests.py --write-prometheusrule
# The rules' comments live in alerts.yml; `runbook_url`s are relative to the repository README.
"""


def render_prometheusrule() -> str:
    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    labels = {
        "app.kubernetes.io/name": "helios-orchestrator",
        "app.kubernetes.io/component": "orchestrator",
    }
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "helios-orchestrator", "labels": labels},
        "spec": {"groups": yaml.safe_load(ALERTS.read_text())["groups"]},
    }
    return HEADER + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True)


def test_prometheusrule_file_is_the_generated_one() -> None:
    assert (KDIR / "prometheusrule.yaml").read_text() == render_prometheusrule()


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-prometheusrule"]:
        (KDIR / "prometheusrule.yaml").write_text(render_prometheusrule())
    else:
        sys.exit(f"usage: {sys.argv[0]} --write-prometheusrule")
