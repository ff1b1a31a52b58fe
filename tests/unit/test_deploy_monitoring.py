"""Monitoring deliverables: deploy/prometheus/alerts.yml (checked and unit-tested by promtool) and
the Grafana dashboard deploy/grafana/helios-orchestrator.json, both built on the metric names the
code exports.

promtool is required, not optional: without it these tests fail and say how to install it
(``make testtools`` or deploy/scripts/install-test-tools.sh; $HELIOS_PROMTOOL may name it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from orchestrator.model import NodeRef, Topology
from orchestrator.observability.dns_metrics import DnsMetrics
from orchestrator.observability.drill_metrics import DrillMetrics
from orchestrator.observability.failover_metrics import FailoverMetrics
from orchestrator.observability.leader_metrics import LeaderMetrics
from orchestrator.observability.metrics import Metrics
from orchestrator.observability.notify_metrics import NotifyMetrics

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
ALERTS = PROM / "alerts.yml"
RULE_TESTS = sorted(PROM.glob("alerts_test*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "helios-orchestrator.json"
OBSERVABILITY = ROOT / "orchestrator" / "observability"

REQUIRED_ALERTS = {
    "HeliosPrimaryDown",
    "HeliosReplicationLagAboveRPO",
    "HeliosRTOBudgetBurning",
    "HeliosRTOBudgetExhausted",
    "HeliosFailoverFailed",
    "HeliosDNSProviderDegraded",
    "HeliosDNSDrift",
    "HeliosDrillOverdue",
    "HeliosDrillNeverSucceeded",
    "HeliosOrchestratorDown",
    "HeliosOrchestratorAbsent",
    "HeliosNoLeader",
    "HeliosMultipleLeaders",
}

METRIC_NAME = re.compile(r"\bhelios_[a-z0-9_]*[a-z0-9]")


def _promtool() -> str:
    explicit = os.environ.get("HELIOS_PROMTOOL")
    found = explicit if explicit and os.access(explicit, os.X_OK) else shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool not found: run `make testtools` (or, as root, "
            "deploy/scripts/install-test-tools.sh; Debian package prometheus), "
            "or set HELIOS_PROMTOOL to it"
        )
    return found


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _dashboard_exprs() -> list[str]:
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if "expr" in t)
            walk(p.get("panels", []))

    walk(_dashboard()["panels"])
    return exprs


def _registry() -> CollectorRegistry:
    """A fresh registry holding every metric class of the daemon."""
    registry = CollectorRegistry()
    topo = Topology(
        service="svc",
        regions=("a",),
        nodes=(NodeRef(name="n1", region="a"),),
        rpo=60.0,
        rto=300.0,
    )
    Metrics(registry, topo)
    DnsMetrics(registry, ["p"])
    FailoverMetrics(registry)
    DrillMetrics(registry)
    NotifyMetrics(registry)
    LeaderMetrics(registry, lambda: False)
    return registry


def _exported_names() -> set[str]:
    """Every sample name the daemon's metric classes expose."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in _registry().collect():
        names.update(family.name + s for s in suffixes[family.type])
    return names


def test_promtool_check_rules() -> None:
    out = _run("check", "rules", ALERTS)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules() -> None:
    assert RULE_TESTS, "no deploy/prometheus/alerts_test*.yml"
    out = _run("test", "rules", *RULE_TESTS)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_complete_and_unit_tested() -> None:
    alerts = _alerts()
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), names
    assert REQUIRED_ALERTS - set(names) == set()
    readme = (ROOT / "README.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", readme, flags=re.MULTILINE)
    }
    tested: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    for a in alerts:
        name = a["alert"]
        assert a["labels"]["severity"] in {"page", "ticket"}, name
        annotations = a["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "README.md" and anchor in anchors, (name, annotations["runbook_url"])
        assert name in tested, f"{name}: no promtool test expects it to fire"


def test_metric_classes_cover_every_metric_in_the_code() -> None:
    """Guard for the name check below: a metric defined in orchestrator/observability/ but in a
    class this test does not instantiate would make the exported set incomplete."""
    literals = {
        m
        for path in OBSERVABILITY.glob("*.py")
        for m in re.findall(r"[\"'](helios_[a-z0-9_]+)[\"']", path.read_text())
    }
    families = {family.name for family in _registry().collect()}
    assert literals, "no helios_* metric literals found"
    missing = {m for m in literals if m.removesuffix("_total") not in families}
    assert missing == set()


def test_alerts_and_dashboard_use_exported_metric_names() -> None:
    exported = _exported_names()
    used_in_alerts = set(METRIC_NAME.findall(ALERTS.read_text()))
    used_in_dashboard = set(METRIC_NAME.findall("\n".join(_dashboard_exprs())))
    assert "helios_leader" in used_in_alerts
    assert used_in_alerts - exported == set()
    assert used_in_dashboard, "the dashboard queries no helios_* metric"
    assert used_in_dashboard - _exported_names() == set()


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Every dashboard query is valid PromQL once Grafana's variables are filled in: promtool
    checks them as recording rules."""
    dash = _dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    exprs = _dashboard_exprs()
    assert exprs
    rules = [
        {
            "record": f"dashboard:query{i}",
            "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*"),
        }
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = _run("check", "rules", path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_panels_use_the_datasource_variable() -> None:
    panels = [p for p in _dashboard()["panels"] if p["type"] != "row"]
    titles = {p["title"] for p in panels}
    for wanted in (
        "Primary region",
        "Node verdicts",
        "Replication lag vs RPO",
        "Incident elapsed vs RTO",
        "Failovers",
        "DNS provider up",
        "DNS drift",
        "Notifications failed",
    ):
        assert wanted in titles, wanted
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], p["title"]
