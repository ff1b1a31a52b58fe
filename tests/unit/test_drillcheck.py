"""Drill judgement (pure): pre-checks, leg verdicts, the write load's arithmetic; plus the drill
record store and the drill metrics fed from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from test_decision import E, P, W, node

from orchestrator.decision import Controls
from orchestrator.drillcheck import (
    Check,
    LegFacts,
    judge_leg,
    longest_gap,
    lost_seqs,
    phases_of,
    prechecks,
    refused_reasons,
    rpo_seconds,
)
from orchestrator.drillrecord import DrillStore, new_drill_id
from orchestrator.model import Assessment, NodeHealth, RegionHealth, Verdict
from orchestrator.observability.drill_metrics import DrillMetrics
from probes.base import Role

RPO = 60.0


def world(
    primary: NodeHealth | None = None,
    west: NodeHealth | None = None,
    eu: NodeHealth | None = None,
    primary_name: str | None = "us-east-1",
) -> Assessment:
    nodes = (
        primary or node(P, role=Role.PRIMARY, lag=None, lag_bytes=None),
        west or node(W),
        eu or node(E),
    )
    return Assessment(
        cycle=3,
        at=0.0,
        nodes=nodes,
        regions=tuple(RegionHealth(n.node.region, n.verdict, n.reason) for n in nodes),
        primary=primary_name,
        reason="ALL_HEALTHY",
        sentence="x",
    )


def failed(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.detail for c in checks if not c.ok}


# --- pre-checks --------------------------------------------------------------------------------


CASES: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("all fine", {}, {}),
    (
        "replica lags beyond the RPO",
        {"west": node(W, Verdict.DEGRADED, lag=75.2, reason="LAG_BEYOND_RPO")},
        {"regions_healthy": "us-west-1 degraded", "lag_within_rpo": "us-west-1 lags 75.2s"},
    ),
    (
        "lag unknown and bytes behind",
        {"eu": node(E, lag=None, lag_bytes=4096)},
        {"lag_within_rpo": "eu-1 lag unknown"},
    ),
    ("lag unknown but caught up in bytes", {"eu": node(E, lag=None, lag_bytes=0)}, {}),
    (
        "a replica down",
        {"eu": node(E, Verdict.DOWN, failures=3, reason="NODE_DOWN:refused")},
        {"regions_healthy": "eu-1 down"},
    ),
    (
        "primary suspect",
        {"primary": node(P, Verdict.SUSPECT, Role.PRIMARY, None, None, 1, "PROBE_FAILED:timeout")},
        {"regions_healthy": "us-east-1 suspect", "primary_known": "not answering"},
    ),
    ("no primary", {"primary_name": None}, {"primary_known": "no primary"}),
    ("open incident", {"open_incident": True}, {"no_open_incident": "incident is open"}),
    ("paused", {"controls": Controls(paused=True)}, {"not_paused": "paused"}),
    (
        "another drill",
        {"controls": Controls(drill="drill-x")},
        {"no_drill_running": "drill-x holds"},
    ),
    ("unfinished run", {"unfinished": True}, {"no_unfinished_run": "unfinished"}),
    (
        "failover drill without failure command",
        {"kind": "failover"},
        {"failure_command": "needs drill.failure_command"},
    ),
    ("failover drill with failure command", {"kind": "failover", "cmd": ["kill", "x"]}, {}),
]


@pytest.mark.parametrize(("name", "given", "expect"), CASES, ids=[c[0] for c in CASES])
def test_prechecks(name: str, given: dict[str, Any], expect: dict[str, str]) -> None:
    a = world(
        primary=given.get("primary"),
        west=given.get("west"),
        eu=given.get("eu"),
        primary_name=given.get("primary_name", "us-east-1"),
    )
    checks = prechecks(
        a,
        given.get("controls", Controls()),
        given.get("open_incident", False),
        given.get("unfinished", False),
        RPO,
        kind=given.get("kind", "switchover"),
        failure_command=given.get("cmd"),
    )
    got = failed(checks)
    assert set(got) == set(expect), got
    for check, words in expect.items():
        assert words in got[check], (check, got[check])
    assert [c.name for c in checks][:7] == [
        "regions_healthy",
        "primary_known",
        "lag_within_rpo",
        "no_open_incident",
        "not_paused",
        "no_drill_running",
        "no_unfinished_run",
    ]
    assert refused_reasons(checks) == [f"{k}: {v}" for k, v in got.items()]


def test_lag_check_names_each_node_and_its_lag() -> None:
    a = world(west=node(W, lag=1.25), eu=node(E, lag=0.0))
    lag = next(c for c in prechecks(a, Controls(), False, False, RPO) if c.name == "lag_within_rpo")
    assert lag.ok and "us-west-1 1.2s" in lag.detail and "eu-1 0.0s" in lag.detail


# --- leg verdicts ------------------------------------------------------------------------------

GOOD = LegFacts(
    completed=True,
    run_reason=None,
    failed_steps=(),
    rto_seconds=12.5,
    rpo_seconds=0.0,
    dns=(Check("route53", True, "ok"), Check("cloudflare", True, "ok")),
    smoke=(Check("catalog", True, "returned 'true'"),),
)

LEGS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("meets every objective", {}, []),
    ("at the objective exactly", {"rto_seconds": 300.0, "rpo_seconds": 60.0}, []),
    (
        "run aborted",
        {"completed": False, "run_reason": "step fence failed"},
        ["the run did not complete: step fence failed"],
    ),
    ("a step failed", {"failed_steps": ("notify: boom",)}, ["step failed: notify: boom"]),
    ("RTO over", {"rto_seconds": 300.5}, ["RTO 300.50s exceeds the objective of 300s"]),
    ("RTO unknown", {"rto_seconds": None}, ["RTO not measured"]),
    ("RPO over", {"rpo_seconds": 61.0}, ["RPO 61.00s exceeds the objective of 60s"]),
    ("RPO unknown", {"rpo_seconds": None}, ["RPO not measured"]),
    (
        "DNS not live on one provider",
        {"dns": (Check("route53", True, "ok"), Check("gcloud", False, "api 127.0.0.1"))},
        ["DNS not verified on gcloud: api 127.0.0.1"],
    ),
    (
        "smoke check failed",
        {"smoke": (Check("catalog", False, "returned 'false'"),)},
        ["smoke check catalog failed: returned 'false'"],
    ),
]


@pytest.mark.parametrize(("name", "change", "reasons"), LEGS, ids=[c[0] for c in LEGS])
def test_judge_leg(name: str, change: dict[str, Any], reasons: list[str]) -> None:
    fields = {f: getattr(GOOD, f) for f in LegFacts.__slots__}  # type: ignore[attr-defined]
    fields.update(change)
    passed, got = judge_leg(LegFacts(**fields), 300.0, 60.0)
    assert passed is (not reasons)
    assert len(got) == len(reasons), got
    for want, have in zip(reasons, got, strict=True):
        assert have.startswith(want), (want, have)


def test_judge_leg_lists_every_miss() -> None:
    leg = LegFacts(False, "aborted", ("fence: x",), None, 99.0, (Check("r53", False, "-"),), ())
    passed, reasons = judge_leg(leg, 300.0, 60.0)
    assert not passed and len(reasons) == 5


# --- the write load's arithmetic ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("acks", "window", "gap"),
    [
        ([0.0, 0.05, 0.10, 2.10, 2.15], (1.0, 3.0), 2.0),  # the outage straddles the start
        ([0.0, 0.05, 0.10, 2.10, 2.15], (5.0, 6.0), 3.85),  # nothing after: open up to the end
        ([0.0, 1.0, 1.1, 1.2, 4.0], (0.5, 2.0), 2.8),  # the gap closes after the window
        ([10.0, 10.1, 10.2], (0.0, 20.0), 10.0),  # no ack before: counted from the start
        ([], (0.0, 5.0), 5.0),
        ([0.0, 0.1, 0.2, 0.3, 5.0], (0.15, 0.25), 0.1),  # a calm window
        ([0.3, 0.0, 0.2, 0.1], (0.0, 0.3), 0.1),  # unsorted input
    ],
)
def test_longest_gap(acks: list[float], window: tuple[float, float], gap: float) -> None:
    assert longest_gap(acks, *window) == pytest.approx(gap)


def test_lost_seqs_and_rpo_span() -> None:
    acked = {1: 10.0, 2: 10.05, 3: 10.1, 4: 10.15, 5: 10.2}
    lost = lost_seqs(acked, present=[1, 2, 3, 6, 7])
    assert lost == [4, 5]
    # From the oldest lost acknowledged commit to the failure at 10.3.
    assert rpo_seconds([acked[s] for s in lost], failure_at=10.3) == pytest.approx(0.15)
    # The newest lost commit after the recorded failure moment extends the window.
    assert rpo_seconds([acked[s] for s in lost], failure_at=10.0) == pytest.approx(0.05)
    assert rpo_seconds([], failure_at=10.3) == 0.0
    assert lost_seqs([1, 2, 3], [1, 2, 3]) == []


def test_phases_of_journal_records() -> None:
    records = [
        {"run": "r", "kind": "run_started", "at": 1.0},
        {
            "run": "r",
            "kind": "step_started",
            "step": "stop_writes",
            "action": "stop_writes",
            "at": 1.1,
        },
        {"run": "r", "kind": "step_finished", "step": "stop_writes", "at": 1.2},
        {"run": "r", "kind": "step_started", "step": "promote", "action": "promote", "at": 1.3},
        {"run": "r", "kind": "step_failed", "step": "promote", "at": 2.0},
        {"run": "r", "kind": "step_started", "step": "notify", "action": "notify", "at": 2.1},
        {"run": "r", "kind": "run_aborted", "at": 2.2},
    ]
    assert phases_of(records) == [
        {"name": "stop_writes", "action": "stop_writes", "status": "ok", "started_at": 1.1,
         "finished_at": 1.2},
        {"name": "promote", "action": "promote", "status": "failed", "started_at": 1.3,
         "finished_at": 2.0},
        {"name": "notify", "action": "notify", "status": "running", "started_at": 2.1,
         "finished_at": None},
    ]  # fmt: skip


# --- store and metrics -------------------------------------------------------------------------


def _record(drill_id: str, result: str, started: float, **extra: Any) -> dict[str, Any]:
    legs = [
        {"name": "us-east -> us-west", "rto_seconds": 8.5, "rpo_seconds": 0.0},
        {"name": "us-west -> us-east", "rto_seconds": 11.25, "rpo_seconds": 0.4},
    ]
    return {
        "id": drill_id,
        "kind": "switchover",
        "dry_run": False,
        "result": result,
        "started_at": started,
        "finished_at": started + 60,
        "legs": legs if result != "refused" else [],
        **extra,
    }


def test_store_and_metrics(tmp_path: Path) -> None:
    assert new_drill_id(0.0).startswith("drill-19700101T000000-")
    store = DrillStore(tmp_path)
    assert store.all() == [] and store.last() is None and store.last_success() is None
    store.save(_record("drill-a", "passed", 100.0))
    store.save(_record("drill-b", "refused", 200.0))
    (store.dir / "drill-broken.json").write_text("{not json")
    assert [d["id"] for d in store.all()] == ["drill-a", "drill-b"]
    assert store.last()["id"] == "drill-b"  # type: ignore[index]
    assert store.last_success()["id"] == "drill-a"  # type: ignore[index]
    assert store.load("drill-a")["result"] == "passed"

    reg = CollectorRegistry()
    m = DrillMetrics(reg)
    assert m.last_summary() is None
    assert m.load(tmp_path) == 2
    assert m.load(tmp_path) == 0  # each record is counted once
    v = reg.get_sample_value
    assert v("helios_drill_last_success_timestamp_seconds") == 160.0
    assert v("helios_drill_last_rto_seconds") == 11.25  # the slowest leg of the last measured
    assert v("helios_drill_last_rpo_seconds") == 0.4
    assert v("helios_drill_last_result", {"result": "refused"}) == 1.0
    assert v("helios_drill_last_result", {"result": "passed"}) == 0.0
    assert v("helios_drills_total", {"kind": "switchover", "result": "passed"}) == 1.0
    assert v("helios_drills_total", {"kind": "switchover", "result": "refused"}) == 1.0
    summary = m.last_summary()
    assert summary is not None and summary["id"] == "drill-b" and summary["when"]

    m.record(_record("drill-c", "planned", 300.0, dry_run=True))  # a dry run: not counted
    m.record(_record("drill-d", "failed", 400.0))
    assert v("helios_drill_last_result", {"result": "failed"}) == 1.0
    assert v("helios_drill_last_success_timestamp_seconds") == 160.0
