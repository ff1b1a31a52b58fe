"""Appendix C of the Business Continuity Plan (the incident checklist), ticked from an
incident's record.

Guarantees:

* Pure: no I/O and no clock; the same record gives the same checklist.
* The checklist is the plan's Appendix C, its sections and items in the plan's order and
  wording. An item is ticked (``by: "orchestrator"``) only on evidence in the record, with the
  time and the evidence; every other item is left for people (``by: "people"``).
* Tolerant of partial records: missing or mistyped values tick nothing and never raise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from orchestrator.reportparts import (
    as_maps,
    as_str,
    level_name,
    num,
    sub,
    timeline_events,
)

CHECKLIST: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    (
        "Initial Response",
        (
            "Incident confirmed",
            "BCP team notified",
            "Impact assessed",
            "Level determined",
            "Procedures initiated",
        ),
    ),
    (
        "During Incident",
        (
            "Regular status updates",
            "Customer communication",
            "Resource coordination",
            "Documentation maintained",
        ),
    ),
    (
        "Recovery",
        (
            "Services restored",
            "Verification complete",
            "Stakeholders notified",
            "Normal operations resumed",
        ),
    ),
    (
        "Post-Incident",
        (
            "Lessons learned meeting",
            "Plan updates identified",
            "Documentation updated",
            "Training needs assessed",
        ),
    ),
)
"""Appendix C of the Business Continuity Plan, verbatim."""


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the checklist rules read from an incident."""

    incident: Mapping[str, Any]
    when: Mapping[str, float]
    details: Mapping[str, str]
    notifications: Sequence[Mapping[str, Any]]
    levels: Sequence[Mapping[str, Any]]
    run_started: float | None


def _first_ok(notes: Sequence[Mapping[str, Any]], **match: str) -> Mapping[str, Any] | None:
    hits = [
        n
        for n in notes
        if n.get("ok") is True
        and num(n.get("at")) is not None
        and all(n.get(k) == v for k, v in match.items())
    ]
    return min(hits, key=lambda n: n["at"], default=None)


def _sent(n: Mapping[str, Any]) -> str:
    via = as_str(n.get("via")) or as_str(n.get("channel"), "?")
    return f"'{as_str(n.get('event'), '?')}' sent to {as_str(n.get('audience'), '?')} via {via}"


Evidence = tuple[float | None, str]


def _by_event(event: str, what: str) -> Callable[[_Facts], Evidence | None]:
    def rule(f: _Facts) -> Evidence | None:
        if event not in f.when:
            return None
        detail = f.details.get(event, "")
        return f.when[event], f"{what}" + (f": {detail}" if detail else "")

    return rule


def _notified(**match: str) -> Callable[[_Facts], Evidence | None]:
    def rule(f: _Facts) -> Evidence | None:
        n = _first_ok(f.notifications, **match)
        return None if n is None else (num(n["at"]), _sent(n))

    return rule


def _level(f: _Facts, template: str) -> Evidence | None:
    if not f.levels:
        return None
    first = f.levels[0]
    return num(first.get("at")), template.format(
        level=level_name(first.get("level"), "?"),
        reason=as_str(first.get("reason"), "-"),
        authority=as_str(first.get("authority"), "-"),
    )


def _procedures(f: _Facts) -> Evidence | None:
    run = as_str(f.incident.get("run_id"))
    if f.run_started is not None:
        return f.run_started, f"failover run {run} started"
    if "fenced" in f.when:
        return f.when["fenced"], "old primary fenced" + (f" (run {run})" if run else "")
    return None


def _updates(f: _Facts) -> Evidence | None:
    ups = sorted(
        (n for n in f.notifications if n.get("event") == "update" and n.get("ok") is True),
        key=lambda n: num(n.get("at")) or 0.0,
    )
    if not ups:
        return None
    audiences = sorted({as_str(n.get("audience"), "?") for n in ups})
    return num(ups[0].get("at")), f"{len(ups)} status update(s) sent to {', '.join(audiences)}"


def _documented(f: _Facts) -> Evidence | None:
    n = len(f.incident.get("timeline") or [])
    return num(f.incident.get("opened_at")), (
        f"incident record {as_str(f.incident.get('id'))} kept by the orchestrator ({n} events)"
    )


def _restored(f: _Facts) -> Evidence | None:
    if "promoted" in f.when:
        return f.when["promoted"], "new primary promoted: " + f.details.get("promoted", "")
    if "recovered" in f.when:
        return f.when["recovered"], "primary recovered: " + f.details.get("recovered", "")
    return None


def _resumed(f: _Facts) -> Evidence | None:
    status, closed = as_str(f.incident.get("status")), num(f.incident.get("closed_at"))
    if closed is None or status not in ("failed_over", "recovered"):
        return None
    return closed, f"incident closed as {status}"


CHECKLIST_RULES: Final[Mapping[str, Callable[[_Facts], Evidence | None]]] = {
    "Incident confirmed": _by_event("confirmed", "primary loss confirmed"),
    "BCP team notified": _notified(audience="bcp-team"),
    "Impact assessed": lambda f: _level(f, "classified {level}: {reason}"),
    "Level determined": lambda f: _level(f, "{level}, authority {authority}"),
    "Procedures initiated": _procedures,
    "Regular status updates": _updates,
    "Customer communication": _notified(audience="customers"),
    "Documentation maintained": _documented,
    "Services restored": _restored,
    "Verification complete": _by_event("first_verified_write", "write verified"),
    "Stakeholders notified": _notified(event="resolved"),
    "Normal operations resumed": _resumed,
}
"""How the orchestrator's records tick Appendix C items. Items absent here are for people."""


def incident_checklist(
    incident: Mapping[str, Any], run_started: float | None = None
) -> list[dict[str, Any]]:
    """Appendix C with the items the incident's record shows done ticked and timestamped."""
    events = timeline_events(incident)
    when: dict[str, float] = {}
    details: dict[str, str] = {}
    for e in events:
        when.setdefault(e["event"], e["at"])
        details.setdefault(e["event"], e["detail"])
    facts = _Facts(
        incident,
        when,
        details,
        as_maps(incident.get("notifications")),
        sorted(as_maps(incident.get("levels")), key=lambda lv: num(lv.get("at")) or 0.0),
        run_started,
    )
    t0 = num(incident.get("opened_at"))
    sections = []
    for section, items in CHECKLIST:
        rows = []
        for item in items:
            rule = CHECKLIST_RULES.get(item)
            hit = rule(facts) if rule else None
            at = hit[0] if hit else None
            rows.append(
                {
                    "item": item,
                    "done": hit is not None,
                    "by": "orchestrator" if hit is not None else "people",
                    "at": at,
                    "offset": sub(at, t0),
                    "evidence": hit[1].strip().rstrip(":") if hit else "",
                }
            )
        sections.append({"section": section, "items": rows})
    return sections
