"""DR drill judgement. Pure: no I/O, no asyncio, no clock (every time is an argument).

* :func:`prechecks` - may a drill start now? A drill never starts unless every check passes:
  every region and node HEALTHY, a primary known, every replica's lag within the RPO, no open
  incident, not paused, no drill already holding the lock, no unfinished runbook run (and, for
  a failover drill, a failure command to inject the failure with).
* :func:`judge_leg` - did one leg meet the objectives? Passed iff its run completed with the
  candidate promoted and no failed step, RTO <= the RTO objective, RPO <= the RPO objective,
  DNS verified on every provider and every smoke check passed. Every miss is a reason.
* The client-side arithmetic of the synthetic write load: :func:`longest_gap` (write
  unavailability), :func:`lost_seqs` and :func:`rpo_seconds` (data loss), and
  :func:`phases_of` (a run's steps as the journal holds them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from orchestrator.decision import Controls
from orchestrator.model import Assessment, Verdict
from probes.base import Role


@dataclass(frozen=True, slots=True)
class Check:
    """One named pass/fail finding with a human detail."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


# --- may a drill start? --------------------------------------------------------------------


def prechecks(
    assessment: Assessment,
    controls: Controls,
    open_incident: bool,
    unfinished_run: bool,
    rpo: float,
    *,
    kind: str = "switchover",
    failure_command: Sequence[str] | None = None,
) -> list[Check]:
    """Every reason a drill must not start now, as checks (all ``ok`` means it may start)."""
    checks = [
        _healthy(assessment),
        _primary(assessment),
        _lag(assessment, rpo),
        Check(
            "no_open_incident",
            not open_incident,
            "an incident is open: a drill never runs during a real incident"
            if open_incident
            else "no incident is open",
        ),
        Check(
            "not_paused",
            not controls.paused,
            "the orchestrator is paused (maintenance mode)"
            if controls.paused
            else "the orchestrator is not paused",
        ),
        Check(
            "no_drill_running",
            controls.drill is None,
            f"drill {controls.drill} holds the drill lock"
            if controls.drill is not None
            else "no other drill is running",
        ),
        Check(
            "no_unfinished_run",
            not unfinished_run,
            "a failover or switchover run is unfinished in the journal"
            if unfinished_run
            else "no runbook run is unfinished",
        ),
    ]
    if kind == "failover":
        checks.append(
            Check(
                "failure_command",
                bool(failure_command),
                f"the failure is injected with {list(failure_command)}"
                if failure_command
                else "a failover drill needs drill.failure_command (how to fail the primary)",
            )
        )
    return checks


def _healthy(a: Assessment) -> Check:
    bad = [f"{n.node.name} {n.verdict.value} ({n.reason})" for n in a.nodes if not _fit(n.verdict)]
    bad += [
        f"region {r.region} {r.verdict.value} ({r.reason})"
        for r in a.regions
        if not _fit(r.verdict)
    ]
    if bad:
        return Check("regions_healthy", False, "not healthy: " + "; ".join(bad))
    return Check(
        "regions_healthy",
        True,
        f"all {len(a.regions)} regions and {len(a.nodes)} nodes healthy",
    )


def _fit(v: Verdict) -> bool:
    return v is Verdict.HEALTHY


def _primary(a: Assessment) -> Check:
    if a.primary is None:
        return Check("primary_known", False, "no primary is known")
    node = a.node(a.primary)
    if node.consecutive_failures or node.role is not Role.PRIMARY:
        return Check(
            "primary_known", False, f"{a.primary} is not answering as the primary ({node.reason})"
        )
    return Check("primary_known", True, f"{a.primary} in {node.node.region}")


def _lag(a: Assessment, rpo: float) -> Check:
    replicas = [n for n in a.nodes if n.node.name != a.primary and n.role is not Role.PRIMARY]
    problems, seen = [], []
    for n in replicas:
        if n.lag_seconds is not None:
            seen.append(f"{n.node.name} {n.lag_seconds:.1f}s")
            if n.lag_seconds > rpo:
                problems.append(f"{n.node.name} lags {n.lag_seconds:.1f}s, beyond the RPO")
        elif n.lag_bytes == 0:
            seen.append(f"{n.node.name} 0 bytes behind")
        else:
            bytes_txt = "unknown" if n.lag_bytes is None else f"{n.lag_bytes} bytes"
            problems.append(f"{n.node.name} lag unknown (seconds not measured, {bytes_txt})")
    if problems:
        return Check("lag_within_rpo", False, "; ".join(problems) + f" (RPO {rpo:g}s)")
    return Check("lag_within_rpo", True, f"{', '.join(seen) or 'no replicas'} (RPO {rpo:g}s)")


def refused_reasons(checks: Iterable[Check]) -> list[str]:
    """The details of the failed checks (why a drill was refused)."""
    return [f"{c.name}: {c.detail}" for c in checks if not c.ok]


# --- did a leg meet the objectives? ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LegFacts:
    """What a leg measured, as :func:`judge_leg` needs it."""

    completed: bool
    """The run ended ``completed`` and the candidate was promoted."""
    run_reason: str | None
    """Why the run did not complete (None when it did)."""
    failed_steps: tuple[str, ...]
    """``"<step>: <error>"`` for each step that failed (``on_failure: continue`` included)."""
    rto_seconds: float | None
    rpo_seconds: float | None
    dns: tuple[Check, ...]
    smoke: tuple[Check, ...]


def judge_leg(leg: LegFacts, rto_objective: float, rpo_objective: float) -> tuple[bool, list[str]]:
    """(passed, reasons): passed iff every criterion in the module docstring holds."""
    reasons: list[str] = []
    if not leg.completed:
        reasons.append(f"the run did not complete: {leg.run_reason or 'no promotion'}")
    reasons += [f"step failed: {s}" for s in leg.failed_steps]
    if leg.rto_seconds is None:
        reasons.append("RTO not measured (no verified write through the service name)")
    elif leg.rto_seconds > rto_objective:
        reasons.append(f"RTO {leg.rto_seconds:.2f}s exceeds the objective of {rto_objective:g}s")
    if leg.rpo_seconds is None:
        reasons.append("RPO not measured (lost commits could not be counted)")
    elif leg.rpo_seconds > rpo_objective:
        reasons.append(f"RPO {leg.rpo_seconds:.2f}s exceeds the objective of {rpo_objective:g}s")
    reasons += [f"DNS not verified on {c.name}: {c.detail}" for c in leg.dns if not c.ok]
    reasons += [f"smoke check {c.name} failed: {c.detail}" for c in leg.smoke if not c.ok]
    return not reasons, reasons


# --- the write load's arithmetic -------------------------------------------------------------


def longest_gap(ack_times: Sequence[float], start: float, end: float) -> float:
    """Write unavailability of the window ``[start, end]``: the longest gap between consecutive
    acknowledgements (sorted times) where the gap overlaps the window. A window that no later
    acknowledgement closes counts up to ``end``; no acknowledgement at all before or after the
    window counts from ``start`` / up to ``end`` (never negative)."""
    acks = sorted(ack_times)
    before = [t for t in acks if t < start]
    inside = [t for t in acks if start <= t <= end]
    after = [t for t in acks if t > end]
    points = ([before[-1]] if before else [start]) + inside + ([after[0]] if after else [end])
    return max((b - a for a, b in pairwise(points)), default=0.0)


def lost_seqs(acked: Iterable[int], present: Iterable[int]) -> list[int]:
    """Acknowledged sequence numbers missing from ``present`` (the new primary), sorted."""
    have = set(present)
    return sorted(s for s in set(acked) if s not in have)


def rpo_seconds(lost_ack_times: Sequence[float], failure_at: float) -> float:
    """Data-loss window of a leg: from the oldest lost acknowledged commit to the failure (or
    to the newest lost commit, if that is later); 0 when nothing acknowledged was lost."""
    if not lost_ack_times:
        return 0.0
    return round(max(failure_at, *lost_ack_times) - min(lost_ack_times), 3)


# --- a run's steps from the journal ----------------------------------------------------------


def phases_of(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One phase per step of a run, in the order the steps started: name, action, status
    (``ok``, ``failed`` or ``running`` when not ended), started_at and finished_at (journal
    times: the step's first start and its last end)."""
    phases: dict[str, dict[str, Any]] = {}
    for r in records:
        kind, step = r.get("kind"), r.get("step")
        if not isinstance(step, str):
            continue
        if kind == "step_started":
            p = phases.setdefault(
                step,
                {
                    "name": step,
                    "action": r.get("action"),
                    "status": "running",
                    "started_at": r.get("at"),
                    "finished_at": None,
                },
            )
            p["status"] = "running"
        elif kind in ("step_finished", "step_failed") and step in phases:
            phases[step]["status"] = "ok" if kind == "step_finished" else "failed"
            phases[step]["finished_at"] = r.get("at")
    return list(phases.values())
