"""BCP activation levels: table-driven over the plan's activation table, escalation by duration
and the facts derived from a tick."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_decision import E, P, W, node, world

from orchestrator.config_bcp import LevelPolicy, Levels
from orchestrator.levels import Facts, RegionFacts, assess_level, classify, facts_from
from orchestrator.model import NodeSample, Snapshot
from probes.base import Kind, Observation

HEALTHY = Facts(
    primary_ok=True,
    primary_degraded=False,
    primary_lost=False,
    replicas=2,
    replicas_down=0,
    replicas_beyond_rpo=0,
    any_node_answers=True,
    regions=(RegionFacts("us-east", 2, 0), RegionFacts("us-west", 2, 0), RegionFacts("eu", 1, 0)),
)

TABLE = [
    # (plan event, facts, level, reason)
    ("all healthy", HEALTHY, 0, "OK"),
    (
        "single component failure: one replica down",
        replace(HEALTHY, replicas_down=1, regions=(RegionFacts("us-west", 2, 1),)),
        0,
        "SINGLE_COMPONENT",
    ),
    (
        "single component failure: the only probe of a one-probe region",
        replace(HEALTHY, replicas_down=1, regions=(RegionFacts("eu", 1, 1),)),
        0,
        "SINGLE_COMPONENT",
    ),
    ("degradation: slow primary", replace(HEALTHY, primary_degraded=True), 1, "PRIMARY_DEGRADED"),
    (
        "degradation: replica beyond the RPO",
        replace(HEALTHY, replicas_beyond_rpo=1),
        1,
        "REPLICA_BEYOND_RPO",
    ),
    ("degradation: no replica left", replace(HEALTHY, replicas_down=2), 1, "NO_REDUNDANCY"),
    ("degradation: DNS supplier", replace(HEALTHY, dns_degraded=True), 1, "DNS_SUPPLIER_DEGRADED"),
    (
        "partial outage: primary lost",
        replace(HEALTHY, primary_ok=False, primary_lost=True),
        2,
        "PRIMARY_LOST",
    ),
    (
        "partial outage: failover running",
        replace(HEALTHY, failover_running=True),
        2,
        "PRIMARY_LOST",
    ),
    (
        "full outage: nothing answers",
        replace(HEALTHY, primary_ok=False, primary_lost=True, any_node_answers=False),
        3,
        "NOTHING_SERVES",
    ),
    (
        "full outage: primary lost, engine holds",
        replace(HEALTHY, primary_ok=False, primary_lost=True, no_automatic_recovery=True),
        3,
        "NO_AUTOMATIC_RECOVERY",
    ),
    (
        "regional disaster: database and HTTP health of us-east fail",
        replace(
            HEALTHY,
            primary_ok=False,
            primary_lost=True,
            regions=(RegionFacts("us-east", 2, 2), RegionFacts("us-west", 2, 0)),
        ),
        4,
        "REGION_LOST",
    ),
    (
        "regional disaster of a replica region",
        replace(HEALTHY, replicas_down=1, regions=(RegionFacts("eu", 3, 3),)),
        4,
        "REGION_LOST",
    ),
]


@pytest.mark.parametrize(("event", "facts", "level", "reason"), TABLE, ids=[t[0] for t in TABLE])
def test_classification_follows_the_plan(event: str, facts: Facts, level: int, reason: str) -> None:
    got, code, sentence = classify(facts)
    assert (got, code) == (level, reason), event
    assert sentence


@pytest.mark.parametrize(
    ("level", "authority"),
    [(0, "Automated"), (1, "Operations"), (2, "VP Engineering"), (3, "Executive team"), (4, "CEO")],
)
def test_authority_comes_from_the_plan_defaults(level: int, authority: str) -> None:
    assert Levels().policy(level).authority == authority


LEVEL1 = replace(HEALTHY, primary_degraded=True)
LEVEL2 = replace(HEALTHY, primary_ok=False, primary_lost=True)


@pytest.mark.parametrize(
    ("facts", "elapsed_h", "level", "escalated"),
    [
        (LEVEL1, 1.0, 1, False),
        (LEVEL1, 4.0, 1, False),  # "up to 4 hours"
        (LEVEL1, 4.01, 2, True),
        (LEVEL1, 24.5, 3, True),  # beyond Level 2's 24 hours too
        (LEVEL2, 23.0, 2, False),
        (LEVEL2, 25.0, 3, True),
        (LEVEL2, 500.0, 3, True),  # Level 3 has no upper bound: never escalated to 4 by time
    ],
)
def test_an_incident_outlasting_its_level_escalates(
    facts: Facts, elapsed_h: float, level: int, escalated: bool
) -> None:
    c = assess_level(Levels(), facts, elapsed_h * 3600)
    assert (c.level, c.escalated) == (level, escalated)
    assert c.authority == Levels().policy(level).authority
    if escalated:
        assert c.reason == "ESCALATED_BY_DURATION"


def test_escalation_durations_come_from_config() -> None:
    levels = Levels(level2=LevelPolicy(authority="VP Eng", expected_duration=60.0))
    assert assess_level(levels, LEVEL2, 59.0).level == 2
    c = assess_level(levels, LEVEL2, 61.0)
    assert (c.level, c.authority) == (3, "Executive team")
    assert assess_level(levels, LEVEL2, None).level == 2  # no incident open: no escalation


def _obs(ok: bool) -> Observation:
    return Observation(
        target="x",
        kind=Kind.HTTP,
        ok=ok,
        started_at=0.0,
        latency=0.01,
        error=None if ok else "refused",
    )


def test_facts_from_a_tick() -> None:
    down = world("down")
    f = facts_from(down, None, rpo=60.0)
    assert f.primary_lost and not f.primary_ok
    assert classify(f)[0] == 2
    # Only the database probe fails in us-east: a component, not a region.
    assert all(r.failing < r.probes or r.probes < 2 for r in f.regions)

    lagging = world("ok", west=node(W, lag=120.0), eu=node(E))
    f = facts_from(lagging, None, rpo=60.0)
    assert f.replicas_beyond_rpo == 1
    assert classify(f)[1] == "REPLICA_BEYOND_RPO"

    held = facts_from(down, None, rpo=60.0, holding=True)
    assert classify(held)[0] == 3


def test_region_lost_needs_every_probe_of_the_region() -> None:
    down = world("down")
    ok_db = _obs(True)
    samples = tuple(
        NodeSample(node=n.node, database=ok_db, http=_obs(n.node.name != P.name))
        for n in down.nodes
    )
    snap = Snapshot(cycle=1, at=0.0, samples=samples)
    f = facts_from(down, snap, rpo=60.0)
    assert classify(f)[0] == 4  # database DOWN and HTTP health failing in us-east
    healthy_http = Snapshot(
        cycle=1,
        at=0.0,
        samples=tuple(NodeSample(node=n.node, database=ok_db, http=_obs(True)) for n in down.nodes),
    )
    assert classify(facts_from(down, healthy_http, rpo=60.0))[0] == 2
