"""deploy/kubernetes-ha/: the kustomize overlay that runs three orchestrator replicas with the
Kubernetes Lease backend. Built with ``kubectl kustomize`` (or ``kustomize build``) when
installed and validated against the Kubernetes schemas; its Role grants exactly what the backend
calls; its example config is the base's plus the ``coordination`` section, and loads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.config import parse_config
from orchestrator.coord.kubernetes import RBAC_VERBS, KubernetesCoordinator

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
HA = ROOT / "deploy" / "kubernetes-ha"
SECRET_DIR = "/var/run/secrets/helios/"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def built() -> list[dict[str, Any]]:
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(HA)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(HA)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def test_overlay_builds_and_validates_against_the_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.latest_version()
    docs = built()
    assert "PersistentVolumeClaim" not in {d["kind"] for d in docs}
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc}")


def test_three_replicas_that_can_reach_the_api_server() -> None:
    docs = built()
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes["state"]) == {"name", "emptyDir"}  # one state_dir per replica
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    # Everything else is the base's: same container, probes, hardening (the image gets its
    # tag from the base's kustomization).
    base = next(d for d in yaml.safe_load_all((BASE / "deployment.yaml").read_text()) if d)
    (container,) = pod["containers"]
    (base_container,) = base["spec"]["template"]["spec"]["containers"]
    assert {**container, "image": None} == {**base_container, "image": None}


def test_role_grants_exactly_what_the_lease_backend_calls() -> None:
    rules = one(built(), "Role")["rules"]
    base_role = next(d for d in yaml.safe_load_all((BASE / "rbac.yaml").read_text()) if d)
    assert rules[0] == base_role["rules"][0]  # its own ConfigMap, read-only, by name
    granted = {
        (group, resource): tuple(r["verbs"])
        for r in rules[1:]
        for group in r["apiGroups"]
        for resource in r["resources"]
    }
    assert granted == RBAC_VERBS
    assert all("resourceNames" not in r for r in rules[1:])


def config_text(path: Path) -> str:
    cm = next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "ConfigMap")
    return str(cm["data"]["orchestrator.yaml"])


async def test_example_config_is_the_base_one_plus_coordination_and_loads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ha_text = config_text(HA / "configmap-patch.yaml")
    ha, base = yaml.safe_load(ha_text), yaml.safe_load(config_text(BASE / "configmap.yaml"))
    coordination = ha.pop("coordination")
    assert ha == base, "the overlay's example config drifted from the base's"
    assert coordination["backend"] == "kubernetes"

    monkeypatch.setenv("HELIOS_PG_PASSWORD", "test-value")
    for key in ("api-oncall-token", "cloudflare-api-token"):
        (tmp_path / key).write_text(f"test-value-of-{key}")
    data = yaml.safe_load(ha_text.replace("file:" + SECRET_DIR, f"file:{tmp_path}/"))
    cfg = parse_config(data, "configmap-patch.yaml")
    settings = cfg.coordination
    assert settings is not None and settings.backend == "kubernetes"
    assert (settings.ttl, settings.timeout, settings.vantage_quorum) == (10.0, 2.0, 2)
    assert settings.instance_id is None and settings.vantage is None  # the pod name

    # In the pod: the API server from the environment, the service account's files.
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "namespace").write_text("helios")
    (sa / "token").write_text("token-0123456789")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    coord = KubernetesCoordinator.from_settings(settings, environ=env, service_account=sa)
    try:
        assert coord.lease_name(f"{cfg.service}/leader") == "helios.helios-db.leader"
    finally:
        await coord.aclose()
