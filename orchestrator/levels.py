"""BCP activation levels: classify the service's state as the plan's activation table does.

Pure: no asyncio, no I/O, no clock (``elapsed`` is an argument).

=====  =========================  ===============================================================
level  plan's event               when
=====  =========================  ===============================================================
0      single component failure   one replica down, or one failing probe; writes and the
                                  redundancy that protects them are intact (automated)
1      service degradation        writes are served, but the primary is degraded or flapping,
                                  a replica is beyond the RPO (a failover would lose data), no
                                  replica is left, or a DNS supplier is degraded
2      partial outage             the primary is lost and a replica still answers: writes are
                                  down until the failover (running, or done and monitored)
3      full outage                no node answers anywhere, or the primary is lost with no
                                  automatic way back (HOLD: RPO exceeded, no candidate, failover
                                  failed or automatic failover off)
4      regional disaster          every probe of a region fails: every node's database probe
                                  and every other check configured there (HTTP health). A
                                  region whose only evidence is one database probe is not
                                  called lost: a stopped database process is a component
                                  failure, not a disaster.
=====  =========================  ===============================================================

Escalation by duration: an incident open longer than its level's expected duration (the plan:
Level 1 up to 4 hours, Level 2 up to 24 hours) moves up one level, and again if it outlasts the
next level's; the result is the higher of the classification and the escalation.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.config_bcp import Levels
from orchestrator.model import Assessment, Snapshot, Verdict
from probes.base import Role

NAMES = (
    "single component failure",
    "service degradation",
    "partial outage",
    "full outage",
    "regional disaster",
)
"""The plan's event for each level (activation criteria table)."""
LABELS = ("None", "Level 1", "Level 2", "Level 3", "Level 4")
"""The plan's name of each activation level."""


def describe(level: int) -> str:
    """``Level 2 (partial outage)``; ``None (automated)`` for level 0."""
    return "None (automated)" if level == 0 else f"{LABELS[level]} ({NAMES[level]})"


@dataclass(frozen=True, slots=True)
class RegionFacts:
    region: str
    probes: int
    """Probes configured for the region's nodes (database + HTTP health)."""
    failing: int
    """Of those, how many failed on this tick (database probes count once the node is DOWN)."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What the classification needs from one tick."""

    primary_ok: bool
    """A primary answers (HEALTHY or DEGRADED)."""
    primary_degraded: bool
    primary_lost: bool
    """The primary is DOWN (or none answers after one was known)."""
    replicas: int
    replicas_down: int
    replicas_beyond_rpo: int
    any_node_answers: bool
    regions: tuple[RegionFacts, ...] = ()
    dns_degraded: bool = False
    no_automatic_recovery: bool = False
    """The decision engine holds (RPO exceeded, no candidate, automatic off, run failed)."""
    failover_running: bool = False


@dataclass(frozen=True, slots=True)
class Classification:
    level: int
    reason: str
    sentence: str
    authority: str
    escalated: bool = False


def facts_from(
    a: Assessment,
    snap: Snapshot | None,
    *,
    rpo: float,
    dns_degraded: bool = False,
    holding: bool = False,
    failover_running: bool = False,
) -> Facts:
    """Derive the facts from a tick's assessment and snapshot."""
    primary = a.node(a.primary) if a.primary is not None else None
    primary_ok = primary is not None and primary.verdict in (Verdict.HEALTHY, Verdict.DEGRADED)
    replicas = [n for n in a.nodes if a.primary is None or n.node.name != a.primary]
    regions = []
    for region in {n.node.region for n in a.nodes}:
        probes = failing = 0
        for n in (n for n in a.nodes if n.node.region == region):
            probes += 1
            failing += n.verdict is Verdict.DOWN
            sample = snap.sample(n.node.name) if snap is not None else None
            if sample is not None and sample.http is not None:
                probes += 1
                failing += not sample.http.ok
        regions.append(RegionFacts(region, probes, failing))
    return Facts(
        primary_ok=primary_ok,
        primary_degraded=primary is not None and primary.verdict is Verdict.DEGRADED,
        primary_lost=primary is not None and primary.verdict is Verdict.DOWN,
        replicas=len(replicas),
        replicas_down=sum(n.verdict is Verdict.DOWN for n in replicas),
        replicas_beyond_rpo=sum(
            1
            for n in replicas
            if n.role is Role.REPLICA and n.lag_seconds is not None and n.lag_seconds > rpo
        ),
        any_node_answers=any(n.consecutive_failures == 0 for n in a.nodes),
        regions=tuple(sorted(regions, key=lambda r: r.region)),
        dns_degraded=dns_degraded,
        no_automatic_recovery=holding,
        failover_running=failover_running,
    )


def classify(f: Facts) -> tuple[int, str, str]:
    """(level, reason code, sentence) for one tick's facts."""
    lost = [r.region for r in f.regions if r.probes >= 2 and r.failing >= r.probes]
    if lost:
        return 4, "REGION_LOST", f"every probe of region {', '.join(lost)} fails"
    if not f.any_node_answers:
        return 3, "NOTHING_SERVES", "no database node answers in any region"
    if f.primary_lost and f.no_automatic_recovery:
        return 3, "NO_AUTOMATIC_RECOVERY", "the primary is lost and no failover can proceed"
    if f.primary_lost or f.failover_running:
        return 2, "PRIMARY_LOST", "the primary is lost; writes wait for the failover"
    if f.primary_degraded:
        return 1, "PRIMARY_DEGRADED", "the primary answers but is degraded"
    if f.replicas_beyond_rpo:
        return (
            1,
            "REPLICA_BEYOND_RPO",
            (f"{f.replicas_beyond_rpo} replica(s) beyond the RPO: a failover would lose data"),
        )
    if f.replicas and f.replicas_down >= f.replicas:
        return 1, "NO_REDUNDANCY", "no replica answers: nothing to fail over to"
    if f.dns_degraded:
        return 1, "DNS_SUPPLIER_DEGRADED", "a DNS supplier is degraded"
    if f.replicas_down or any(r.failing for r in f.regions):
        return 0, "SINGLE_COMPONENT", "a single component failed; handled automatically"
    return 0, "OK", "every component is healthy"


def escalation_level(levels: Levels, level: int, elapsed: float) -> int:
    """The level an incident open for ``elapsed`` seconds has reached from ``level``: each
    level's expected duration (cumulative from the start) that has passed moves it up one."""
    while level < 4:
        expected = levels.policy(level).expected_duration
        if expected is None or elapsed <= expected:
            break
        level += 1
    return level


def assess_level(levels: Levels, f: Facts, elapsed: float | None) -> Classification:
    """Classify, then escalate by duration (``elapsed``: seconds the incident has been open;
    None when no incident is open)."""
    level, reason, sentence = classify(f)
    escalated = False
    if elapsed is not None:
        up = escalation_level(levels, level, elapsed)
        if up > level:
            sentence = (
                f"{sentence}; open {elapsed / 3600:.1f} h, beyond the "
                f"{NAMES[level]} expected duration"
            )
            level, reason, escalated = up, "ESCALATED_BY_DURATION", True
    return Classification(level, reason, sentence, levels.policy(level).authority, escalated)
