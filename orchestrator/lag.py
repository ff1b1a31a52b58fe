"""Replication lag of a replica, in seconds and bytes. Pure: ``now`` is an argument.

**Seconds** come from the heartbeat row the orchestrator writes on the primary once per tick,
stamped with the orchestrator's own clock (so no agreement between database clocks is needed):

* a replica that has replayed the primary's latest heartbeat is **0 s** behind — it holds every
  write up to the last tick, so an idle database reads 0 rather than a growing "time since last
  replayed transaction" (the pitfall of ``now() - pg_last_xact_replay_timestamp()``);
* otherwise the lag is ``at - written_at`` of the newest heartbeat it has replayed, where ``at``
  is when the primary was last seen (this tick while it answers). Everything committed before
  ``written_at`` is on the replica and anything after may not be, so this is the conservative
  (upper) bound of the data-loss window, exact to one probe interval. Once the primary is lost
  the figure stops growing: it is the replica's lag **at the moment of loss**, which is what the
  RPO guard must compare with the objective.

**Bytes** are the WAL distance between the primary's current position and the replica's replayed
position. When the primary cannot be observed in this tick, the last position seen from it is
used (``PrimaryMark``), which is exactly the "how much did the replica miss at the moment of
loss" figure a promotion gate needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from probes.base import DatabaseState, Role


@dataclass(frozen=True, slots=True)
class PrimaryMark:
    """The last thing seen on the primary: its heartbeat sequence and WAL position."""

    node: str
    seq: int | None
    lsn: int | None
    at: float


def mark_of(node: str, state: DatabaseState, at: float) -> PrimaryMark:
    """Build the reference point from a reachable primary's probe."""
    seq = state.heartbeat.seq if state.heartbeat else None
    return PrimaryMark(node=node, seq=seq, lsn=state.current_lsn, at=at)


def lag_seconds(replica: DatabaseState, ref: PrimaryMark | None, now: float) -> float | None:
    """Heartbeat lag of ``replica`` against the primary reference; None if not measurable."""
    if replica.role is not Role.REPLICA or replica.heartbeat is None:
        return None
    if ref is not None and ref.seq is not None and replica.heartbeat.seq >= ref.seq:
        return 0.0
    if ref is None or ref.seq is None:
        # No heartbeat seen on any primary yet: we cannot tell whether the replica is current.
        return None
    return max(0.0, min(now, ref.at) - replica.heartbeat.written_at)


def lag_bytes(replica: DatabaseState, ref: PrimaryMark | None) -> int | None:
    """WAL bytes not yet replayed by ``replica``; None if either position is unknown."""
    if replica.role is not Role.REPLICA or replica.replay_lsn is None:
        return None
    if ref is None or ref.lsn is None:
        return None
    return max(0, ref.lsn - replica.replay_lsn)
