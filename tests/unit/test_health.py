"""Health model: table-driven sequences of probe results -> verdicts, with hysteresis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.health import HealthSettings, assess, assess_all
from orchestrator.model import NodeRef, NodeSample, Snapshot, Topology, Verdict
from probes.base import DatabaseState, ErrorClass, Heartbeat, Kind, Observation, Role

TOPO = Topology(
    service="svc",
    regions=("us-east", "us-west", "eu"),
    nodes=(
        NodeRef("us-east-1", "us-east"),
        NodeRef("us-west-1", "us-west"),
        NodeRef("eu-1", "eu"),
    ),
    rpo=60.0,
    rto=300.0,
)
SETTINGS = HealthSettings(failure_threshold=3, recovery_threshold=3, flap_window=10, flap_changes=4)


def obs(
    node: str,
    ok: bool = True,
    role: Role = Role.REPLICA,
    receiver: str | None = "streaming",
    paused: bool = False,
    silence: float | None = 0.1,
    timeline: int = 1,
    error: ErrorClass = ErrorClass.REFUSED,
) -> Observation:
    if not ok:
        return Observation(
            target=node,
            kind=Kind.POSTGRES,
            ok=False,
            started_at=0.0,
            latency=0.01,
            error_class=error,
            error="boom",
        )
    if role is Role.PRIMARY:
        db = DatabaseState(
            role=role, timeline=timeline, current_lsn=1000, heartbeat=Heartbeat(5, 0)
        )
    else:
        db = DatabaseState(
            role=role,
            timeline=timeline,
            receive_lsn=1000,
            replay_lsn=1000,
            wal_receiver_status=receiver,
            replay_paused=paused,
            wal_receiver_last_msg_age=silence,
            heartbeat=Heartbeat(5, 0),
        )
    return Observation(
        target=node, kind=Kind.POSTGRES, ok=True, started_at=0.0, latency=0.01, database=db
    )


def snap(cycle: int, primary_ok: bool = True, **overrides: Observation) -> Snapshot:
    """A snapshot with us-east-1 primary and two replicas, each replaceable by keyword."""
    base = {
        "us-east-1": obs("us-east-1", ok=primary_ok, role=Role.PRIMARY),
        "us-west-1": obs("us-west-1"),
        "eu-1": obs("eu-1"),
    }
    base.update({k.replace("_", "-"): v for k, v in overrides.items()})
    lags = {"us-west-1": 0.0, "eu-1": 0.0}
    samples = tuple(
        NodeSample(
            node=ref,
            database=base[ref.name],
            lag_seconds=lags.get(ref.name) if base[ref.name].ok else None,
            lag_bytes=0 if ref.name in lags and base[ref.name].ok else None,
        )
        for ref in TOPO.nodes
    )
    return Snapshot(cycle=cycle, at=float(cycle), samples=samples)


def run(pattern: str, settings: HealthSettings = SETTINGS) -> list[Verdict]:
    """Feed a pattern of primary probe results ('+' ok, '-' failed); verdict after each tick."""
    verdicts = []
    prev = None
    for i, ch in enumerate(pattern, start=1):
        prev = assess(prev, snap(i, primary_ok=ch == "+"), TOPO, settings)
        verdicts.append(prev.node("us-east-1").verdict)
    return verdicts


H, D, S, DG = Verdict.HEALTHY, Verdict.DOWN, Verdict.SUSPECT, Verdict.DEGRADED


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("+", [H]),
        ("+++", [H, H, H]),
        # failures below the threshold are SUSPECT, the threshold-th is DOWN
        ("+-", [H, S]),
        ("+--", [H, S, S]),
        ("+---", [H, S, S, D]),
        ("+-----", [H, S, S, D, D, D]),
        # a single blip recovers at once (it never reached DOWN)
        ("+-+", [H, S, H]),
        ("+--+", [H, S, S, H]),
        # hysteresis: DOWN needs recovery_threshold good probes in a row
        ("+---+", [H, S, S, D, D]),
        ("+---++", [H, S, S, D, D, D]),
        ("+---+++", [H, S, S, D, D, D, H]),
        # a failure while recovering restarts the count; the node comes back DEGRADED because
        # it changed between up and down 4 times within the window (flapping)
        ("+---++-+++", [H, S, S, D, D, D, D, D, D, DG]),
        # ... and HEALTHY once fewer than 4 changes remain in the last 10 ticks
        ("+---++-++++", [H, S, S, D, D, D, D, D, D, DG, H]),
        # never observed healthy: failing from the start still counts towards DOWN
        ("---", [S, S, D]),
    ],
)
def test_primary_verdict_sequences(pattern: str, expected: list[Verdict]) -> None:
    assert run(pattern) == expected


def test_flapping_never_goes_down_but_is_degraded() -> None:
    verdicts = run("+-+-+-+-+-")
    assert D not in verdicts
    # once 4 up/down changes sit in the window, the good ticks are DEGRADED (flapping)
    assert verdicts[-2] == DG
    assert verdicts[-1] == S


def test_flapping_settles_after_window() -> None:
    verdicts = run("+-+-+-" + "+" * 10)
    assert verdicts[-1] == H
    assert DG in verdicts


def test_threshold_one_goes_down_at_first_failure() -> None:
    s = HealthSettings(failure_threshold=1, recovery_threshold=1)
    assert run("+-+", s) == [H, D, H]


def reference_down(results: list[bool], fail_n: int = 3, recover_n: int = 3) -> list[bool]:
    """The hysteresis rule written the simplest way: DOWN after fail_n failures in a row, and
    back up only after recover_n successes in a row."""
    out, down, fails, oks = [], False, 0, 0
    for r in results:
        fails, oks = (0, oks + 1) if r else (fails + 1, 0)
        if fails >= fail_n:
            down = True
        elif down and oks >= recover_n:
            down = False
        out.append(down)
    return out


@given(st.lists(st.booleans(), min_size=1, max_size=40))
def test_down_matches_the_hysteresis_rule(results: list[bool]) -> None:
    verdicts = run("".join("+" if r else "-" for r in results))
    expected_down = reference_down(results)
    for r, v, down in zip(results, verdicts, expected_down, strict=True):
        assert (v is D) == down
        if not down:
            assert v in ((H, DG) if r else (S,))


def test_replica_conditions_degrade() -> None:
    cases = {
        "REPLAY_PAUSED": obs("us-west-1", paused=True),
        "REPLICATION_BROKEN": obs("us-west-1", receiver=None),
    }
    for reason, o in cases.items():
        a = assess(None, snap(1, us_west_1=o), TOPO, SETTINGS)
        assert a.node("us-west-1").verdict is DG
        assert a.node("us-west-1").reason == reason
        assert a.region("us-west").verdict is DG


def test_lag_beyond_rpo_degrades_and_is_the_tick_reason() -> None:
    s = snap(1)
    samples = tuple(
        NodeSample(node=x.node, database=x.database, lag_seconds=75.0, lag_bytes=10)
        if x.node.name == "eu-1"
        else x
        for x in s.samples
    )
    a = assess(None, Snapshot(1, 1.0, samples), TOPO, SETTINGS)
    assert a.node("eu-1").verdict is DG
    assert a.node("eu-1").reason == "LAG_BEYOND_RPO"
    assert a.reason == "LAG_BEYOND_RPO"
    assert "eu" in a.sentence


def test_all_healthy_reason_and_sentence() -> None:
    a = assess(None, snap(1), TOPO, SETTINGS)
    assert a.reason == "ALL_HEALTHY"
    assert a.primary == "us-east-1"
    assert a.primary_region == "us-east"
    assert [r.verdict for r in a.regions] == [H, H, H]
    assert a.sentence.startswith("All 3 regions healthy")


def test_primary_down_reason_and_last_known_primary() -> None:
    a = assess_all([snap(1), *(snap(i, primary_ok=False) for i in range(2, 5))], TOPO, SETTINGS)
    assert a is not None
    assert a.primary == "us-east-1"  # last known, while unreachable
    assert a.node("us-east-1").last_role is Role.PRIMARY
    assert a.reason == "PRIMARY_DOWN"
    assert a.region("us-east").verdict is D
    assert "refused" in a.sentence


def test_primary_loss_confirmed_only_when_replicas_lost_it() -> None:
    lost = obs("us-west-1", receiver=None), obs("eu-1", receiver="waiting")
    still = obs("us-west-1"), obs("eu-1", receiver=None)
    silent = obs("us-west-1", silence=30.0), obs("eu-1", silence=30.0)
    a = assess(None, snap(1, primary_ok=False, us_west_1=lost[0], eu_1=lost[1]), TOPO, SETTINGS)
    assert a.primary_loss_confirmed is False  # no primary known yet
    prev = assess(None, snap(1), TOPO, SETTINGS)
    a = assess(prev, snap(2, primary_ok=False, us_west_1=lost[0], eu_1=lost[1]), TOPO, SETTINGS)
    assert a.primary_loss_confirmed is True
    b = assess(prev, snap(2, primary_ok=False, us_west_1=still[0], eu_1=still[1]), TOPO, SETTINGS)
    assert b.primary_loss_confirmed is False
    c = assess(prev, snap(2, primary_ok=False, us_west_1=silent[0], eu_1=silent[1]), TOPO, SETTINGS)
    assert c.primary_loss_confirmed is True
    d = assess(prev, snap(2, primary_ok=True, us_west_1=lost[0], eu_1=lost[1]), TOPO, SETTINGS)
    assert d.primary_loss_confirmed is False  # the primary itself answers


def test_split_brain_is_reported() -> None:
    s = snap(1, us_west_1=obs("us-west-1", role=Role.PRIMARY, timeline=2))
    a = assess(None, s, TOPO, SETTINGS)
    assert a.reason == "SPLIT_BRAIN"
    assert a.node("us-east-1").reason == "MULTIPLE_PRIMARIES"
    assert a.primary == "us-west-1"  # newest timeline wins when nothing was known before


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([H, H], H),
        ([D, D], D),
        ([H, D], DG),
        ([DG, D], DG),
        ([S, D], S),
        ([Verdict.UNKNOWN, D], D),
        ([Verdict.UNKNOWN, Verdict.UNKNOWN], Verdict.UNKNOWN),
    ],
)
def test_region_aggregation(verdicts: list[Verdict], expected: Verdict) -> None:
    from orchestrator.health import _region
    from orchestrator.model import NodeHealth

    nodes = [
        NodeHealth(node=NodeRef(f"n{i}", "r"), verdict=v, reason="X")
        for i, v in enumerate(verdicts)
    ]
    assert _region("r", nodes).verdict is expected


def test_verdict_since_is_kept_while_unchanged() -> None:
    a1 = assess(None, snap(1), TOPO, SETTINGS)
    a2 = assess(a1, snap(2), TOPO, SETTINGS)
    a3 = assess(a2, snap(3, primary_ok=False), TOPO, SETTINGS)
    assert a2.node("us-east-1").since == 1.0
    assert a3.node("us-east-1").since == 3.0
