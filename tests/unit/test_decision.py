"""Decision engine: transition table, candidate choice and safety invariants (hypothesis)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.decision import (
    Action,
    Controls,
    Decision,
    Memory,
    Settings,
    State,
    candidates,
    decide,
    failover_finished,
)
from orchestrator.model import Assessment, NodeHealth, NodeRef, RegionHealth, Verdict
from probes.base import Role

SET = Settings(rpo=60.0, cooldown=3600.0, region_order=("us-east", "us-west", "eu"))
P, W, E = NodeRef("us-east-1", "us-east"), NodeRef("us-west-1", "us-west"), NodeRef("eu-1", "eu")


def node(
    ref: NodeRef,
    verdict: Verdict = Verdict.HEALTHY,
    role: Role = Role.REPLICA,
    lag: float | None = 0.0,
    lag_bytes: int | None = 0,
    failures: int = 0,
    reason: str = "OK",
    timeline: int = 1,
) -> NodeHealth:
    return NodeHealth(
        node=ref,
        verdict=verdict,
        reason=reason,
        consecutive_failures=failures,
        role=role if failures == 0 else Role.UNKNOWN,
        last_role=role,
        lag_seconds=lag,
        lag_bytes=lag_bytes,
        timeline=timeline,
    )


def world(
    primary: str = "ok",
    confirmed: bool = True,
    west: NodeHealth | None = None,
    eu: NodeHealth | None = None,
    primary_name: str | None = "us-east-1",
) -> Assessment:
    if primary == "ok":
        p = node(P, role=Role.PRIMARY, lag=None, lag_bytes=None)
    elif primary == "suspect":
        p = node(P, Verdict.SUSPECT, Role.PRIMARY, None, None, failures=1, reason="PROBE_FAILED")
    else:
        p = node(P, Verdict.DOWN, Role.PRIMARY, None, None, failures=3, reason="NODE_DOWN:refused")
    nodes = (
        p,
        west or node(W, Verdict.DEGRADED, reason="REPLICATION_BROKEN"),
        eu or node(E, Verdict.DEGRADED, reason="REPLICATION_BROKEN"),
    )
    return Assessment(
        cycle=1,
        at=0.0,
        nodes=nodes,
        regions=tuple(RegionHealth(n.node.region, n.verdict, n.reason) for n in nodes),
        primary=primary_name,
        reason="X",
        sentence="x",
        primary_loss_confirmed=(primary == "down" and confirmed),
    )


NO_CONTROLS = Controls()


def step(
    mem: Memory, a: Assessment, now: float = 100.0, controls: Controls = NO_CONTROLS
) -> tuple[Decision, Memory]:
    return decide(mem, a, controls, SET, now)


@pytest.mark.parametrize(
    ("state", "primary", "confirmed", "expected_state", "action", "reason"),
    [
        (State.HEALTHY, "ok", True, State.HEALTHY, Action.NONE, "PRIMARY_HEALTHY"),
        (State.HEALTHY, "suspect", False, State.SUSPECT, Action.NONE, "PRIMARY_SUSPECT"),
        # a blip between the orchestrator and the primary: DOWN but the replicas still see it
        (State.HEALTHY, "down", False, State.SUSPECT, Action.NONE, "LOSS_UNCONFIRMED"),
        (State.SUSPECT, "down", True, State.FAILING_OVER, Action.FAILOVER, "PRIMARY_LOST"),
        (State.HEALTHY, "down", True, State.FAILING_OVER, Action.FAILOVER, "PRIMARY_LOST"),
        (State.SUSPECT, "ok", True, State.HEALTHY, Action.NONE, "PRIMARY_HEALTHY"),
        (State.FAILING_OVER, "down", True, State.FAILING_OVER, Action.NONE, "FAILOVER_IN_PROGRESS"),
        (State.HOLD, "ok", True, State.HEALTHY, Action.NONE, "PRIMARY_RECOVERED"),
        (State.HOLD, "down", True, State.HOLD, Action.NONE, "RPO_EXCEEDED"),
    ],
)
def test_transition_table(
    state: State,
    primary: str,
    confirmed: bool,
    expected_state: State,
    action: Action,
    reason: str,
) -> None:
    mem = Memory(state=state, reason="RPO_EXCEEDED" if state is State.HOLD else "X")
    d, m = step(mem, world(primary, confirmed))
    assert (d.state, d.action, d.reason) == (expected_state, action, reason)
    assert m.state is expected_state


def test_failover_picks_preferred_region_and_records_cooldown() -> None:
    d, m = step(Memory(), world("down"), now=500.0)
    assert d.action is Action.FAILOVER
    assert d.candidate is not None and d.candidate.node == "us-west-1"
    assert d.old_primary == "us-east-1"
    assert m.last_failover_at == 500.0 and m.last_failover_from == "us-east-1"
    assert "us-west-1" in d.sentence


def test_least_behind_breaks_ties_within_a_region_and_unhealthy_are_skipped() -> None:
    west = node(W, Verdict.DOWN, failures=3, reason="NODE_DOWN:timeout")
    d, _ = step(Memory(), world("down", west=west))
    assert d.candidate is not None and d.candidate.node == "eu-1"
    flapping = node(W, Verdict.DEGRADED, reason="NODE_FLAPPING")
    d, _ = step(Memory(), world("down", west=flapping))
    assert d.candidate is not None and d.candidate.node == "eu-1"


def test_excluded_nodes_are_never_candidates() -> None:
    s = replace(SET, excluded=frozenset({"us-west-1"}))
    assert [c.node for c in candidates(world("down"), s)] == ["eu-1"]


def test_rpo_guard_holds_and_prefers_a_replica_within_rpo() -> None:
    far = node(W, Verdict.DEGRADED, lag=75.0, lag_bytes=10**8, reason="REPLICATION_BROKEN")
    d, _ = step(Memory(), world("down", west=far))
    assert d.action is Action.FAILOVER and d.candidate is not None
    assert d.candidate.node == "eu-1"  # within the RPO beats region preference
    far_eu = node(E, Verdict.DEGRADED, lag=90.0, lag_bytes=10**8, reason="REPLICATION_BROKEN")
    d, m = step(Memory(), world("down", west=far, eu=far_eu))
    assert (d.state, d.action, d.reason) == (State.HOLD, Action.ESCALATE, "RPO_EXCEEDED")
    assert d.candidate is not None and d.candidate.node == "us-west-1"
    assert "75.0s" in d.sentence and "accept-data-loss" in d.sentence
    d2, _ = step(m, world("down", west=far, eu=far_eu), now=101)
    assert d2.action is Action.NONE and d2.state is State.HOLD  # escalated once


def test_unknown_lag_is_not_within_rpo() -> None:
    blind = node(W, Verdict.DEGRADED, lag=None, lag_bytes=None, reason="REPLICATION_BROKEN")
    blind_eu = node(E, Verdict.DEGRADED, lag=None, lag_bytes=None, reason="REPLICATION_BROKEN")
    d, _ = step(Memory(), world("down", west=blind, eu=blind_eu))
    assert d.reason == "RPO_EXCEEDED"


def test_unknown_lag_but_zero_bytes_behind_is_within_rpo() -> None:
    caught_up = node(W, Verdict.DEGRADED, lag=None, lag_bytes=0, reason="REPLICATION_BROKEN")
    d, _ = step(Memory(), world("down", west=caught_up))
    assert d.action is Action.FAILOVER and d.candidate is not None
    assert d.candidate.node == "us-west-1"


def test_no_candidate_holds() -> None:
    dead = node(W, Verdict.DOWN, failures=5, reason="NODE_DOWN:refused")
    dead_eu = node(E, Verdict.DOWN, failures=5, reason="NODE_DOWN:refused")
    d, _ = step(Memory(), world("down", west=dead, eu=dead_eu))
    assert (d.state, d.action, d.reason) == (State.HOLD, Action.ESCALATE, "NO_CANDIDATE")


def test_cooldown_blocks_a_second_automatic_failover_until_acknowledged() -> None:
    _, m = step(Memory(), world("down"), now=1000.0)
    m = failover_finished(m, ok=True, now=1010.0)
    assert m.state is State.COOLDOWN
    d, m = step(m, world("ok"), now=1100.0)
    assert (d.state, d.reason) == (State.COOLDOWN, "IN_COOLDOWN")
    d, m = step(m, world("down"), now=1200.0)
    assert (d.state, d.action, d.reason) == (State.HOLD, Action.ESCALATE, "IN_COOLDOWN")
    d, m = step(m, world("down"), now=1201.0)
    assert d.action is Action.NONE
    ack = Controls(acked_at=1300.0)
    d, m = step(m, world("down"), now=1301.0, controls=ack)
    assert d.action is Action.FAILOVER


def test_cooldown_expires() -> None:
    _, m = step(Memory(), world("down"), now=0.0)
    m = failover_finished(m, ok=True, now=5.0)
    d, m = step(m, world("ok"), now=3700.0)
    assert d.state is State.HEALTHY
    d, _ = step(m, world("down"), now=3800.0)
    assert d.action is Action.FAILOVER


def test_failed_failover_holds() -> None:
    _, m = step(Memory(), world("down"), now=0.0)
    m = failover_finished(m, ok=False, now=5.0)
    d, _ = step(m, world("down"), now=6.0)
    assert d.state is State.HOLD and d.action is Action.NONE


def test_pause_and_resume() -> None:
    d, m = step(Memory(), world("down"), controls=Controls(paused=True))
    assert (d.state, d.action) == (State.PAUSED, Action.NONE)
    d, _ = step(m, world("down"))
    assert d.action is Action.FAILOVER


def test_no_primary_escalates_once() -> None:
    d, m = step(Memory(), world("ok", primary_name=None))
    assert (d.state, d.action, d.reason) == (State.HOLD, Action.ESCALATE, "NO_PRIMARY")
    d, _ = step(m, world("ok", primary_name=None))
    assert d.action is Action.NONE


def test_stale_primary_on_older_timeline_is_demoted() -> None:
    a = world("ok", west=node(W, role=Role.PRIMARY, lag=None, timeline=2))
    d, _ = step(Memory(), a)
    assert d.demote == ("us-east-1",)


# --- properties -----------------------------------------------------------------------------

primary_states = st.sampled_from(["ok", "suspect", "down"])
lags = st.one_of(st.none(), st.floats(min_value=0, max_value=200))
verdicts = st.sampled_from([Verdict.HEALTHY, Verdict.DEGRADED, Verdict.SUSPECT, Verdict.DOWN])


@st.composite
def ticks(draw: st.DrawFn) -> tuple[Assessment, Controls, float]:
    p = draw(primary_states)
    west = node(W, draw(verdicts), lag=draw(lags), failures=draw(st.sampled_from([0, 0, 1])))
    eu = node(E, draw(verdicts), lag=draw(lags))
    controls = Controls(
        paused=draw(st.booleans()) and draw(st.booleans()),
        acked_at=draw(st.one_of(st.none(), st.floats(0, 20000))),
    )
    return world(p, draw(st.booleans()), west=west, eu=eu), controls, draw(st.floats(1, 600))


@settings(max_examples=300, deadline=None)
@given(st.lists(ticks(), min_size=1, max_size=30))
def test_safety_invariants(seq: list[tuple[Assessment, Controls, float]]) -> None:
    mem, now = Memory(), 0.0
    failovers: list[tuple[float, float | None]] = []
    for a, controls, dt in seq:
        now += dt
        d, new = decide(mem, a, controls, SET, now)
        if d.action is Action.FAILOVER:
            # never without a confirmed loss, never while paused, never beyond the RPO
            assert a.primary_loss_confirmed
            assert not controls.paused
            assert d.candidate is not None and d.candidate.within_rpo
            c = d.candidate
            assert (c.lag_seconds is not None and c.lag_seconds <= SET.rpo) or (
                c.lag_seconds is None and c.lag_bytes == 0
            )
            # never the old primary, never an unreachable node
            assert d.candidate.node != a.primary
            cand = a.node(d.candidate.node)
            assert cand.verdict in (Verdict.HEALTHY, Verdict.DEGRADED)
            assert cand.consecutive_failures == 0
            # at most one automatic failover per cooldown, unless acknowledged since
            if failovers:
                last_at, _ = failovers[-1]
                assert now - last_at >= SET.cooldown or (
                    controls.acked_at is not None and controls.acked_at >= last_at
                )
            failovers.append((now, controls.acked_at))
            new = failover_finished(new, ok=True, now=now)
        mem = new
