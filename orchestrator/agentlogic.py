"""The node agent's decisions (``orchestrator agent``): pure code, no asyncio, no I/O, no clock.
``now`` and every instant are arguments (the agent's monotonic clock).

One tick of the agent sees a :class:`View` (its node's role from a local SQL probe, when the
last successful quorum check was sent, the leader's current-primary document, and what its
state file remembers) and gets one :class:`Decision`: ``none``, ``fence`` or
``rejoin(upstream)``, with a reason code and a sentence. Publishing the heartbeat document is
not a decision: the agent publishes :func:`heartbeat` after every successful quorum check, so
a publication never delays a fence.

Terms: *stale* means no quorum check succeeded for ``fence_after`` seconds, or none since the
agent started; *named* is the node the current-primary document names; *may have been
primary* means the node was last seen as a primary, or has never been seen (a fresh agent on a
stopped node). The table, first matching row wins:

=====  ======================================  ==========================  =================
#      condition                               action                      reason
=====  ======================================  ==========================  =================
1      stale, role primary                     fence                       SELF_FENCED
2      stale, down, not fenced, may have been  fence                       SELF_FENCED
       primary
3      stale, otherwise                        none                        NO_QUORUM
4      the latest check failed (not stale)     none                        QUORUM_GRACE
5      no current-primary document             none                        NO_PRIMARY_DOC
6      named is this node, role primary        none                        PRIMARY_CONFIRMED
7      named is this node, otherwise           none                        NAMED_NOT_PRIMARY
8      named is not in the configuration       none                        UNKNOWN_PRIMARY
9      the leader has a run in flight          none                        LEADER_RUN
10     primary, named another for fence_after  fence                       SUPERSEDED
       (at once when the record says fenced)
11     primary, named another, for less        none                        SUPERSEDED_GRACE
12     down or detached, fenced, no rejoin     none                        REJOIN_UNAVAILABLE
       command
13     down or detached, fenced, backing off   none                        REJOIN_BACKOFF
14     down or detached, fenced                rejoin(named)               REJOIN
15     down for fence_after, not fenced, may   fence                       STALE_PRIMARY
       have been primary
16     down for less, not fenced, may have     none                        STALE_PRIMARY_GRACE
       been primary
17     down (a stopped replica)                none                        DOWN_REPLICA
18     detached (standby not streaming)        none                        REPLICA_DETACHED
19     replica (streaming)                     none                        REPLICA_OK
=====  ======================================  ==========================  =================

Why these rows:

* Rows 1-2 are the self-fence: a primary cut off from the quorum for ``fence_after`` must stop
  writing before the leader, which waits at least that long, promotes anyone else. A stopped
  node that may have been the primary is fenced too (its fence leaves it unable to start as a
  primary), so an agent that starts without quorum never lets its node come up as a primary.
  Nothing the leader publishes overrides them.
* Row 9: while the leader's document carries ``"run"`` (a failover or switchover in flight),
  its runbook fences and rejoins the old primary itself; the agent stands aside.
* Rows 10-11: a writable primary that the leader no longer names is superseded, but the leader
  publishes a new primary only after promoting it, so a just-promoted node sees the old
  document for a moment; the agent fences only a conflict that lasts ``fence_after``
  (:func:`track_conflict`). The leader must publish within that time.
* Rows 12-16: an old primary comes back only as a replica of the named primary: a stopped one
  is fenced first (so nothing restarts it as a primary meanwhile), then rejoined; only a node
  the agent's record says is fenced is ever rejoined, and never while it is a primary. A
  stopped node the agent did not fence is left ``fence_after`` to whoever stopped it (the
  orchestrator's runbook fences and rejoins the old primary itself) before the agent steps in
  (:func:`track_down`).
* Rows 5, 7, 8: without a clear statement from the leader the agent changes nothing (a fenced
  node stays fenced: never started as a primary by the agent).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REJOIN_BACKOFF_FIRST = 5.0
REJOIN_BACKOFF_MAX = 60.0


class LocalRole(enum.StrEnum):
    """The agent's own node, as its local SQL probe saw it."""

    PRIMARY = "primary"
    """Answers and is not in recovery: it takes writes."""
    REPLICA = "replica"
    """A standby whose WAL receiver is streaming."""
    DETACHED = "detached"
    """A standby that is not streaming (no upstream, or it lost it)."""
    DOWN = "down"
    """Does not answer: stopped, hung, refusing logins."""


class ActionKind(enum.StrEnum):
    NONE = "none"
    FENCE = "fence"
    REJOIN = "rejoin"


class Reason(enum.StrEnum):
    SELF_FENCED = "SELF_FENCED"
    FENCE_REQUESTED = "FENCE_REQUESTED"
    NO_QUORUM = "NO_QUORUM"
    QUORUM_GRACE = "QUORUM_GRACE"
    NO_PRIMARY_DOC = "NO_PRIMARY_DOC"
    PRIMARY_CONFIRMED = "PRIMARY_CONFIRMED"
    NAMED_NOT_PRIMARY = "NAMED_NOT_PRIMARY"
    UNKNOWN_PRIMARY = "UNKNOWN_PRIMARY"
    LEADER_RUN = "LEADER_RUN"
    SUPERSEDED = "SUPERSEDED"
    SUPERSEDED_GRACE = "SUPERSEDED_GRACE"
    REJOIN_UNAVAILABLE = "REJOIN_UNAVAILABLE"
    REJOIN_BACKOFF = "REJOIN_BACKOFF"
    REJOIN = "REJOIN"
    STALE_PRIMARY = "STALE_PRIMARY"
    STALE_PRIMARY_GRACE = "STALE_PRIMARY_GRACE"
    DOWN_REPLICA = "DOWN_REPLICA"
    REPLICA_DETACHED = "REPLICA_DETACHED"
    REPLICA_OK = "REPLICA_OK"


@dataclass(frozen=True, slots=True)
class CurrentPrimary:
    """The leader's ``{service}/primary`` document: ``{"node", "region", "epoch", "at"}``,
    and ``"run"`` (the id of a failover or switchover in flight) when there is one."""

    node: str
    region: str
    epoch: int
    at: float
    run: str | None = None

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None) -> CurrentPrimary | None:
        """The document, or None when it is absent or malformed (a node name is required;
        a missing epoch counts as 0, a missing time as 0.0)."""
        if doc is None:
            return None
        node, region = doc.get("node"), doc.get("region", "")
        epoch, at = doc.get("epoch", 0), doc.get("at", 0.0)
        if not isinstance(node, str) or not node or not isinstance(region, str):
            return None
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            return None
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            return None
        run = doc.get("run")
        return cls(node, region, epoch, float(at), run if isinstance(run, str) and run else None)


def accept_primary(max_epoch: int | None, new: CurrentPrimary | None) -> bool:
    """Whether a freshly read document is taken as the current primary: yes unless it carries
    an older epoch than one already accepted (a deposed leader's late write)."""
    return new is not None and (max_epoch is None or new.epoch >= max_epoch)


@dataclass(frozen=True, slots=True)
class View:
    """What one tick of the agent knows. Instants are on the agent's monotonic clock."""

    node: str
    role: LocalRole
    now: float
    contact_at: float | None
    """When the last successful quorum check was sent; None: none since the agent started."""
    quorum_ok: bool
    """The latest quorum check succeeded."""
    fence_after: float
    primary: CurrentPrimary | None
    """The current-primary document of the last successful check."""
    known_nodes: frozenset[str]
    fenced: bool = False
    """The agent's record: it fenced this node and has not seen it rejoin since."""
    last_role: LocalRole | None = None
    """The last role seen while the node answered (PRIMARY or REPLICA); None: never seen."""
    conflict_since: float | None = None
    """Since when the node has been a primary while the document named another (see
    :func:`track_conflict`)."""
    down_since: float | None = None
    """Since when the node has been down without interruption (see :func:`track_down`)."""
    rejoin_not_before: float | None = None
    """No rejoin attempt before this instant (backing off after a failed one)."""
    can_rejoin: bool = True
    """The node has a rejoin_command."""
    fence_requested: int | None = None
    """The epoch of the leader that asks this agent to fence its node (it cannot reach the node
    and must not promote another before it is fenced); None: no live request."""


@dataclass(frozen=True, slots=True)
class Decision:
    action: ActionKind
    reason: Reason
    sentence: str
    upstream: str | None = None
    """For ``rejoin``: the node to follow."""


def is_stale(contact_at: float | None, now: float, fence_after: float) -> bool:
    """No successful quorum check for ``fence_after`` seconds (or none at all)."""
    return contact_at is None or now - contact_at >= fence_after


def fence_deadline(contact_at: float | None, fence_after: float) -> float | None:
    """The instant at which the contact becomes stale (None: it is stale already)."""
    return None if contact_at is None else contact_at + fence_after


def track_conflict(
    since: float | None,
    role: LocalRole,
    primary: CurrentPrimary | None,
    node: str,
    now: float,
) -> float | None:
    """The new ``conflict_since``: kept (or started now) while the node is a primary and the
    document names another node; cleared otherwise."""
    if role is LocalRole.PRIMARY and primary is not None and primary.node != node:
        return now if since is None else since
    return None


def track_down(since: float | None, role: LocalRole, now: float) -> float | None:
    """The new ``down_since``: kept (or started now) while the node is down."""
    if role is LocalRole.DOWN:
        return now if since is None else since
    return None


def still_fenced(fenced: bool, role: LocalRole, primary: CurrentPrimary | None, node: str) -> bool:
    """The fenced record survives until the node is seen streaming as a replica, or answering
    as the primary the leader names (the orchestrator or an operator brought it back)."""
    if role is LocalRole.REPLICA:
        return False
    named = primary is not None and primary.node == node
    return fenced and not (role is LocalRole.PRIMARY and named)


def remembered_role(last: LocalRole | None, role: LocalRole) -> LocalRole | None:
    """The role to remember: PRIMARY or REPLICA (a detached standby counts as a replica);
    a node that does not answer keeps what was last seen."""
    if role is LocalRole.PRIMARY:
        return LocalRole.PRIMARY
    if role in (LocalRole.REPLICA, LocalRole.DETACHED):
        return LocalRole.REPLICA
    return last


def rejoin_backoff(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failed rejoin in a row: 5, 10, 20, 40, 60."""
    return min(REJOIN_BACKOFF_MAX, REJOIN_BACKOFF_FIRST * 2.0 ** max(0, failures - 1))


def _age(v: View) -> str:
    if v.contact_at is None:
        return "since the agent started"
    return f"for {v.now - v.contact_at:.1f}s"


def _may_have_been_primary(v: View) -> bool:
    return v.last_role is not LocalRole.REPLICA


def decide(v: View) -> Decision:
    """One tick's decision; see the module docstring for the table."""
    if is_stale(v.contact_at, v.now, v.fence_after):
        return _cut_off(v)
    if not v.quorum_ok:
        return Decision(
            ActionKind.NONE,
            Reason.QUORUM_GRACE,
            f"no quorum contact {_age(v)}; {v.node} is fenced if that reaches {v.fence_after:g}s",
        )
    writable = v.role is LocalRole.PRIMARY or (
        v.role is LocalRole.DOWN and _may_have_been_primary(v)
    )
    if v.fence_requested is not None and not v.fenced and writable:
        return Decision(
            ActionKind.FENCE,
            Reason.FENCE_REQUESTED,
            f"the leader (epoch {v.fence_requested}) cannot reach {v.node} and asks for its "
            f"fence before it promotes another node: fencing {v.node} ({v.role})",
        )
    p = v.primary
    if p is None:
        return Decision(
            ActionKind.NONE,
            Reason.NO_PRIMARY_DOC,
            f"no current primary is published; {v.node} stays {v.role}"
            + (" and fenced" if v.fenced else ""),
        )
    if p.node == v.node:
        if v.role is LocalRole.PRIMARY:
            return Decision(
                ActionKind.NONE,
                Reason.PRIMARY_CONFIRMED,
                f"{v.node} is the current primary (epoch {p.epoch}) and in contact with the quorum",
            )
        return Decision(
            ActionKind.NONE,
            Reason.NAMED_NOT_PRIMARY,
            f"the leader names {v.node} primary but it is {v.role}"
            + (" and fenced" if v.fenced else "")
            + "; the agent never starts a primary: the orchestrator decides",
        )
    if p.node not in v.known_nodes:
        return Decision(
            ActionKind.NONE,
            Reason.UNKNOWN_PRIMARY,
            f"the published primary {p.node!r} is not in the configuration; nothing done",
        )
    return _superseded(v, p)


def _cut_off(v: View) -> Decision:
    why = f"no quorum contact {_age(v)} (fence_after {v.fence_after:g}s)"
    if v.role is LocalRole.PRIMARY:
        return Decision(
            ActionKind.FENCE, Reason.SELF_FENCED, f"{why}: fencing the primary {v.node}"
        )
    if v.role is LocalRole.DOWN and not v.fenced and _may_have_been_primary(v):
        return Decision(
            ActionKind.FENCE,
            Reason.SELF_FENCED,
            f"{why}: {v.node} is down and may have been the primary; fencing it so it cannot "
            "come back as one",
        )
    return Decision(
        ActionKind.NONE,
        Reason.NO_QUORUM,
        f"{why}; {v.node} is {v.role}" + (", fenced" if v.fenced else "") + ": nothing to fence",
    )


def _superseded(v: View, p: CurrentPrimary) -> Decision:
    """The document names another known node."""
    if p.run is not None and v.role is not LocalRole.REPLICA:
        return Decision(
            ActionKind.NONE,
            Reason.LEADER_RUN,
            f"the leader's run {p.run} is in flight (primary {p.node}); it handles {v.node}, "
            f"{v.role}: the agent stands aside",
        )
    if v.role is LocalRole.PRIMARY:
        since = v.now if v.conflict_since is None else v.conflict_since
        held = v.now - since
        if v.fenced or held >= v.fence_after:
            how = (
                "came back as a primary after its fence"
                if v.fenced
                else (f"has taken writes for {held:.1f}s beside it")
            )
            return Decision(
                ActionKind.FENCE,
                Reason.SUPERSEDED,
                f"{p.node} is the current primary (epoch {p.epoch}) but {v.node} {how}: "
                f"fencing {v.node}",
            )
        return Decision(
            ActionKind.NONE,
            Reason.SUPERSEDED_GRACE,
            f"{p.node} is the current primary (epoch {p.epoch}) while {v.node} is one too; "
            f"fencing {v.node} if that lasts {v.fence_after:g}s",
        )
    if v.role in (LocalRole.DOWN, LocalRole.DETACHED) and v.fenced:
        if not v.can_rejoin:
            return Decision(
                ActionKind.NONE,
                Reason.REJOIN_UNAVAILABLE,
                f"{v.node} is fenced and {p.node} is the primary, but {v.node} has no "
                "rejoin_command: it stays fenced",
            )
        if v.rejoin_not_before is not None and v.now < v.rejoin_not_before:
            return Decision(
                ActionKind.NONE,
                Reason.REJOIN_BACKOFF,
                f"rejoining {v.node} to {p.node} again in {v.rejoin_not_before - v.now:.0f}s",
            )
        return Decision(
            ActionKind.REJOIN,
            Reason.REJOIN,
            f"{v.node} is fenced and {p.node} is the current primary (epoch {p.epoch}): "
            f"rejoining {v.node} as its replica",
            upstream=p.node,
        )
    if v.role is LocalRole.DOWN:
        if _may_have_been_primary(v):
            since = v.now if v.down_since is None else v.down_since
            if v.now - since >= v.fence_after:
                return Decision(
                    ActionKind.FENCE,
                    Reason.STALE_PRIMARY,
                    f"{v.node} is down and may have been the primary while {p.node} is the "
                    f"current one (epoch {p.epoch}): fencing it before it rejoins as a replica",
                )
            return Decision(
                ActionKind.NONE,
                Reason.STALE_PRIMARY_GRACE,
                f"{v.node} is down and may have been the primary ({p.node} is the current one);"
                f" fencing and rejoining it if it stays down {v.fence_after:g}s",
            )
        return Decision(
            ActionKind.NONE,
            Reason.DOWN_REPLICA,
            f"{v.node}, a replica, is down; the primary is {p.node}",
        )
    if v.role is LocalRole.DETACHED:
        return Decision(
            ActionKind.NONE,
            Reason.REPLICA_DETACHED,
            f"{v.node} is a standby that is not streaming; the primary is {p.node}",
        )
    return Decision(
        ActionKind.NONE,
        Reason.REPLICA_OK,
        f"{v.node} is a streaming replica; the primary is {p.node} (epoch {p.epoch})",
    )


def published_role(role: LocalRole) -> str:
    """The heartbeat's ``role``: primary, replica (streaming or not) or down."""
    return "replica" if role is LocalRole.DETACHED else str(role)


def heartbeat(
    *,
    node: str,
    region: str,
    role: LocalRole,
    fenced: bool,
    fenced_at: float | None,
    fence_reason: str | None,
    decision: Decision | None,
    primary: CurrentPrimary | None,
    at: float,
) -> dict[str, Any]:
    """The document published under ``{service}/agents/{node}`` (``at``: wall-clock time)."""
    return {
        "node": node,
        "region": region,
        "role": published_role(role),
        "streaming": role is LocalRole.REPLICA,
        "fenced": fenced,
        "fenced_at": fenced_at,
        "fence_reason": fence_reason,
        "reason": str(decision.reason) if decision else None,
        "sentence": decision.sentence if decision else None,
        "primary": primary.node if primary else None,
        "epoch": primary.epoch if primary else None,
        "at": at,
    }
