"""Heartbeat lag arithmetic and the status document / table."""

from __future__ import annotations

import pytest

from orchestrator import lag, status
from orchestrator.health import HealthSettings, assess
from orchestrator.model import NodeRef, NodeSample, Snapshot, Topology
from probes.base import DatabaseState, ErrorClass, Heartbeat, Kind, Observation, Role


def replica(seq: int | None, written_at: float = 100.0, replay: int | None = 5000) -> DatabaseState:
    hb = Heartbeat(seq, written_at) if seq is not None else None
    return DatabaseState(
        role=Role.REPLICA,
        replay_lsn=replay,
        receive_lsn=replay,
        wal_receiver_status="streaming",
        heartbeat=hb,
    )


PRIMARY = DatabaseState(role=Role.PRIMARY, current_lsn=9000, heartbeat=Heartbeat(42, 110.0))
MARK = lag.mark_of("p", PRIMARY, at=111.0)


@pytest.mark.parametrize(
    ("state", "ref", "now", "expected"),
    [
        # replayed the primary's latest heartbeat: 0 s even if the database is idle for ages
        (replica(42, written_at=110.0), MARK, 500.0, 0.0),
        (replica(43, written_at=111.0), MARK, 500.0, 0.0),
        # behind: time since the newest heartbeat it has replayed (conservative bound)
        (replica(40, written_at=108.0), MARK, 111.0, 3.0),
        # the primary was last seen at 111: the lag is frozen at the moment of loss
        (replica(40, written_at=108.0), MARK, 500.0, 3.0),
        # no heartbeat row replicated yet, or no primary reference yet: not measurable
        (replica(None), MARK, 111.0, None),
        (replica(40), None, 111.0, None),
        (replica(40), lag.PrimaryMark("p", None, 100, 1.0), 111.0, None),
        # a primary has no replication lag
        (PRIMARY, MARK, 111.0, None),
    ],
)
def test_lag_seconds(
    state: DatabaseState, ref: lag.PrimaryMark | None, now: float, expected: float | None
) -> None:
    assert lag.lag_seconds(state, ref, now) == expected


def test_lag_seconds_never_negative_with_clock_step_back() -> None:
    assert lag.lag_seconds(replica(40, written_at=200.0), MARK, 150.0) == 0.0


def test_lag_bytes() -> None:
    assert lag.lag_bytes(replica(1, replay=5000), MARK) == 4000
    assert lag.lag_bytes(replica(1, replay=9500), MARK) == 0  # replica ahead of a stale mark
    assert lag.lag_bytes(replica(1, replay=None), MARK) is None
    assert lag.lag_bytes(replica(1), None) is None
    assert lag.lag_bytes(PRIMARY, MARK) is None


TOPO = Topology(
    service="svc",
    regions=("us-east", "eu"),
    nodes=(NodeRef("us-east-1", "us-east"), NodeRef("eu-1", "eu")),
    rpo=60.0,
    rto=300.0,
)


def test_status_document_and_table() -> None:
    ok_primary = Observation("us-east-1", Kind.POSTGRES, True, 100.0, 0.002, database=PRIMARY)
    down = Observation(
        "eu-1",
        Kind.POSTGRES,
        False,
        100.0,
        0.8,
        error_class=ErrorClass.TIMEOUT,
        error="no answer within 0.8s",
    )
    snap = Snapshot(
        1, 100.0, (NodeSample(TOPO.nodes[0], ok_primary), NodeSample(TOPO.nodes[1], down))
    )
    a = assess(None, snap, TOPO, HealthSettings())
    doc = status.build_status(TOPO, a, snap, "daemon", {"us-east": 1, "eu": 2})
    assert doc["primary"] == {"node": "us-east-1", "region": "us-east"}
    assert doc["regions"][1]["nodes"][0]["error_class"] == "timeout"
    assert doc["regions"][1]["verdict"] == "suspect"
    assert doc["regions"][0]["priority"] == 1
    table = status.render_table(doc)
    lines = table.splitlines()
    assert lines[0].startswith("service svc")
    header = next(i for i, line in enumerate(lines) if line.startswith("REGION "))
    assert "us-east" in lines[header + 1] and "HEALTHY" in lines[header + 1]
    assert "eu" in lines[header + 2] and "SUSPECT" in lines[header + 2]
    assert "no answer within 0.8s" in lines[header + 2]


def test_status_rpo_percentage() -> None:
    rep = Observation("eu-1", Kind.POSTGRES, True, 100.0, 0.002, database=replica(40))
    ok_primary = Observation("us-east-1", Kind.POSTGRES, True, 100.0, 0.002, database=PRIMARY)
    snap = Snapshot(
        1,
        100.0,
        (
            NodeSample(TOPO.nodes[0], ok_primary),
            NodeSample(TOPO.nodes[1], rep, lag_seconds=15.0, lag_bytes=10),
        ),
    )
    a = assess(None, snap, TOPO, HealthSettings())
    doc = status.build_status(TOPO, a, snap, "probe")
    node = doc["regions"][1]["nodes"][0]
    assert node["rpo_used_pct"] == 25.0
    assert node["lag_bytes"] == 10
    assert "25.0%" in status.render_table(doc)
