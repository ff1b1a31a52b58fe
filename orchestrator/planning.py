"""Failover and switchover plans. Pure: built from the assessment, the decision's candidates,
the runbook and the DNS plan; no I/O, no clock.

A :class:`FailoverPlan` is exactly what ``orchestrator failover --dry-run`` prints and what the
executor runs: the real run and the dry run share everything up to here. Its safety rails live
in :func:`raise_if_unsafe`; ``--accept-data-loss`` and ``--force`` are the only overrides and
both are recorded in the plan (and so in the journal and the incident).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.decision import Candidate
from orchestrator.dnsplan import SwitchPlan
from orchestrator.errors import UnsafePlan


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the plan needs to know about one node (from config and the last assessment)."""

    name: str
    region: str
    host: str
    port: int
    slot: str
    """Replication slot name this node uses on its upstream."""
    reachable: bool
    role: str
    fence_command: bool
    """Whether a fence command is configured (needed to fence an unreachable node)."""
    agent: bool = False
    """Whether the node's agent fences it on request (node agents enabled)."""


@dataclass(frozen=True, slots=True)
class PlannedStep:
    name: str
    action: str
    params: Mapping[str, Any]
    timeout: float
    attempts: int
    on_failure: str
    approval: bool = False

    @property
    def worst_case(self) -> float:
        return self.timeout * self.attempts


@dataclass(frozen=True, slots=True)
class FailoverPlan:
    kind: str
    """``failover`` or ``switchover``."""
    trigger: str
    """``automatic``, ``manual`` or ``drill``."""
    old_primary: NodeFacts
    candidate: Candidate
    why: str
    expected_loss_seconds: float | None
    expected_loss_bytes: int | None
    fence: str
    dns: SwitchPlan | None
    steps: tuple[PlannedStep, ...]
    rto: float
    rpo: float
    accept_data_loss: bool = False
    force: bool = False
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def worst_case_seconds(self) -> float:
        return sum(s.worst_case for s in self.steps)

    def checksum(self) -> str:
        """Digest of everything the operator reviewed: nodes, candidate, loss, DNS, steps."""
        doc = {
            "kind": self.kind,
            "old": [self.old_primary.name, self.old_primary.reachable, self.old_primary.role],
            "candidate": [
                self.candidate.node,
                self.candidate.lag_seconds,
                self.candidate.lag_bytes,
            ],
            "dns": self.dns.checksum() if self.dns else None,
            "steps": [
                [s.name, s.action, dict(s.params), s.timeout, s.attempts] for s in self.steps
            ],
        }
        raw = json.dumps(doc, sort_keys=True, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        cum = 0.0
        steps = []
        for s in self.steps:
            cum += s.worst_case
            steps.append(
                {
                    "name": s.name,
                    "action": s.action,
                    "params": dict(s.params),
                    "timeout_seconds": s.timeout,
                    "attempts": s.attempts,
                    "on_failure": s.on_failure,
                    "approval": s.approval,
                    "worst_case_cumulative_seconds": round(cum, 1),
                }
            )
        return {
            "kind": self.kind,
            "trigger": self.trigger,
            "checksum": self.checksum(),
            "old_primary": {
                "node": self.old_primary.name,
                "region": self.old_primary.region,
                "reachable": self.old_primary.reachable,
            },
            "candidate": {
                "node": self.candidate.node,
                "region": self.candidate.region,
                "lag_seconds": self.candidate.lag_seconds,
                "lag_bytes": self.candidate.lag_bytes,
                "within_rpo": self.candidate.within_rpo,
            },
            "why": self.why,
            "expected_data_loss": {
                "seconds": self.expected_loss_seconds,
                "bytes": self.expected_loss_bytes,
            },
            "fence": self.fence,
            "dns": [
                {
                    "provider": c.provider,
                    "record": c.after.name,
                    "type": c.after.type,
                    "current": list(c.before.values) if c.before else None,
                    "new": list(c.after.values),
                    "ttl": c.after.ttl,
                    "change": c.kind.value,
                }
                for c in (self.dns.changes if self.dns else ())
            ],
            "steps": steps,
            "budget": {
                "rto_seconds": self.rto,
                "rpo_seconds": self.rpo,
                "worst_case_seconds": round(self.worst_case_seconds, 1),
                "fits_rto": self.worst_case_seconds <= self.rto,
            },
            "overrides": {"accept_data_loss": self.accept_data_loss, "force": self.force},
        }


def fence_description(old: NodeFacts, kind: str) -> str:
    if kind == "switchover":
        return f"stop writes on {old.name} (read-only, sessions terminated) and wait for replay"
    if old.fence_command:
        return f"run the fence command of {old.name} (it must stop it for good)"
    if old.agent:
        return (
            f"ask the node agent of {old.name} to fence it; without quorum contact it fences "
            "itself within agent.fence_after: the promotion waits until it certainly has"
        )
    if old.reachable:
        return (
            f"{old.name} answers: read-only + terminate sessions (no fence_command "
            "configured: not a hard fence)"
        )
    return f"{old.name} unreachable and no fence_command: cannot fence"


def raise_if_unsafe(plan: FailoverPlan, *, primary_healthy: bool) -> None:
    """Refuse a plan that breaks a rail. Overrides: accept_data_loss, force (both recorded).

    The cooldown between automatic failovers is the decision engine's rail
    (:func:`orchestrator.decision.in_cooldown`); a human asking for a failover is not bound by it.
    """
    c = plan.candidate
    if c.node == plan.old_primary.name:
        raise UnsafePlan(f"{c.node} is the current primary; it cannot be the candidate")
    if plan.kind == "failover":
        if primary_healthy and not plan.force:
            raise UnsafePlan(
                f"the primary {plan.old_primary.name} is healthy: a failover would cut off a "
                "working primary; use `orchestrator switchover` (or --force)"
            )
        if not c.within_rpo and not plan.accept_data_loss:
            lag = "unknown" if c.lag_seconds is None else f"{c.lag_seconds:.1f}s"
            raise UnsafePlan(
                f"{c.node} lags {lag} at the moment of loss, beyond the RPO of {plan.rpo:g}s; "
                "pass --accept-data-loss to promote it anyway"
            )
        old = plan.old_primary
        if not old.reachable and not old.fence_command and not old.agent and not plan.force:
            raise UnsafePlan(
                f"{plan.old_primary.name} is unreachable and has no fence_command: it could come "
                "back as a second writable primary; configure a fence or pass --force"
            )
    elif not primary_healthy:
        raise UnsafePlan(
            f"a switchover needs a healthy primary; {plan.old_primary.name} is not: "
            "use `orchestrator failover`"
        )
