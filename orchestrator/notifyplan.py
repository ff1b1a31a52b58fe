"""Who is told what, and when: the routing of notifications and the facts messages are built
from. Pure: no I/O, no asyncio, no clock (``now`` is always an argument).

Routing follows the business continuity plan's communication tables:

* an incident's audiences are those its current level names (``levels.<n>.notify``) plus every
  audience already told about it: whoever heard of an incident hears how it evolves and ends;
* ``opened``, ``level_changed``, ``status_changed`` and ``resolved`` go to all of them;
  ``acknowledged`` only to internal audiences (customers are not told of an acknowledgement);
* ``update`` (periodic) goes to the audiences in :func:`due_updates`;
* a drill leg (``incident.drill_id`` set) is prefixed ``[DRILL]``, never reaches a customer
  audience or a status page, and is not sent at all with ``send_drills: false``;
* ``drill_started`` / ``drill_finished`` go to the ``bcp-team`` audience (``send_drills``);
* PagerDuty takes an event only when it has an action for it (:func:`pagerduty_action`);
  Statuspage only takes customer messages of incident events other than ``acknowledged``
  (an internal audience listing a status page does not publish there).

One :class:`Route` is one rendered message for one channel: audiences that share a channel and
a template family get one message there, not one each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from orchestrator.config_bcp import Levels, NotificationSettings
from orchestrator.levels import LABELS, NAMES

INCIDENT_EVENTS: Final = (
    "opened",
    "level_changed",
    "acknowledged",
    "status_changed",
    "update",
    "resolved",
)
DRILL_EVENTS: Final = ("drill_started", "drill_finished")
EVENTS: Final = (*INCIDENT_EVENTS, "test", *DRILL_EVENTS)
DRILL_AUDIENCE: Final = "bcp-team"
CUSTOMER_STATUSES: Final = ("investigating", "identified", "monitoring", "resolved")
LEVEL_NAMES: Final = LABELS
LEVEL_EVENTS: Final = tuple(n.capitalize() for n in NAMES)
_PD_ACTIONS: Final = {
    "opened": "trigger",
    "level_changed": "trigger",
    "update": "trigger",
    "status_changed": "trigger",
    "acknowledged": "acknowledge",
    "resolved": "resolve",
}
_PD_SEVERITY: Final = ("info", "warning", "error", "critical", "critical")
_IDENTIFIED: Final = frozenset({"confirmed", "hold", "fenced", "promoted", "dns_switched"})


class Incident(Protocol):
    """What routing reads of an incident (:class:`orchestrator.incidents.Incident`; a protocol
    because the incident store does I/O)."""

    id: str
    opened_at: float
    primary: str
    region: str
    status: str
    kind: str
    timeline: list[dict[str, Any]]
    new_primary: str | None
    rto_seconds: float | None
    rpo_seconds: float | None
    rpo_bytes: int | None
    notes: list[str]
    closed_at: float | None
    level: int
    levels: list[dict[str, Any]]
    notifications: list[dict[str, Any]]
    drill_id: str | None

    @property
    def is_open(self) -> bool: ...

    def when(self, name: str) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Route:
    """One message: rendered from ``template`` (``internal`` | ``customer`` | a drill event)
    and sent to ``channel`` on behalf of ``audiences``."""

    channel: str
    template: str
    audiences: tuple[str, ...]


# --- routing -----------------------------------------------------------------------------------


def informed(incident: Incident) -> list[str]:
    """Audiences that got (or were sent) a message about this incident, first told first."""
    out: list[str] = []
    for rec in incident.notifications:
        name = rec.get("audience")
        if rec.get("event") != "test" and isinstance(name, str) and name not in out:
            out.append(name)
    return out


def last_message_at(incident: Incident, audience: str) -> float | None:
    """When the last message to ``audience`` about this incident was attempted."""
    times = [float(r["at"]) for r in incident.notifications if r.get("audience") == audience]
    return max(times) if times else None


def due_updates(incident: Incident, settings: NotificationSettings, now: float) -> list[str]:
    """Audiences of an open incident whose ``update_interval`` has elapsed since the last
    message to them (an audience never told is not due: it hears of the incident through its
    level's messages first)."""
    if not incident.is_open:
        return []
    out = []
    for name in informed(incident):
        aud = settings.audience(name)
        last = last_message_at(incident, name)
        if aud is None or aud.update_interval is None or last is None:
            continue
        if now - last >= aud.update_interval:
            out.append(name)
    return out


def audiences_for(
    incident: Incident, event: str, settings: NotificationSettings, levels: Levels, now: float
) -> list[str]:
    """Audience names for an incident event, in the order the level names them."""
    if event == "update":
        return due_updates(incident, settings, now)
    names = list(levels.policy(max(0, min(incident.level, 4))).notify)
    return names + [n for n in informed(incident) if n not in names]


def channel_takes(kind: str, event: str, drill: bool) -> bool:
    """Whether a channel of ``kind`` carries ``event`` (see the module docstring)."""
    if kind == "pagerduty":
        return pagerduty_action(event) is not None
    if kind == "statuspage":
        return not drill and event in INCIDENT_EVENTS and event != "acknowledged"
    return True


def routes(
    incident: Incident, event: str, settings: NotificationSettings, levels: Levels, now: float
) -> list[Route]:
    """The messages an incident event calls for; [] when nobody is to be told."""
    if event not in INCIDENT_EVENTS:
        raise ValueError(f"{event!r} is not an incident event {INCIDENT_EVENTS}")
    drill = incident.drill_id is not None
    if drill and not settings.send_drills:
        return []
    wanted: list[tuple[str, str]] = []
    for name in audiences_for(incident, event, settings, levels, now):
        aud = settings.audience(name)
        if aud is None:
            continue
        if aud.template == "customer" and (drill or event == "acknowledged"):
            continue
        wanted.append((name, aud.template))
    return _group(wanted, settings, event, drill)


def drill_routes(event: str, settings: NotificationSettings) -> list[Route]:
    """Where a drill announcement goes: the bcp-team audience, unless ``send_drills`` is off."""
    if event not in DRILL_EVENTS:
        raise ValueError(f"{event!r} is not a drill event {DRILL_EVENTS}")
    if not settings.send_drills or settings.audience(DRILL_AUDIENCE) is None:
        return []
    return _group([(DRILL_AUDIENCE, event)], settings, event, True)


def _group(
    wanted: list[tuple[str, str]], settings: NotificationSettings, event: str, drill: bool
) -> list[Route]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for name, template in wanted:
        aud = settings.audience(name)
        for ch in aud.channels if aud else []:
            kind = settings.channel(ch).kind
            if kind == "statuspage" and template != "customer":
                continue  # a public page only ever shows customer messages
            if channel_takes(kind, event, drill):
                grouped.setdefault((ch, template), []).append(name)
    return [Route(ch, tpl, tuple(names)) for (ch, tpl), names in grouped.items()]


# --- provider vocabulary -----------------------------------------------------------------------


def pagerduty_action(event: str) -> str | None:
    """trigger | acknowledge | resolve, or None: PagerDuty does not take this event."""
    return _PD_ACTIONS.get(event)


def pagerduty_severity(level: int) -> str:
    """Level 0 info, 1 warning, 2 error, 3 and 4 critical."""
    return _PD_SEVERITY[max(0, min(level, 4))]


def dedup_key(service: str, incident_id: str) -> str:
    """The PagerDuty dedup key of one incident: the same for all of its events."""
    return f"helios-{service}-{incident_id}"


def comms_test_dedup_key(service: str, now: float) -> str:
    """A dedup key for a communication test, distinct from every incident's."""
    return f"helios-{service}-test-{_stamp(now)}"


def customer_status(incident: Incident) -> str:
    """investigating (open, not confirmed) | identified (confirmed, held, failover running) |
    monitoring (a write through the service name succeeded on the new primary, or the primary
    recovered) | resolved (closed, and resolved or recovered)."""
    seen = {e["event"] for e in incident.timeline}
    if not incident.is_open and seen & {"resolved", "recovered"}:
        return "resolved"
    if incident.status == "recovered" or "first_verified_write" in seen:
        return "monitoring"
    if seen & _IDENTIFIED or incident.status in ("held", "failed", "failed_over"):
        return "identified"
    return "investigating"


def component_status(incident: Incident) -> str:
    """The Statuspage component status: by customer status, then by level."""
    status = customer_status(incident)
    if status == "resolved":
        return "operational"
    if status == "monitoring" or incident.level <= 1:
        return "degraded_performance"
    return "partial_outage" if incident.level == 2 else "major_outage"


# --- message facts -----------------------------------------------------------------------------


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M UTC")


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%S")


def customer_facts(incident: Incident, rto: float, now: float) -> dict[str, str]:
    """The customer template's fields: status, description, impact, actions, eta."""
    status = customer_status(incident)
    where = f"the {incident.region} region"
    description = f"an interruption of the database service in {where}"
    impact = "Database requests may fail or time out."
    if incident.level >= 3:
        impact = "The database service may be unavailable."
    target = incident.opened_at + rto
    eta = (
        f"Service is expected to be restored by {_hhmm(target)}."
        if now < target
        else "We will give an estimate in our next update."
    )
    seen = {e["event"] for e in incident.timeline}
    actions = "We are verifying the failure and preparing to move the service to a standby region."
    if seen & {"fenced", "promoted", "dns_switched"}:
        actions = "We are moving the database service to a standby region."
    elif incident.status == "held":
        actions = "Our engineers are deciding on the safest way to restore the service."
    if status == "monitoring":
        restored = incident.when("first_verified_write") or incident.closed_at or now
        actions = "The database service now runs in a standby region; we are monitoring it."
        impact = "The service is restored; applications may need to reconnect."
        if incident.rpo_seconds:
            impact += (
                f" Writes made in the last {incident.rpo_seconds:.1f} s before the interruption"
                " may need to be checked."
            )
        eta = f"Service was restored at {_hhmm(restored)}."
    elif status == "resolved":
        resolved = incident.when("resolved") or incident.closed_at or now
        impact = "None: the service is operating normally."
        actions = "The incident is resolved; we will publish a post-incident review."
        eta = f"Resolved at {_hhmm(resolved)}."
    return {
        "status": status,
        "description": description,
        "impact": impact,
        "actions": actions,
        "eta": eta,
    }


def rto_clock(incident: Incident, rto: float, now: float) -> dict[str, Any]:
    """Seconds on the RTO clock (first failure -> first verified write, or -> closing when the
    incident closed without a failover) against the objective; ``state`` running | met |
    missed."""
    if incident.rto_seconds is not None:
        elapsed = incident.rto_seconds
        state = "met" if elapsed <= rto else "missed"
    elif incident.is_open:
        elapsed = max(0.0, now - incident.opened_at)
        state = "running" if elapsed <= rto else "missed"
    else:
        elapsed = max(0.0, (incident.closed_at or now) - incident.opened_at)
        state = "met" if elapsed <= rto else "missed"
    return {"elapsed": round(elapsed, 1), "objective": rto, "state": state}


def incident_context(
    incident: Incident,
    event: str,
    *,
    service: str,
    settings: NotificationSettings,
    levels: Levels,
    rto: float,
    now: float,
) -> dict[str, Any]:
    """Everything the internal and customer templates may use (see the shipped templates)."""
    level = max(0, min(incident.level, 4))
    drill = incident.drill_id is not None
    facts = customer_facts(incident, rto, now)
    last_level = incident.levels[-1] if incident.levels else {}
    return {
        "event": event,
        "service": service,
        "service_title": settings.service_title,
        "status_url": settings.status_url,
        "drill": drill,
        "prefix": "[DRILL] " if drill else "",
        "now": _iso(now),
        "incident": {
            "id": incident.id,
            "primary": incident.primary,
            "region": incident.region,
            "status": incident.status,
            "kind": incident.kind,
            "new_primary": incident.new_primary,
            "opened_at": _iso(incident.opened_at),
            "closed_at": _iso(incident.closed_at) if incident.closed_at else None,
            "is_open": incident.is_open,
            "rto_seconds": incident.rto_seconds,
            "rpo_seconds": incident.rpo_seconds,
            "rpo_bytes": incident.rpo_bytes,
            "notes": list(incident.notes),
            "drill_id": incident.drill_id,
        },
        "level": level,
        "level_name": LEVEL_NAMES[level],
        "level_event": LEVEL_EVENTS[level],
        "authority": levels.policy(level).authority,
        "level_reason": str(last_level.get("reason", "")),
        "timeline": [
            {
                "event": e["event"],
                "at": _iso(e["at"]),
                "offset": round(e["at"] - incident.opened_at, 2),
                "detail": e.get("detail", ""),
            }
            for e in incident.timeline
        ],
        "rto": rto_clock(incident, rto, now),
        "customer": facts,
        **facts,
    }
