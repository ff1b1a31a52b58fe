"""Health model: a window of snapshots -> node and region verdicts, with hysteresis. Pure.

:func:`assess` is a reducer: ``assess(previous, snapshot) -> assessment``. Folding it over a
sequence of snapshots (:func:`assess_all`) is the "window" — the previous assessment carries the
counters and the recent history each node needs, so no decision depends on a single probe.

Node verdicts (reason codes in capitals):

* ``UNKNOWN`` - never observed yet (``NOT_OBSERVED``).
* ``SUSPECT`` - the last probe(s) failed, fewer than ``failure_threshold`` in a row
  (``PROBE_FAILED``).
* ``DOWN`` - ``failure_threshold`` consecutive failures (``NODE_DOWN``); a DOWN node stays DOWN
  until ``recovery_threshold`` consecutive successes (``NODE_RECOVERING`` meanwhile) — the
  hysteresis that stops a flapping node from bouncing between DOWN and HEALTHY.
* ``DEGRADED`` - reachable but not fit: replica lag beyond the RPO (``LAG_BEYOND_RPO``),
  replication not streaming (``REPLICATION_BROKEN``), replay paused (``REPLAY_PAUSED``), HTTP
  health failing (``HTTP_HEALTH_FAILING``), more than one primary (``MULTIPLE_PRIMARIES``), or
  changing between up and down at least ``flap_changes`` times within ``flap_window`` ticks
  (``NODE_FLAPPING``).
* ``HEALTHY`` - reachable and fit (``OK``).

Region verdicts aggregate their nodes: all HEALTHY -> HEALTHY; all (known) DOWN -> DOWN; some
node still serving (HEALTHY/DEGRADED) beside worse ones -> DEGRADED; SUSPECT and DOWN nodes
only -> SUSPECT.

Every assessment carries one reason code and one human sentence for the whole tick.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from orchestrator.model import (
    Assessment,
    NodeHealth,
    NodeRef,
    NodeSample,
    RegionHealth,
    Snapshot,
    Topology,
    Verdict,
)
from probes.base import Role


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """Thresholds of the health model (taken from ``probes`` and ``objectives`` in the config)."""

    failure_threshold: int = 3
    recovery_threshold: int = 3
    flap_window: int = 10
    flap_changes: int = 4
    rpo: float = 60.0
    receiver_silence: float = 4.0
    """Seconds without a message from upstream after which a replica counts as having lost it."""


def assess_all(
    snapshots: Iterable[Snapshot], topo: Topology, settings: HealthSettings
) -> Assessment | None:
    """Fold :func:`assess` over a window of snapshots, oldest first."""
    current: Assessment | None = None
    for snap in snapshots:
        current = assess(current, snap, topo, settings)
    return current


def assess(
    prev: Assessment | None, snap: Snapshot, topo: Topology, settings: HealthSettings
) -> Assessment:
    """Judge one tick given the previous assessment (None on the first tick)."""
    previous = {n.node.name: n for n in prev.nodes} if prev else {}
    primaries = {s.node.name for s in snap.primaries()}
    nodes = tuple(
        _node(previous.get(ref.name), ref, snap.sample(ref.name), snap.at, settings, primaries)
        for ref in topo.nodes
    )
    regions = tuple(_region(r, [n for n in nodes if n.node.region == r]) for r in topo.regions)
    primary = _primary(prev.primary if prev else None, snap, primaries)
    confirmed = _loss_confirmed(primary, snap, settings)
    reason, sentence = _summary(topo, nodes, regions, primary, primaries, confirmed, settings)
    return Assessment(
        cycle=snap.cycle,
        at=snap.at,
        nodes=nodes,
        regions=regions,
        primary=primary,
        reason=reason,
        sentence=sentence,
        primary_loss_confirmed=confirmed,
    )


# --- nodes ---------------------------------------------------------------------------------


def _node(
    prev: NodeHealth | None,
    ref: NodeRef,
    sample: NodeSample | None,
    at: float,
    settings: HealthSettings,
    primaries: set[str],
) -> NodeHealth:
    if prev is None:
        prev = NodeHealth(node=ref, verdict=Verdict.UNKNOWN, reason="NOT_OBSERVED")
    if sample is None:
        return prev
    ok = sample.ok
    history = (*prev.history, ok)[-settings.flap_window :]
    failures = 0 if ok else prev.consecutive_failures + 1
    successes = prev.consecutive_successes + 1 if ok else 0
    role = sample.role if ok else Role.UNKNOWN
    last_role = role if ok and role is not Role.UNKNOWN else prev.last_role

    if not ok:
        cause = sample.database.error_class or "error"
        if failures >= settings.failure_threshold or prev.verdict is Verdict.DOWN:
            verdict, reason = Verdict.DOWN, f"NODE_DOWN:{cause}"
        else:
            verdict, reason = Verdict.SUSPECT, f"PROBE_FAILED:{cause}"
    elif prev.verdict is Verdict.DOWN and successes < settings.recovery_threshold:
        verdict, reason = Verdict.DOWN, "NODE_RECOVERING"
    else:
        verdict, reason = _fitness(sample, history, settings, primaries)

    since = prev.since if verdict is prev.verdict and prev.since is not None else at
    return NodeHealth(
        node=ref,
        verdict=verdict,
        reason=reason,
        consecutive_failures=failures,
        consecutive_successes=successes,
        history=history,
        role=role,
        last_role=last_role,
        lag_seconds=sample.lag_seconds if ok else prev.lag_seconds,
        lag_bytes=sample.lag_bytes if ok else prev.lag_bytes,
        timeline=(
            sample.database.database.timeline
            if ok and sample.database.database is not None
            else prev.timeline
        ),
        since=since,
    )


def _fitness(
    sample: NodeSample, history: tuple[bool, ...], settings: HealthSettings, primaries: set[str]
) -> tuple[Verdict, str]:
    """Verdict of a reachable node that is not recovering from DOWN."""
    db = sample.database.database
    if sample.role is Role.PRIMARY and len(primaries) > 1:
        return Verdict.DEGRADED, "MULTIPLE_PRIMARIES"
    if db is not None and sample.role is Role.REPLICA:
        if db.replay_paused:
            return Verdict.DEGRADED, "REPLAY_PAUSED"
        if db.wal_receiver_status != "streaming":
            return Verdict.DEGRADED, "REPLICATION_BROKEN"
        if sample.lag_seconds is not None and sample.lag_seconds > settings.rpo:
            return Verdict.DEGRADED, "LAG_BEYOND_RPO"
    if sample.http is not None and not sample.http.ok:
        return Verdict.DEGRADED, f"HTTP_HEALTH_FAILING:{sample.http.error_class}"
    if _changes(history) >= settings.flap_changes:
        return Verdict.DEGRADED, "NODE_FLAPPING"
    return Verdict.HEALTHY, "OK"


def _changes(history: tuple[bool, ...]) -> int:
    return sum(1 for a, b in pairwise(history) if a != b)


# --- regions and the primary ---------------------------------------------------------------


def _region(region: str, nodes: list[NodeHealth]) -> RegionHealth:
    known = [n for n in nodes if n.verdict is not Verdict.UNKNOWN]
    if not known:
        return RegionHealth(region, Verdict.UNKNOWN, "NOT_OBSERVED")
    worst = max(known, key=lambda n: n.verdict.severity)
    detail = f"{worst.node.name}:{worst.reason}"
    if all(n.verdict is Verdict.HEALTHY for n in known):
        return RegionHealth(region, Verdict.HEALTHY, "OK")
    if all(n.verdict is Verdict.DOWN for n in known):
        return RegionHealth(region, Verdict.DOWN, detail)
    if any(n.verdict in (Verdict.HEALTHY, Verdict.DEGRADED) for n in known):
        return RegionHealth(region, Verdict.DEGRADED, detail)
    # Only SUSPECT and DOWN nodes: not every node is proven down yet.
    return RegionHealth(region, Verdict.SUSPECT, detail)


def _primary(previous: str | None, snap: Snapshot, primaries: set[str]) -> str | None:
    """The node believed to be primary: the reachable one, else the last one known."""
    if len(primaries) == 1:
        return next(iter(primaries))
    if len(primaries) > 1:
        if previous in primaries:
            return previous
        best = max(
            (s for s in snap.primaries()),
            key=lambda s: (
                (s.database.database.timeline or 0) if s.database.database else 0,
                s.node.name,
            ),
        )
        return best.node.name
    return previous


def _loss_confirmed(primary: str | None, snap: Snapshot, settings: HealthSettings) -> bool:
    """Every reachable replica says it lost its upstream (the holistic check)."""
    if primary is None:
        return False
    sample = snap.sample(primary)
    if sample is not None and sample.ok:
        return False
    replicas = [s for s in snap.samples if s.ok and s.role is Role.REPLICA]
    if not replicas:
        return False
    for s in replicas:
        db = s.database.database
        if db is None:
            return False
        silent = (
            db.wal_receiver_last_msg_age is not None
            and db.wal_receiver_last_msg_age > settings.receiver_silence
        )
        if db.wal_receiver_status == "streaming" and not silent:
            return False
    return True


def _summary(
    topo: Topology,
    nodes: tuple[NodeHealth, ...],
    regions: tuple[RegionHealth, ...],
    primary: str | None,
    primaries: set[str],
    confirmed: bool,
    settings: HealthSettings,
) -> tuple[str, str]:
    """One reason code and one sentence for the whole tick, most important finding first."""
    by_name = {n.node.name: n for n in nodes}
    if all(n.verdict is Verdict.UNKNOWN for n in nodes):
        return "STARTING", "Waiting for the first observations."
    if len(primaries) > 1:
        names = ", ".join(sorted(primaries))
        return "SPLIT_BRAIN", f"{len(primaries)} nodes claim to be primary: {names}."
    if primary is None:
        return "NO_PRIMARY", "No reachable node reports the primary role."
    p = by_name[primary]
    where = f"primary {primary} in {p.node.region}"
    subject = where[0].upper() + where[1:]
    if p.verdict is Verdict.DOWN:
        confirm = "replicas confirm the loss" if confirmed else "replicas still see it"
        if p.reason == "NODE_RECOVERING":
            return (
                "PRIMARY_RECOVERING",
                f"{subject} answers again ({p.consecutive_successes}/"
                f"{settings.recovery_threshold} good probes before it counts as healthy).",
            )
        return (
            "PRIMARY_DOWN",
            f"{subject} is DOWN after {p.consecutive_failures} failed probes "
            f"({_cause(p.reason)}); {confirm}.",
        )
    if p.verdict is Verdict.SUSPECT:
        return (
            "PRIMARY_SUSPECT",
            f"{subject} missed {p.consecutive_failures} probe(s) ({_cause(p.reason)}); watching.",
        )
    if p.verdict is Verdict.DEGRADED:
        return "PRIMARY_DEGRADED", f"{subject} is degraded ({p.reason})."
    bad_regions = [r for r in regions if r.verdict is not Verdict.HEALTHY]
    lags = [n.lag_seconds for n in nodes if n.lag_seconds is not None]
    lag_txt = f"max replica lag {max(lags):.1f}s" if lags else "replica lag not measured yet"
    rpo = f"RPO {settings.rpo:g}s"
    if not bad_regions:
        return (
            "ALL_HEALTHY",
            f"All {len(regions)} regions healthy; {where}; {lag_txt} ({rpo}).",
        )
    worst = max(bad_regions, key=lambda r: r.verdict.severity)
    if worst.verdict is Verdict.UNKNOWN:
        return "REGION_UNKNOWN", f"Region {worst.region} not observed yet; {where} is healthy."
    code = "REGION_" + worst.verdict.name
    if any(n.reason == "LAG_BEYOND_RPO" for n in nodes):
        code = "LAG_BEYOND_RPO"
    return (
        code,
        f"Region {worst.region} is {worst.verdict.name} ({worst.reason}); "
        f"{where} is healthy; {lag_txt} ({rpo}).",
    )


def _cause(reason: str) -> str:
    return reason.split(":", 1)[1] if ":" in reason else reason.lower()
