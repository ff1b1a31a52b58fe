"""Decision engine: a pure transition table from (state, what the tick saw) to (next state,
action, reason code). No asyncio, no I/O, no clock: ``now`` is an argument.

Conditions a tick can show about the primary (:class:`Seen`):

* ``PRIMARY_OK``        - the primary answers (HEALTHY or DEGRADED).
* ``PRIMARY_SUSPECT``   - it missed probes, or it is DOWN but the replicas still see it (a blip
  between the orchestrator and the primary alone never fails over).
* ``PRIMARY_LOST``      - DOWN after the failure threshold AND every reachable replica lost it.
* ``NO_PRIMARY``        - no primary was ever seen.

The table (``*`` = any state except PAUSED and FAILING_OVER):

=================  ===============  ============  ==========  ====================
state              seen             next          action      reason
=================  ===============  ============  ==========  ====================
any                (paused)         PAUSED        none        PAUSED
FAILING_OVER       any              FAILING_OVER  none        FAILOVER_IN_PROGRESS
HEALTHY/SUSPECT    PRIMARY_OK       HEALTHY       none        PRIMARY_HEALTHY
HEALTHY/SUSPECT    PRIMARY_SUSPECT  SUSPECT       none        PRIMARY_SUSPECT / LOSS_UNCONFIRMED
HEALTHY/SUSPECT    PRIMARY_LOST     (see _lost)   ...         ...
COOLDOWN           PRIMARY_OK       COOLDOWN      none        IN_COOLDOWN (HEALTHY when over)
COOLDOWN           PRIMARY_SUSPECT  COOLDOWN      none        PRIMARY_SUSPECT
COOLDOWN           PRIMARY_LOST     (see _lost)   ...         ...
HOLD               PRIMARY_OK       HEALTHY       none        PRIMARY_RECOVERED
HOLD               otherwise        HOLD          none        (kept)
*                  NO_PRIMARY       HOLD          escalate    NO_PRIMARY
=================  ===============  ============  ==========  ====================

``_lost``: inside the cooldown after an automatic failover and not acknowledged → HOLD /
escalate / ``IN_COOLDOWN``; no eligible replica → HOLD / escalate / ``NO_CANDIDATE``; the best
candidate's lag at the moment of loss beyond the RPO → HOLD / escalate / ``RPO_EXCEEDED``;
otherwise FAILING_OVER / failover / ``PRIMARY_LOST``.

Independently of the state, two reachable primaries yield ``demote`` for every primary on an
older timeline than the newest (never two writable primaries).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from orchestrator.model import Assessment, NodeHealth, Verdict
from probes.base import Role


class State(enum.StrEnum):
    HEALTHY = "healthy"
    SUSPECT = "suspect"
    FAILING_OVER = "failing_over"
    COOLDOWN = "cooldown"
    PAUSED = "paused"
    HOLD = "hold"


class Action(enum.StrEnum):
    NONE = "none"
    FAILOVER = "failover"
    ESCALATE = "escalate"


class Seen(enum.StrEnum):
    PRIMARY_OK = "primary_ok"
    PRIMARY_SUSPECT = "primary_suspect"
    PRIMARY_LOST = "primary_lost"
    NO_PRIMARY = "no_primary"


@dataclass(frozen=True, slots=True)
class Settings:
    rpo: float
    cooldown: float = 3600.0
    excluded: frozenset[str] = frozenset()
    region_order: tuple[str, ...] = ()
    automatic: bool = True
    """False: a lost primary is escalated (HOLD / AUTOMATIC_OFF) instead of failed over."""


@dataclass(frozen=True, slots=True)
class Controls:
    """What humans said (``orchestrator pause|resume|ack``), read fresh every tick."""

    paused: bool = False
    acked_at: float | None = None
    drill: str | None = None
    """The id of a DR drill in progress: the drill owns the topology, the engine only watches."""


@dataclass(frozen=True, slots=True)
class Memory:
    """What the engine remembers between ticks (persisted by the daemon)."""

    state: State = State.HEALTHY
    since: float = 0.0
    reason: str = "STARTING"
    last_failover_at: float | None = None
    """When the last automatic failover started (the cooldown clock)."""
    last_failover_from: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    node: str
    region: str
    lag_seconds: float | None
    lag_bytes: int | None
    within_rpo: bool


@dataclass(frozen=True, slots=True)
class Decision:
    state: State
    action: Action
    reason: str
    sentence: str
    old_primary: str | None = None
    candidate: Candidate | None = None
    candidates: tuple[Candidate, ...] = ()
    demote: tuple[str, ...] = field(default=())
    """Reachable primaries on an older timeline than the newest: to be fenced at once."""


def candidates(assessment: Assessment, settings: Settings) -> tuple[Candidate, ...]:
    """Replicas that may be promoted, best first: within the RPO, then region preference,
    then least data behind (bytes, then seconds). Skips the old primary, excluded nodes and
    nodes that are not reachable and stable."""
    order = {r: i for i, r in enumerate(settings.region_order)}
    out = []
    for n in assessment.nodes:
        if not _eligible(n, assessment.primary, settings):
            continue
        # Heartbeat lag is the RPO currency; without it, only a replica that is provably
        # caught up (0 WAL bytes behind the primary's last position) counts as within the RPO.
        within = (n.lag_seconds is not None and n.lag_seconds <= settings.rpo) or (
            n.lag_seconds is None and n.lag_bytes == 0
        )
        out.append(Candidate(n.node.name, n.node.region, n.lag_seconds, n.lag_bytes, within))
    out.sort(
        key=lambda c: (
            not c.within_rpo,
            order.get(c.region, len(order)),
            c.lag_bytes if c.lag_bytes is not None else 2**63,
            c.lag_seconds if c.lag_seconds is not None else float("inf"),
            c.node,
        )
    )
    return tuple(out)


def _eligible(n: NodeHealth, primary: str | None, settings: Settings) -> bool:
    if n.node.name == primary or n.node.name in settings.excluded:
        return False
    if n.verdict not in (Verdict.HEALTHY, Verdict.DEGRADED) or n.consecutive_failures:
        return False
    if n.reason == "NODE_FLAPPING":
        return False
    return n.role is Role.REPLICA


def seen(assessment: Assessment) -> Seen:
    if assessment.primary is None:
        return Seen.NO_PRIMARY
    p = assessment.node(assessment.primary)
    if p.verdict in (Verdict.HEALTHY, Verdict.DEGRADED):
        return Seen.PRIMARY_OK
    if p.verdict is Verdict.DOWN and p.reason != "NODE_RECOVERING":
        return Seen.PRIMARY_LOST if assessment.primary_loss_confirmed else Seen.PRIMARY_SUSPECT
    # SUSPECT, UNKNOWN, or DOWN but answering again (recovering, not yet trusted)
    return Seen.PRIMARY_SUSPECT


def in_cooldown(mem: Memory, controls: Controls, settings: Settings, now: float) -> bool:
    if mem.last_failover_at is None or now - mem.last_failover_at >= settings.cooldown:
        return False
    return not (controls.acked_at is not None and controls.acked_at >= mem.last_failover_at)


def decide(
    mem: Memory, assessment: Assessment, controls: Controls, settings: Settings, now: float
) -> tuple[Decision, Memory]:
    """One tick of the transition table (see the module docstring)."""
    demote = _stale_primaries(assessment)
    what = seen(assessment)
    state = mem.state
    primary = assessment.primary

    def go(
        nxt: State, action: Action, reason: str, sentence: str, **kw: object
    ) -> tuple[Decision, Memory]:
        since = mem.since if nxt is mem.state else now
        decision = Decision(nxt, action, reason, sentence, old_primary=primary, demote=demote, **kw)  # type: ignore[arg-type]
        new_mem = replace(mem, state=nxt, since=since, reason=reason)
        if action is Action.FAILOVER:
            new_mem = replace(new_mem, last_failover_at=now, last_failover_from=primary)
        return decision, new_mem

    if controls.paused:
        return go(
            State.PAUSED,
            Action.NONE,
            "PAUSED",
            "Paused (maintenance): observing only, no automatic action.",
        )
    if controls.drill is not None:
        return go(
            State.PAUSED,
            Action.NONE,
            "DRILL_IN_PROGRESS",
            f"DR drill {controls.drill} in progress: observing only, the drill acts.",
        )
    if state is State.PAUSED:  # resumed: judge afresh
        state = State.HEALTHY
        mem = replace(mem, state=State.HEALTHY, since=now)
    if state is State.FAILING_OVER:
        return go(
            State.FAILING_OVER,
            Action.NONE,
            "FAILOVER_IN_PROGRESS",
            "A failover is running; decisions wait for it to finish.",
        )
    if what is Seen.NO_PRIMARY:
        if state is State.HOLD:
            return go(State.HOLD, Action.NONE, mem.reason, "Waiting for an operator.")
        return go(
            State.HOLD,
            Action.ESCALATE,
            "NO_PRIMARY",
            "No primary has been seen; an operator must decide.",
        )
    if what is Seen.PRIMARY_OK:
        if state in (State.COOLDOWN, State.HOLD) and in_cooldown(mem, controls, settings, now):
            return go(
                State.COOLDOWN,
                Action.NONE,
                "IN_COOLDOWN",
                f"Primary {primary} healthy; automatic failover cooldown in force.",
            )
        reason = "PRIMARY_RECOVERED" if state is State.HOLD else "PRIMARY_HEALTHY"
        return go(State.HEALTHY, Action.NONE, reason, f"Primary {primary} healthy.")
    if what is Seen.PRIMARY_SUSPECT:
        if state is State.HOLD:
            return go(State.HOLD, Action.NONE, mem.reason, "Waiting for an operator.")
        p = assessment.node(primary) if primary else None
        unconfirmed = p is not None and p.verdict is Verdict.DOWN
        reason = "LOSS_UNCONFIRMED" if unconfirmed else "PRIMARY_SUSPECT"
        sentence = (
            f"Primary {primary} unreachable but the replicas still see it: no failover."
            if unconfirmed
            else f"Primary {primary} missed probes; watching."
        )
        nxt = State.COOLDOWN if state is State.COOLDOWN else State.SUSPECT
        return go(nxt, Action.NONE, reason, sentence)
    # PRIMARY_LOST
    if state is State.HOLD:
        if mem.reason == "IN_COOLDOWN" and not in_cooldown(mem, controls, settings, now):
            return _lost(go, assessment, mem, controls, settings, now)  # acknowledged
        return go(State.HOLD, Action.NONE, mem.reason, "Waiting for an operator.")
    return _lost(go, assessment, mem, controls, settings, now)


Go = Callable[..., tuple["Decision", "Memory"]]


def _lost(
    go: Go,
    assessment: Assessment,
    mem: Memory,
    controls: Controls,
    settings: Settings,
    now: float,
) -> tuple[Decision, Memory]:
    primary = assessment.primary
    if in_cooldown(mem, controls, settings, now):
        return go(
            State.HOLD,
            Action.ESCALATE,
            "IN_COOLDOWN",
            f"Primary {primary} lost inside the cooldown of the last automatic failover: "
            "holding for an operator (orchestrator ack).",
        )
    cands = candidates(assessment, settings)
    if not cands:
        return go(
            State.HOLD,
            Action.ESCALATE,
            "NO_CANDIDATE",
            f"Primary {primary} lost and no replica can be promoted: holding.",
            candidates=cands,
        )
    best = cands[0]
    if not best.within_rpo:
        lag = "unknown" if best.lag_seconds is None else f"{best.lag_seconds:.1f}s"
        return go(
            State.HOLD,
            Action.ESCALATE,
            "RPO_EXCEEDED",
            f"Primary {primary} lost; the best replica {best.node} lags {lag}, beyond "
            f"the RPO of {settings.rpo:g}s: holding (failover --accept-data-loss).",
            candidate=best,
            candidates=cands,
        )
    if not settings.automatic:
        return go(
            State.HOLD,
            Action.ESCALATE,
            "AUTOMATIC_OFF",
            f"Primary {primary} lost; automatic failover is off: holding for an operator "
            f"(best candidate {best.node}).",
            candidate=best,
            candidates=cands,
        )
    return go(
        State.FAILING_OVER,
        Action.FAILOVER,
        "PRIMARY_LOST",
        f"Primary {primary} lost and confirmed by the replicas: failing over to "
        f"{best.node} in {best.region}.",
        candidate=best,
        candidates=cands,
    )


def failover_finished(mem: Memory, ok: bool, now: float) -> Memory:
    """The executor finished the automatic failover: cooldown on success, HOLD on failure."""
    if ok:
        return replace(mem, state=State.COOLDOWN, since=now, reason="FAILED_OVER")
    return replace(mem, state=State.HOLD, since=now, reason="FAILOVER_FAILED")


def _stale_primaries(assessment: Assessment) -> tuple[str, ...]:
    """Reachable primaries older than the newest timeline (split brain after a failover)."""
    prim = [n for n in assessment.nodes if n.role is Role.PRIMARY and not n.consecutive_failures]
    if len(prim) < 2:
        return ()
    timelines = {n.node.name: n.timeline for n in prim}
    newest = max((t for t in timelines.values() if t is not None), default=None)
    if newest is None:
        return ()
    return tuple(sorted(n for n, t in timelines.items() if t is not None and t < newest))
