"""The node agent's decision table (orchestrator.agentlogic): every row, the helpers, and the
invariants (never a rejoin of a primary, never a fence of a confirmed primary in contact)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.agentlogic import (
    ActionKind,
    CurrentPrimary,
    LocalRole,
    Reason,
    View,
    accept_primary,
    decide,
    fence_deadline,
    heartbeat,
    is_stale,
    published_role,
    rejoin_backoff,
    remembered_role,
    still_fenced,
    track_conflict,
    track_down,
)

ME, WEST, EU = "us-east-1", "us-west-1", "eu-1"
NODES = frozenset({ME, WEST, EU})
FENCE_AFTER = 3.0
NOW = 100.0
P, R, D, X = LocalRole.PRIMARY, LocalRole.REPLICA, LocalRole.DETACHED, LocalRole.DOWN
NAMED_ME = CurrentPrimary(ME, "us-east", 4, 1.0)
NAMED_WEST = CurrentPrimary(WEST, "us-west", 5, 2.0)
RUN_WEST = CurrentPrimary(WEST, "us-west", 5, 2.0, run="run-7")


def view(role: LocalRole = P, **kw: Any) -> View:
    base = View(
        node=ME,
        role=role,
        now=NOW,
        contact_at=NOW - 0.5,
        quorum_ok=True,
        fence_after=FENCE_AFTER,
        primary=NAMED_ME,
        known_nodes=NODES,
    )
    return replace(base, **kw)


STALE = {"contact_at": NOW - FENCE_AFTER, "quorum_ok": False}
NEVER = {"contact_at": None, "quorum_ok": False}

CASES: list[tuple[str, View, ActionKind, Reason]] = [
    # --- cut off from the quorum -------------------------------------------------------------
    ("1 stale primary fences itself", view(P, **STALE), ActionKind.FENCE, Reason.SELF_FENCED),
    ("1 no contact since start", view(P, **NEVER), ActionKind.FENCE, Reason.SELF_FENCED),
    (
        "1 stale primary fenced before fences again",
        view(P, fenced=True, **STALE),
        ActionKind.FENCE,
        Reason.SELF_FENCED,
    ),
    (
        "2 stale down old primary",
        view(X, last_role=P, **STALE),
        ActionKind.FENCE,
        Reason.SELF_FENCED,
    ),
    ("2 stale down never seen", view(X, **NEVER), ActionKind.FENCE, Reason.SELF_FENCED),
    (
        "3 stale down replica",
        view(X, last_role=R, **STALE),
        ActionKind.NONE,
        Reason.NO_QUORUM,
    ),
    (
        "3 stale down already fenced",
        view(X, fenced=True, last_role=P, **STALE),
        ActionKind.NONE,
        Reason.NO_QUORUM,
    ),
    ("3 stale replica", view(R, **STALE), ActionKind.NONE, Reason.NO_QUORUM),
    ("3 stale detached", view(D, **NEVER), ActionKind.NONE, Reason.NO_QUORUM),
    # --- contact failing, not stale yet ------------------------------------------------------
    (
        "4 grace just below fence_after",
        view(P, contact_at=NOW - FENCE_AFTER + 0.01, quorum_ok=False),
        ActionKind.NONE,
        Reason.QUORUM_GRACE,
    ),
    (
        "4 grace: no rejoin on an unconfirmed document",
        view(X, fenced=True, primary=NAMED_WEST, quorum_ok=False),
        ActionKind.NONE,
        Reason.QUORUM_GRACE,
    ),
    # --- in contact --------------------------------------------------------------------------
    ("5 no document", view(P, primary=None), ActionKind.NONE, Reason.NO_PRIMARY_DOC),
    (
        "5 no document, fenced stays fenced",
        view(X, primary=None, fenced=True),
        ActionKind.NONE,
        Reason.NO_PRIMARY_DOC,
    ),
    ("6 confirmed primary", view(P), ActionKind.NONE, Reason.PRIMARY_CONFIRMED),
    ("7 named but a replica", view(R), ActionKind.NONE, Reason.NAMED_NOT_PRIMARY),
    (
        "7 named but fenced: never started as a primary",
        view(X, fenced=True),
        ActionKind.NONE,
        Reason.NAMED_NOT_PRIMARY,
    ),
    (
        "8 unknown node named",
        view(P, primary=CurrentPrimary("mars-1", "mars", 9, 0.0)),
        ActionKind.NONE,
        Reason.UNKNOWN_PRIMARY,
    ),
    (
        "9 a run in flight: superseded primary left to the runbook",
        view(P, primary=RUN_WEST, conflict_since=NOW - 60),
        ActionKind.NONE,
        Reason.LEADER_RUN,
    ),
    (
        "9 a run in flight: fenced node not rejoined",
        view(X, primary=RUN_WEST, fenced=True),
        ActionKind.NONE,
        Reason.LEADER_RUN,
    ),
    (
        "9 a run in flight: stopped old primary not fenced",
        view(X, primary=RUN_WEST, last_role=P, down_since=NOW - 60),
        ActionKind.NONE,
        Reason.LEADER_RUN,
    ),
    (
        "1 a run in flight never stops the self-fence",
        view(P, primary=RUN_WEST, **STALE),
        ActionKind.FENCE,
        Reason.SELF_FENCED,
    ),
    (
        "19 a run in flight, a streaming replica",
        view(R, primary=RUN_WEST),
        ActionKind.NONE,
        Reason.REPLICA_OK,
    ),
    (
        "10 superseded for fence_after",
        view(P, primary=NAMED_WEST, conflict_since=NOW - FENCE_AFTER),
        ActionKind.FENCE,
        Reason.SUPERSEDED,
    ),
    (
        "10 superseded after its own fence: at once",
        view(P, primary=NAMED_WEST, fenced=True, conflict_since=NOW),
        ActionKind.FENCE,
        Reason.SUPERSEDED,
    ),
    (
        "11 superseded, just promoted?",
        view(P, primary=NAMED_WEST, conflict_since=NOW - 1.0),
        ActionKind.NONE,
        Reason.SUPERSEDED_GRACE,
    ),
    (
        "11 superseded, first sight",
        view(P, primary=NAMED_WEST),
        ActionKind.NONE,
        Reason.SUPERSEDED_GRACE,
    ),
    (
        "12 fenced, no rejoin_command",
        view(X, primary=NAMED_WEST, fenced=True, can_rejoin=False),
        ActionKind.NONE,
        Reason.REJOIN_UNAVAILABLE,
    ),
    (
        "13 fenced, backing off",
        view(X, primary=NAMED_WEST, fenced=True, rejoin_not_before=NOW + 1),
        ActionKind.NONE,
        Reason.REJOIN_BACKOFF,
    ),
    (
        "14 fenced and down: rejoin",
        view(X, primary=NAMED_WEST, fenced=True, rejoin_not_before=NOW),
        ActionKind.REJOIN,
        Reason.REJOIN,
    ),
    (
        "14 fenced and detached: rejoin",
        view(D, primary=NAMED_WEST, fenced=True, last_role=R),
        ActionKind.REJOIN,
        Reason.REJOIN,
    ),
    (
        "15 down old primary, not fenced, for fence_after",
        view(X, primary=NAMED_WEST, last_role=P, down_since=NOW - FENCE_AFTER),
        ActionKind.FENCE,
        Reason.STALE_PRIMARY,
    ),
    (
        "15 down, never seen, for fence_after",
        view(X, primary=NAMED_WEST, down_since=NOW - FENCE_AFTER - 5),
        ActionKind.FENCE,
        Reason.STALE_PRIMARY,
    ),
    (
        "16 down old primary, left to the orchestrator for a while",
        view(X, primary=NAMED_WEST, last_role=P, down_since=NOW - 1),
        ActionKind.NONE,
        Reason.STALE_PRIMARY_GRACE,
    ),
    (
        "16 down, first sight",
        view(X, primary=NAMED_WEST),
        ActionKind.NONE,
        Reason.STALE_PRIMARY_GRACE,
    ),
    (
        "17 down replica",
        view(X, primary=NAMED_WEST, last_role=R),
        ActionKind.NONE,
        Reason.DOWN_REPLICA,
    ),
    (
        "18 detached standby, not fenced",
        view(D, primary=NAMED_WEST, last_role=P),
        ActionKind.NONE,
        Reason.REPLICA_DETACHED,
    ),
    ("19 streaming replica", view(R, primary=NAMED_WEST), ActionKind.NONE, Reason.REPLICA_OK),
    # --- the leader cannot reach the node and asks its agent to fence it -----------------------
    (
        "20 fence requested, primary",
        view(P, fence_requested=4),
        ActionKind.FENCE,
        Reason.FENCE_REQUESTED,
    ),
    (
        "20 fence requested, down old primary",
        view(X, last_role=P, fence_requested=4),
        ActionKind.FENCE,
        Reason.FENCE_REQUESTED,
    ),
    (
        "21 fence requested, already fenced",
        view(X, fenced=True, last_role=P, fence_requested=4),
        ActionKind.NONE,
        Reason.NAMED_NOT_PRIMARY,
    ),
    (
        "21 fence requested, a replica has nothing to fence",
        view(R, primary=NAMED_WEST, fence_requested=5),
        ActionKind.NONE,
        Reason.REPLICA_OK,
    ),
]


@pytest.mark.parametrize(("name", "v", "action", "reason"), CASES, ids=[c[0] for c in CASES])
def test_decision_table(name: str, v: View, action: ActionKind, reason: Reason) -> None:
    d = decide(v)
    assert (d.action, d.reason) == (action, reason), d.sentence
    assert d.sentence
    if action is ActionKind.REJOIN:
        assert d.upstream == v.primary.node if v.primary else False
    else:
        assert d.upstream is None


def test_every_reason_has_a_row() -> None:
    assert {c[3] for c in CASES} == set(Reason)


def test_self_fence_sentence_says_how_long() -> None:
    d = decide(view(P, contact_at=NOW - 3.4, quorum_ok=False))
    assert "no quorum contact for 3.4s" in d.sentence
    assert "fence_after 3s" in d.sentence
    assert "no quorum contact since the agent started" in decide(view(P, **NEVER)).sentence


def test_staleness_boundary() -> None:
    assert not is_stale(NOW - FENCE_AFTER + 1e-6, NOW, FENCE_AFTER)
    assert is_stale(NOW - FENCE_AFTER, NOW, FENCE_AFTER)
    assert is_stale(None, NOW, FENCE_AFTER)
    assert fence_deadline(NOW, FENCE_AFTER) == NOW + FENCE_AFTER
    assert fence_deadline(None, FENCE_AFTER) is None


@pytest.mark.parametrize(
    ("since", "role", "primary", "expected"),
    [
        (None, P, NAMED_WEST, NOW),  # starts now
        (90.0, P, NAMED_WEST, 90.0),  # kept
        (90.0, P, NAMED_ME, None),  # named again
        (90.0, X, NAMED_WEST, None),  # no longer a primary
        (90.0, P, None, None),  # no document
    ],
)
def test_track_conflict(
    since: float | None, role: LocalRole, primary: CurrentPrimary | None, expected: float | None
) -> None:
    assert track_conflict(since, role, primary, ME, NOW) == expected


def test_track_down() -> None:
    assert track_down(None, X, NOW) == NOW
    assert track_down(90.0, X, NOW) == 90.0
    assert track_down(90.0, D, NOW) is None
    assert track_down(None, P, NOW) is None


@pytest.mark.parametrize(
    ("fenced", "role", "primary", "expected"),
    [
        (True, R, NAMED_WEST, False),  # seen streaming: rejoined
        (True, D, NAMED_WEST, True),
        (True, X, NAMED_WEST, True),
        (True, P, NAMED_WEST, True),  # a primary beside the named one stays fenced (row 9)
        (True, P, NAMED_ME, False),  # the leader made it primary again
        (True, P, None, True),
        (False, P, NAMED_ME, False),
    ],
)
def test_still_fenced(
    fenced: bool, role: LocalRole, primary: CurrentPrimary | None, expected: bool
) -> None:
    assert still_fenced(fenced, role, primary, ME) is expected


@pytest.mark.parametrize(
    ("last", "role", "expected"),
    [(None, P, P), (P, D, R), (P, R, R), (P, X, P), (R, X, R), (None, X, None)],
)
def test_remembered_role(last: LocalRole | None, role: LocalRole, expected: LocalRole) -> None:
    assert remembered_role(last, role) == expected


def test_rejoin_backoff_grows_and_is_capped() -> None:
    assert [rejoin_backoff(n) for n in range(1, 7)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"node": WEST, "region": "us-west", "epoch": 5, "at": 2}, NAMED_WEST),
        ({"node": WEST}, CurrentPrimary(WEST, "", 0, 0.0)),
        ({"node": WEST, "region": "us-west", "epoch": 5, "at": 2.0, "run": "run-7"}, RUN_WEST),
        ({"node": WEST, "run": None, "by": "x"}, CurrentPrimary(WEST, "", 0, 0.0)),
        (None, None),
        ({}, None),
        ({"node": ""}, None),
        ({"node": 3}, None),
        ({"node": WEST, "epoch": "5"}, None),
        ({"node": WEST, "epoch": True}, None),
        ({"node": WEST, "at": float("nan")}, None),
    ],
)
def test_current_primary_document(doc: dict[str, Any] | None, expected: Any) -> None:
    assert CurrentPrimary.from_document(doc) == expected


def test_an_older_epoch_is_not_accepted() -> None:
    assert accept_primary(None, NAMED_ME)
    assert accept_primary(4, NAMED_ME)
    assert not accept_primary(5, NAMED_ME)
    assert not accept_primary(None, None)


def test_heartbeat_document() -> None:
    d = decide(view(P))
    doc = heartbeat(
        node=ME,
        region="us-east",
        role=D,
        fenced=True,
        fenced_at=12.5,
        fence_reason="SELF_FENCED",
        decision=d,
        primary=NAMED_ME,
        at=1000.0,
    )
    assert doc == {
        "node": ME,
        "region": "us-east",
        "role": "replica",
        "streaming": False,
        "fenced": True,
        "fenced_at": 12.5,
        "fence_reason": "SELF_FENCED",
        "reason": "PRIMARY_CONFIRMED",
        "sentence": d.sentence,
        "primary": ME,
        "epoch": 4,
        "at": 1000.0,
    }
    assert [published_role(r) for r in (P, R, D, X)] == ["primary", "replica", "replica", "down"]


roles = st.sampled_from(list(LocalRole))
maybe_role = st.one_of(st.none(), st.sampled_from([P, R]))
primaries = st.sampled_from(
    [None, NAMED_ME, NAMED_WEST, RUN_WEST, CurrentPrimary("mars-1", "", 1, 0)]
)
times = st.one_of(st.none(), st.floats(min_value=0, max_value=NOW))


@given(
    role=roles,
    contact_at=times,
    quorum_ok=st.booleans(),
    primary=primaries,
    fenced=st.booleans(),
    last_role=maybe_role,
    conflict_since=times,
    down_since=times,
    rejoin_not_before=times,
    can_rejoin=st.booleans(),
)
def test_invariants(**kw: Any) -> None:
    v = view(**kw)
    d = decide(v)
    stale = is_stale(v.contact_at, v.now, v.fence_after)
    # A writable primary cut off from the quorum is always fenced.
    if stale and v.role is P:
        assert d.action is ActionKind.FENCE
    # A primary is never rejoined; a rejoin needs a fresh check, a fence record and a named
    # other node from the configuration.
    if d.action is ActionKind.REJOIN:
        assert v.role in (X, D) and v.fenced and v.quorum_ok and not stale
        assert v.primary is not None and d.upstream == v.primary.node != ME
        assert d.upstream in NODES
    # The primary the leader names, in contact, is never fenced.
    if not stale and v.primary == NAMED_ME and v.role is P:
        assert d.action is ActionKind.NONE
    # While the leader's run is in flight, only the self-fence acts.
    if v.primary is not None and v.primary.run is not None and not stale:
        assert d.action is ActionKind.NONE
    # A streaming replica is never touched.
    if v.role is R:
        assert d.action is ActionKind.NONE
