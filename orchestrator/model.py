"""Frozen value types shared by every layer: topology, snapshots, verdicts.

Nothing here does I/O or reads a clock; instances are immutable and safe to share across tasks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from probes.base import Observation, Role


class Verdict(enum.StrEnum):
    """Health of a node or a region, ordered from best to worst (UNKNOWN stands apart)."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    SUSPECT = "suspect"
    DOWN = "down"
    UNKNOWN = "unknown"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {
    Verdict.HEALTHY: 0,
    Verdict.DEGRADED: 1,
    Verdict.SUSPECT: 2,
    Verdict.DOWN: 3,
    Verdict.UNKNOWN: 4,
}


@dataclass(frozen=True, slots=True)
class NodeRef:
    """Where a node sits in the topology."""

    name: str
    region: str


@dataclass(frozen=True, slots=True)
class Topology:
    """Regions in preference order and their nodes; derived from the config once."""

    service: str
    regions: tuple[str, ...]
    nodes: tuple[NodeRef, ...]
    rpo: float
    rto: float

    def nodes_in(self, region: str) -> tuple[NodeRef, ...]:
        return tuple(n for n in self.nodes if n.region == region)

    def region_of(self, node: str) -> str:
        for n in self.nodes:
            if n.name == node:
                return n.region
        raise KeyError(node)


@dataclass(frozen=True, slots=True)
class NodeSample:
    """Everything observed about one node in one tick, plus derived replication lag."""

    node: NodeRef
    database: Observation
    http: Observation | None = None
    lag_seconds: float | None = None
    """Replicas: heartbeat lag (see :mod:`orchestrator.lag`); None when not measurable."""
    lag_bytes: int | None = None
    """Replicas: WAL bytes the replica has not replayed compared with the primary's position."""

    @property
    def ok(self) -> bool:
        return self.database.ok

    @property
    def role(self) -> Role:
        return self.database.role


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One tick's frozen view of the world. ``at`` is the wall clock when the tick started."""

    cycle: int
    at: float
    samples: tuple[NodeSample, ...]

    def sample(self, node: str) -> NodeSample | None:
        for s in self.samples:
            if s.node.name == node:
                return s
        return None

    def primaries(self) -> tuple[NodeSample, ...]:
        """Reachable nodes that report the primary role (more than one means split brain)."""
        return tuple(s for s in self.samples if s.ok and s.role is Role.PRIMARY)


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """The hysteresis state of one node after a tick, and its verdict with a reason code."""

    node: NodeRef
    verdict: Verdict
    reason: str
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    history: tuple[bool, ...] = ()
    """Recent probe results, oldest first, at most ``flap_window`` long."""
    role: Role = Role.UNKNOWN
    last_role: Role = Role.UNKNOWN
    """The role last seen while reachable (kept while the node is down)."""
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    timeline: int | None = None
    """Timeline last reported while reachable."""
    since: float | None = None
    """Wall clock when the node entered its current verdict."""


@dataclass(frozen=True, slots=True)
class RegionHealth:
    """A region's verdict, aggregated from its nodes."""

    region: str
    verdict: Verdict
    reason: str


@dataclass(frozen=True, slots=True)
class Assessment:
    """Health of everything after a tick: the output of :mod:`orchestrator.health`."""

    cycle: int
    at: float
    nodes: tuple[NodeHealth, ...]
    regions: tuple[RegionHealth, ...]
    primary: str | None
    """Name of the node currently believed to be the primary (reachable now or last known)."""
    reason: str
    """Reason code of the whole tick (e.g. ``ALL_HEALTHY``, ``PRIMARY_DOWN``)."""
    sentence: str
    """One human sentence describing the tick."""
    primary_loss_confirmed: bool = False
    """True when every reachable replica reports its WAL receiver is no longer streaming."""
    notes: tuple[str, ...] = field(default=())

    def node(self, name: str) -> NodeHealth:
        for n in self.nodes:
            if n.node.name == name:
                return n
        raise KeyError(name)

    def region(self, name: str) -> RegionHealth:
        for r in self.regions:
            if r.region == name:
                return r
        raise KeyError(name)

    @property
    def primary_region(self) -> str | None:
        if self.primary is None:
            return None
        for n in self.nodes:
            if n.node.name == self.primary:
                return n.node.region
        return None
