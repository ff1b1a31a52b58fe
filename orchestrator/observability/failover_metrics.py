"""Prometheus metrics of decisions, failovers and incidents (names are public interface)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from orchestrator.decision import Controls, Memory, State
from orchestrator.incidents import Incident

PHASES = ("confirmed", "fenced", "promoted", "dns_switched", "first_verified_write")


class FailoverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.failovers = Counter(
            "helios_failovers_total",
            "Failovers by trigger and result.",
            ["trigger", "result"],
            registry=r,
        )
        self.phase = Gauge(
            "helios_failover_phase_seconds",
            "Seconds from the first failure to each phase of the last failover.",
            ["phase"],
            registry=r,
        )
        self.last_rto = Gauge(
            "helios_last_rto_seconds", "Measured RTO of the last failover.", registry=r
        )
        self.last_rpo = Gauge(
            "helios_last_rpo_seconds",
            "Measured RPO (lag at promotion) of the last failover.",
            registry=r,
        )
        self.state = Gauge(
            "helios_decision_state", "1 for the decision engine's state.", ["state"], registry=r
        )
        self.hold = Gauge("helios_hold", "1 while a human decision is needed (HOLD).", registry=r)
        self.paused = Gauge("helios_paused", "1 in maintenance mode.", registry=r)
        self.cooldown = Gauge(
            "helios_cooldown", "1 while automatic failover is in cooldown.", registry=r
        )
        self.incident_open = Gauge(
            "helios_incident_open", "1 while an incident is open.", registry=r
        )
        self.incident_elapsed = Gauge(
            "helios_incident_elapsed_seconds",
            "Seconds since the open incident's first failure (the RTO clock).",
            registry=r,
        )

        self.level = Gauge(
            "helios_activation_level",
            "BCP activation level the service is in now (0 none .. 4 regional disaster).",
            registry=r,
        )
        self.incident_level = Gauge(
            "helios_incident_level",
            "Activation level of the open incident (0 when none is open).",
            registry=r,
        )

    def record_level(self, service_level: int, incident_level: int) -> None:
        self.level.set(service_level)
        self.incident_level.set(incident_level)

    def record_decision(
        self,
        mem: Memory,
        controls: Controls,
        incident: Incident | None,
        now: float,
        cooldown: bool,
    ) -> None:
        for s in State:
            self.state.labels(s.value).set(1 if mem.state is s else 0)
        self.hold.set(1 if mem.state is State.HOLD else 0)
        self.paused.set(1 if controls.paused else 0)
        self.cooldown.set(1 if cooldown else 0)
        is_open = incident is not None and incident.is_open
        self.incident_open.set(1 if is_open else 0)
        self.incident_elapsed.set(now - incident.opened_at if incident and is_open else 0)

    def failover_done(self, trigger: str, inc: Incident, ok: bool) -> None:
        self.failovers.labels(trigger, "success" if ok else "failure").inc()
        for phase in PHASES:
            at = inc.when(phase)
            if at is not None:
                self.phase.labels(phase).set(at - inc.opened_at)
        if inc.rto_seconds is not None:
            self.last_rto.set(inc.rto_seconds)
        if inc.rpo_seconds is not None:
            self.last_rpo.set(inc.rpo_seconds)
