"""Observe: probe every node concurrently and freeze the results into one Snapshot.

Guarantees: :meth:`Observer.snapshot` never raises for a failing node (probes turn failures into
observations), takes at most the probe timeout (plus scheduling) because all probes run at once,
and returns a snapshot holding exactly one sample per configured node, with replication lag
derived by the pure functions of :mod:`orchestrator.lag`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from orchestrator import lag
from orchestrator.model import NodeRef, NodeSample, Snapshot
from probes.base import Observation, Probe, Role


@dataclass(frozen=True, slots=True)
class NodeProbes:
    """The probes of one node: SQL always, HTTP health when configured."""

    node: NodeRef
    database: Probe
    http: Probe | None = None


class Observer:
    """Owns the probes of every node and the last primary reference point for lag."""

    def __init__(self, nodes: list[NodeProbes], mark: lag.PrimaryMark | None = None) -> None:
        self._nodes = nodes
        self._mark = mark

    @property
    def primary_mark(self) -> lag.PrimaryMark | None:
        """The last heartbeat sequence and WAL position seen on a reachable primary."""
        return self._mark

    async def snapshot(self, cycle: int, at: float) -> Snapshot:
        """Probe all nodes at once and return the frozen result for tick ``cycle``."""
        async with asyncio.TaskGroup() as tg:
            db_tasks = [tg.create_task(n.database.observe()) for n in self._nodes]
            http_tasks = [
                tg.create_task(n.http.observe()) if n.http is not None else None
                for n in self._nodes
            ]
        db_obs = [t.result() for t in db_tasks]
        http_obs = [t.result() if t is not None else None for t in http_tasks]

        primaries = [
            (n, o)
            for n, o in zip(self._nodes, db_obs, strict=True)
            if o.ok and o.database is not None and o.database.role is Role.PRIMARY
        ]
        if primaries:
            # With more than one (split brain) the reference is the newest timeline.
            node, obs = max(primaries, key=lambda p: p[1].database.timeline or 0)  # type: ignore[union-attr]
            assert obs.database is not None
            self._mark = lag.mark_of(node.node.name, obs.database, at)

        samples = tuple(
            self._sample(n, d, h, at) for n, d, h in zip(self._nodes, db_obs, http_obs, strict=True)
        )
        return Snapshot(cycle=cycle, at=at, samples=samples)

    def _sample(
        self, n: NodeProbes, db: Observation, http: Observation | None, at: float
    ) -> NodeSample:
        state = db.database
        if not db.ok or state is None or state.role is not Role.REPLICA:
            return NodeSample(node=n.node, database=db, http=http)
        return NodeSample(
            node=n.node,
            database=db,
            http=http,
            lag_seconds=lag.lag_seconds(state, self._mark, at),
            lag_bytes=lag.lag_bytes(state, self._mark),
        )

    async def aclose(self) -> None:
        """Close every probe; bounded; never raises."""
        probes = [p for n in self._nodes for p in (n.database, n.http) if p is not None]
        await asyncio.gather(*(p.aclose() for p in probes), return_exceptions=True)
