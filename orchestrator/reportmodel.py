"""Report documents for incidents and DR drills: pure functions from records to one JSON-able dict.

Guarantees:

* No I/O and no clock: the same inputs give the same document (``generated_at`` is passed in).
* The document holds only JSON types (dict, list, str, int, float, bool, None), so
  ``json.loads(json.dumps(doc)) == doc``.
* Tolerant of partial records (an incident still open, a drill that was refused, a field another
  version did not write): a missing or mistyped value becomes ``None`` and never raises. Only an
  input that is not a mapping raises :class:`TypeError`.
* Phase offsets (``start``/``end``, seconds) count from the start of their leg: the incident's
  first failure, or the drill leg's start. ``percent`` is the share of the budget used (100 = the
  whole budget), rounded to 0.1.
* The checklist is the plan's Appendix C, its items in the plan's order and wording. An item is
  ticked (``by: "orchestrator"``) only on evidence in the record, with the time and the evidence;
  every other item is left for people (``by: "people"``).

Document layout (see :func:`build_incident_doc`, :func:`build_drill_doc`)::

    id, kind ("incident" | "drill"), title, verdict, verdict_text, started_at, finished_at,
    duration_seconds, generated_at, objectives {rto_seconds, rpo_seconds},
    rto {used_seconds, budget_seconds, percent, within}, rpo {... , bytes, lost_commits},
    facts [{label, value}], legs [{name, started_at, finished_at, offset, duration_seconds,
    rto, rpo, phases [{name, group, action, status, start, end, duration, attempts, detail}],
    dns, smoke, passed, reasons, ...}], timeline, notifications, levels, prechecks, reasons,
    notes, checklist [{section, items [{item, done, by, at, offset, evidence}]}],
    checklist_done, checklist_total, lessons {prompts [{title, hint}], observations [str]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from orchestrator.levels import describe

SCHEMA: Final = 1
DEFAULT_OBJECTIVES: Final[dict[str, float]] = {"rto_seconds": 300.0, "rpo_seconds": 60.0}
"""The plan's objectives for the production database service (RTO 5 min, RPO 1 min)."""

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

LESSON_PROMPTS: Final[tuple[tuple[str, str], ...]] = (
    ("What happened", "The cause and the course of events, in your own words."),
    ("What went well", "What helped: automation, alerts, people, documentation."),
    ("What went wrong", "What slowed the recovery down or put data at risk."),
    ("Action items", "Each with an owner and a due date."),
)

LEVEL_NAMES: Final = tuple(describe(level) for level in range(5))

# (phase, end event): a phase starts at the latest earlier event of the chain that happened.
_INCIDENT_PHASES: Final = (
    ("detection", "confirmed"),
    ("decision & fencing", "fenced"),
    ("promotion", "promoted"),
    ("DNS switch", "dns_switched"),
    ("verification", "first_verified_write"),
)
_CHAIN: Final = ("first_failure", "confirmed", "fenced", "promoted", "dns_switched")


# --- small value helpers -------------------------------------------------------------------


def num(value: Any) -> float | None:
    """``value`` as a finite float, or None (bools, strings, NaN and infinities are None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _maps(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def percent(used: float | None, budget: float | None) -> float | None:
    """``used`` as a percentage of ``budget`` (0.1 precision); None if either is unknown."""
    if used is None or budget is None or budget <= 0:
        return None
    return round(used / budget * 100.0, 1)


def budget_use(used: float | None, budget: float) -> dict[str, Any]:
    """``{used_seconds, budget_seconds, percent, within}``; ``within`` is None when unmeasured."""
    return {
        "used_seconds": None if used is None else round(used, 3),
        "budget_seconds": budget,
        "percent": percent(used, budget),
        "within": None if used is None else used <= budget,
    }


def fmt_time(ts: Any) -> str:
    """Epoch seconds as ``2026-11-27 21:05:34.426 UTC``; ``-`` when unknown."""
    value = num(ts)
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def fmt_duration(seconds: Any) -> str:
    """``0.131 s``, ``12.4 s``, ``1 min``, ``4 min 12 s``; ``-`` when unknown."""
    value = num(seconds)
    if value is None:
        return "-"
    if abs(value) < 10:
        return f"{value:.3g} s" if value else "0 s"
    if abs(value) < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def fmt_offset(seconds: Any) -> str:
    """``+2.000 s`` (millisecond precision); ``-`` when unknown."""
    value = num(seconds)
    return "-" if value is None else f"{value:+.3f} s"


def fmt_percent(value: Any) -> str:
    v = num(value)
    return "-" if v is None else f"{v:g}%"


def _objectives(*sources: Mapping[str, Any] | None) -> dict[str, float]:
    """The first positive rto_seconds/rpo_seconds found in ``sources``, else the plan's."""
    out: dict[str, float] = {}
    for key, default in DEFAULT_OBJECTIVES.items():
        values = (num(s.get(key)) for s in sources if isinstance(s, Mapping))
        out[key] = next((v for v in values if v is not None and v > 0), default)
    return out


def _phase(
    name: str,
    group: str,
    start: float | None,
    end: float | None,
    t0: float,
    **extra: Any,
) -> dict[str, Any]:
    row = {
        "name": name,
        "group": group,
        "action": "",
        "status": "ok" if end is not None else "running",
        "start": _sub(start, t0),
        "end": _sub(end, t0),
        "duration": _sub(end, start),
        "attempts": None,
        "detail": "",
    }
    row.update({k: v for k, v in extra.items() if v is not None})
    return row


# --- incidents -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the checklist rules read from an incident."""

    incident: Mapping[str, Any]
    when: Mapping[str, float]
    details: Mapping[str, str]
    notifications: Sequence[Mapping[str, Any]]
    levels: Sequence[Mapping[str, Any]]
    run_started: float | None


def _events(incident: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for e in _maps(incident.get("timeline")):
        at = num(e.get("at"))
        if at is not None and _str(e.get("event")):
            out.append({"event": e["event"], "at": at, "detail": _str(e.get("detail"))})
    return sorted(out, key=lambda e: e["at"])


def journal_steps(
    records: Sequence[Mapping[str, Any]],
) -> tuple[float | None, list[dict[str, Any]]]:
    """(run start, steps) from one run's journal records: each step's name, action, status
    (ok | failed | running), started_at, finished_at, attempts and error, in start order."""
    started: float | None = None
    steps: dict[str, dict[str, Any]] = {}
    for r in records:
        kind, at, name = r.get("kind"), num(r.get("at")), _str(r.get("step"))
        if kind == "run_started" and started is None:
            started = at
        if not name or kind not in ("step_started", "step_finished", "step_failed"):
            continue
        s = steps.setdefault(
            name,
            {
                "name": name,
                "action": "",
                "status": "running",
                "started_at": None,
                "finished_at": None,
                "attempts": None,
                "error": "",
            },
        )
        if kind == "step_started":
            s["action"] = _str(r.get("action"), s["action"])
            s["started_at"] = s["started_at"] if s["started_at"] is not None else at
            continue
        s["status"] = "ok" if kind == "step_finished" else "failed"
        s["finished_at"], s["attempts"] = at, _int(r.get("attempts"))
        s["error"] = _str(r.get("error"))
        duration = num(r.get("duration"))
        if s["started_at"] is None and at is not None and duration is not None:
            s["started_at"] = at - duration
    return started, list(steps.values())


def _incident_phases(when: Mapping[str, float], t0: float) -> list[dict[str, Any]]:
    rows = []
    for name, end_event in _INCIDENT_PHASES:
        end = when.get(end_event)
        if end is None:
            continue
        earlier = _CHAIN[: _CHAIN.index(end_event)] if end_event in _CHAIN else _CHAIN
        starts = [when[e] for e in earlier if e in when and when[e] <= end]
        rows.append(_phase(name, "timeline", max(starts, default=t0), end, t0))
    if "recovered" in when and "first_verified_write" not in when:
        starts = [at for e, at in when.items() if e in _CHAIN and at <= when["recovered"]]
        rows.append(
            _phase("primary recovered", "timeline", max(starts, default=t0), when["recovered"], t0)
        )
    return rows


def _step_phase(step: Mapping[str, Any], t0: float, prefix: str = "") -> dict[str, Any]:
    start, end = num(step.get("started_at")), num(step.get("finished_at"))
    status = _str(step.get("status"), "ok" if end is not None else "running")
    return _phase(
        f"{prefix}{_str(step.get('name'), '?')}",
        "steps",
        start if start is not None else end,
        end,
        t0,
        action=_str(step.get("action")),
        status=status,
        attempts=_int(step.get("attempts")),
        detail=_str(step.get("error")),
    )


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
    via = _str(n.get("via")) or _str(n.get("channel"), "?")
    return f"'{_str(n.get('event'), '?')}' sent to {_str(n.get('audience'), '?')} via {via}"


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
    level = _int(first.get("level"))
    name = LEVEL_NAMES[level] if level is not None and 0 <= level < len(LEVEL_NAMES) else "?"
    return num(first.get("at")), template.format(
        level=name,
        reason=_str(first.get("reason"), "-"),
        authority=_str(first.get("authority"), "-"),
    )


def _procedures(f: _Facts) -> Evidence | None:
    run = _str(f.incident.get("run_id"))
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
    audiences = sorted({_str(n.get("audience"), "?") for n in ups})
    return num(ups[0].get("at")), f"{len(ups)} status update(s) sent to {', '.join(audiences)}"


def _documented(f: _Facts) -> Evidence | None:
    n = len(f.incident.get("timeline") or [])
    return num(f.incident.get("opened_at")), (
        f"incident record {_str(f.incident.get('id'))} kept by the orchestrator ({n} events)"
    )


def _restored(f: _Facts) -> Evidence | None:
    if "promoted" in f.when:
        return f.when["promoted"], "new primary promoted: " + f.details.get("promoted", "")
    if "recovered" in f.when:
        return f.when["recovered"], "primary recovered: " + f.details.get("recovered", "")
    return None


def _resumed(f: _Facts) -> Evidence | None:
    status, closed = _str(f.incident.get("status")), num(f.incident.get("closed_at"))
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
    events = _events(incident)
    when: dict[str, float] = {}
    details: dict[str, str] = {}
    for e in events:
        when.setdefault(e["event"], e["at"])
        details.setdefault(e["event"], e["detail"])
    facts = _Facts(
        incident,
        when,
        details,
        _maps(incident.get("notifications")),
        sorted(_maps(incident.get("levels")), key=lambda lv: num(lv.get("at")) or 0.0),
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
                    "offset": _sub(at, t0),
                    "evidence": hit[1].strip().rstrip(":") if hit else "",
                }
            )
        sections.append({"section": section, "items": rows})
    return sections


def _notifications(incident: Mapping[str, Any], t0: float) -> list[dict[str, Any]]:
    out = []
    for n in _maps(incident.get("notifications")):
        at = num(n.get("at"))
        out.append(
            {
                "at": at,
                "offset": _sub(at, t0),
                **{k: _str(n.get(k)) for k in ("event", "audience", "channel", "via", "detail")},
                "ok": n.get("ok") is True,
            }
        )
    return sorted(out, key=lambda n: n["at"] if n["at"] is not None else math.inf)


def _incident_observations(doc: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    obs = _budget_observations(doc["rto"], doc["rpo"], "first failure -> first verified write")
    leg = doc["legs"][0]
    timed = [p for p in leg["phases"] if p["group"] == "timeline" and p["duration"] is not None]
    total = sum(p["duration"] for p in timed)
    if timed and total > 0:
        longest = max(timed, key=lambda p: p["duration"])
        share = round(longest["duration"] / total * 100)
        obs.append(
            f"The longest phase was {longest['name']}: {fmt_duration(longest['duration'])} "
            f"({share}% of the time to recovery)."
        )
    obs += _step_observations(steps)
    for n in doc["notifications"]:
        if not n["ok"]:
            obs.append(
                f"Notification '{n['event']}' to {n['audience']} via {n['channel'] or '?'} "
                f"failed at {fmt_offset(n['offset'])}: {n['detail'] or 'no detail'}."
            )
    if doc["levels"][1:]:
        path = " -> ".join(str(lv["level"]) for lv in doc["levels"])
        obs.append(f"The activation level changed during the incident: {path}.")
    for e in doc["timeline"]:
        if e["event"] == "hold":
            obs.append(f"Automatic failover was held at {fmt_offset(e['offset'])}: {e['detail']}.")
    if doc["divergent"]:
        obs.append(f"Nodes that may hold divergent writes: {', '.join(doc['divergent'])}.")
    if doc["finished_at"] is None:
        obs.append("The incident was still open when this report was built: it is provisional.")
    return obs


def _step_observations(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    obs = []
    for s in steps:
        attempts = _int(s.get("attempts"))
        if s.get("status") == "failed":
            obs.append(f"Step {s.get('name')} failed: {_str(s.get('error')) or 'no detail'}.")
        elif attempts is not None and attempts > 1:
            obs.append(f"Step {s.get('name')} needed {attempts} attempts.")
        elif s.get("status") == "running":
            obs.append(f"Step {s.get('name')} has no recorded end (interrupted or in flight).")
    return obs


def _budget_observations(rto: Mapping[str, Any], rpo: Mapping[str, Any], how: str) -> list[str]:
    obs = []
    if rto["used_seconds"] is None:
        obs.append("RTO not measured: no verified write through the service name was recorded.")
    else:
        verdict = "within" if rto["within"] else "OVER"
        obs.append(
            f"RTO used {fmt_percent(rto['percent'])}: {fmt_duration(rto['used_seconds'])} of "
            f"{fmt_duration(rto['budget_seconds'])} ({verdict} budget; {how})."
        )
    if rpo["used_seconds"] is not None:
        verdict = "within" if rpo["within"] else "OVER"
        extra = f", {rpo['bytes']} bytes of WAL not received" if rpo.get("bytes") else ""
        obs.append(
            f"RPO used {fmt_percent(rpo['percent'])}: a data loss window of "
            f"{fmt_duration(rpo['used_seconds'])} of {fmt_duration(rpo['budget_seconds'])}"
            f"{extra} ({verdict} budget)."
        )
    return obs


def _lessons(observations: list[str]) -> dict[str, Any]:
    return {
        "prompts": [{"title": t, "hint": h} for t, h in LESSON_PROMPTS],
        "observations": observations,
    }


def _incident_verdict(
    status: str, closed: bool, rto: Mapping[str, Any], rpo: Mapping[str, Any]
) -> tuple[str, str]:
    if not closed:
        return "open", f"Still open (status {status}): this report is provisional."
    if status == "failed":
        return "failed", "The automatic recovery failed: people had to restore the service."
    if rto["within"] is False or rpo["within"] is False:
        return "missed", f"Closed as {status}, outside the recovery objectives."
    if rto["within"] is None:
        return "unmeasured", f"Closed as {status}; the recovery time was not measured."
    return "met", f"Closed as {status} within the recovery objectives."


def build_incident_doc(
    incident: Mapping[str, Any],
    journal_records: Sequence[Mapping[str, Any]] | None = None,
    *,
    objectives: Mapping[str, Any] | None = None,
    generated_at: float | None = None,
) -> dict[str, Any]:
    """The report of one incident (``dataclasses.asdict(Incident)``).

    ``journal_records`` are the journal's records of the incident's run (``run_id``), if any:
    their steps become phase rows too, and ``run_started`` is the evidence of "Procedures
    initiated". ``objectives`` (``rto_seconds``/``rpo_seconds``, e.g. from the config) win over
    the plan's budget and the plan defaults (300 s / 60 s). Phases come from the timeline:
    detection (first_failure -> confirmed), decision & fencing (-> fenced), promotion
    (-> promoted), DNS switch (-> dns_switched), verification (-> first_verified_write).
    """
    if not isinstance(incident, Mapping):
        raise TypeError(f"an incident is a mapping, not {type(incident).__name__}")
    events = _events(incident)
    t0 = num(incident.get("opened_at"))
    if t0 is None:
        t0 = events[0]["at"] if events else 0.0
    when: dict[str, float] = {}
    for e in events:
        when.setdefault(e["event"], e["at"])
    run_started, steps = journal_steps(journal_records or [])
    plan = _map(incident.get("plan"))
    budget = _map(plan.get("budget"))
    obj = _objectives(objectives, budget)
    rto_used = num(incident.get("rto_seconds"))
    if rto_used is None and "recovered" in when:
        rto_used = when["recovered"] - t0
    rto = budget_use(rto_used, obj["rto_seconds"])
    rpo = budget_use(num(incident.get("rpo_seconds")), obj["rpo_seconds"])
    rpo.update(bytes=_int(incident.get("rpo_bytes")), lost_commits=None)
    closed_at = num(incident.get("closed_at"))
    end = closed_at if closed_at is not None else (events[-1]["at"] if events else None)
    status = _str(incident.get("status"), "open")
    primary, region = _str(incident.get("primary"), "?"), _str(incident.get("region"), "?")
    new_primary = _str(incident.get("new_primary")) or None
    ident = _str(incident.get("id"), "inc-?")
    leg = {
        "name": f"{primary} ({region}) -> {new_primary or 'no new primary'}",
        "started_at": t0,
        "finished_at": end,
        "offset": 0.0,
        "duration_seconds": _sub(end, t0),
        "run_id": _str(incident.get("run_id")) or None,
        "incident_id": None,
        "passed": None,
        "reasons": [],
        "rto": rto,
        "rpo": rpo,
        "write_unavailable_seconds": None,
        "lost_commits": None,
        "acked_commits": None,
        "phases": _incident_phases(when, t0) + [_step_phase(s, t0, "step ") for s in steps],
        "dns": [],
        "smoke": [],
    }
    levels = [
        {
            "level": _int(lv.get("level")),
            "name": _level_name(lv.get("level")),
            "at": num(lv.get("at")),
            "offset": _sub(num(lv.get("at")), t0),
            "reason": _str(lv.get("reason")),
            "authority": _str(lv.get("authority")),
        }
        for lv in sorted(_maps(incident.get("levels")), key=lambda lv: num(lv.get("at")) or 0.0)
    ]
    verdict, verdict_text = _incident_verdict(status, closed_at is not None, rto, rpo)
    drill_id = _str(incident.get("drill_id")) or None
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "id": ident,
        "kind": "incident",
        "title": f"Incident {ident}: primary {primary} ({region}) lost"
        + (f", {new_primary} promoted" if new_primary else ""),
        "verdict": verdict,
        "verdict_text": verdict_text,
        "status": status,
        "started_at": t0,
        "finished_at": closed_at,
        "duration_seconds": _sub(closed_at, t0),
        "generated_at": generated_at,
        "objectives": obj,
        "rto": rto,
        "rpo": rpo,
        "facts": _facts(
            ("Status", status),
            ("Incident kind", _str(incident.get("kind"), "-")),
            ("Opened (first failure)", fmt_time(t0)),
            ("Closed", fmt_time(closed_at)),
            ("Lost primary", f"{primary} ({region})"),
            ("New primary", new_primary or "-"),
            ("BCP activation level", _level_name(incident.get("level"))),
            ("Failover run", _str(incident.get("run_id"), "-") or "-"),
            ("Why this candidate", _str(plan.get("why"), "-") or "-"),
            ("DR drill", drill_id or "no (a real incident)"),
        ),
        "legs": [leg],
        "timeline": [{**e, "offset": _sub(e["at"], t0)} for e in events],
        "notifications": _notifications(incident, t0),
        "levels": levels,
        "prechecks": [],
        "reasons": [],
        "divergent": [d for d in incident.get("divergent") or [] if isinstance(d, str)],
        "notes": [n for n in incident.get("notes") or [] if isinstance(n, str)],
        "drill_id": drill_id,
        "checklist": incident_checklist(incident, run_started),
    }
    items = [i for s in doc["checklist"] for i in s["items"]]
    doc["checklist_done"] = sum(1 for i in items if i["done"])
    doc["checklist_total"] = len(items)
    doc["lessons"] = _lessons(_incident_observations(doc, steps))
    return doc


def _level_name(level: Any) -> str:
    lv = _int(level)
    return LEVEL_NAMES[lv] if lv is not None and 0 <= lv < len(LEVEL_NAMES) else "-"


def _facts(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"label": label, "value": value} for label, value in pairs]


# --- drills --------------------------------------------------------------------------------


def _drill_leg(leg: Mapping[str, Any], obj: Mapping[str, float], t0: float) -> dict[str, Any]:
    phases = _maps(leg.get("phases"))
    start = num(leg.get("started_at"))
    if start is None:
        start = min((v for p in phases if (v := num(p.get("started_at"))) is not None), default=t0)
    end = num(leg.get("finished_at"))
    rto = budget_use(num(leg.get("rto_seconds")), obj["rto_seconds"])
    rpo = budget_use(num(leg.get("rpo_seconds")), obj["rpo_seconds"])
    rpo.update(bytes=None, lost_commits=_int(leg.get("lost_commits")))
    passed = leg.get("passed")
    frm = f"{_str(leg.get('from_node'), '?')} ({_str(leg.get('from_region'), '?')})"
    to = f"{_str(leg.get('to_node'), '?')} ({_str(leg.get('to_region'), '?')})"
    return {
        "name": _str(leg.get("name")) or f"{frm} -> {to}",
        "from": frm,
        "to": to,
        "started_at": start,
        "finished_at": end,
        "offset": _sub(start, t0),
        "duration_seconds": _sub(end, start),
        "run_id": _str(leg.get("run_id")) or None,
        "incident_id": _str(leg.get("incident_id")) or None,
        "passed": passed if isinstance(passed, bool) else None,
        "reasons": [r for r in leg.get("reasons") or [] if isinstance(r, str)],
        "rto": rto,
        "rpo": rpo,
        "write_unavailable_seconds": num(leg.get("write_unavailable_seconds")),
        "lost_commits": _int(leg.get("lost_commits")),
        "acked_commits": _int(leg.get("acked_commits")),
        "phases": [_step_phase(p, start) for p in phases],
        "dns": [
            {
                "provider": _str(d.get("provider")),
                "ok": d.get("ok") is True,
                "detail": _str(d.get("detail")),
            }
            for d in _maps(leg.get("dns"))
        ],
        "smoke": [
            {
                **{k: _str(s.get(k)) for k in ("name", "kind", "detail")},
                "ok": s.get("ok") is True,
                "latency_ms": num(s.get("latency_ms")),
            }
            for s in _maps(leg.get("smoke"))
        ],
    }


def _leg_observations(leg: Mapping[str, Any], raw: Mapping[str, Any]) -> list[str]:
    name = leg["name"]
    obs = [f"Leg {name} failed: {r}." for r in leg["reasons"] if leg["passed"] is False]
    if leg["rto"]["percent"] is not None:
        obs.append(
            f"Leg {name}: RTO used {fmt_percent(leg['rto']['percent'])} "
            f"({fmt_duration(leg['rto']['used_seconds'])})."
        )
    if leg["lost_commits"]:
        obs.append(
            f"Leg {name}: {leg['lost_commits']} of {leg['acked_commits'] or '?'} acknowledged "
            "commits were lost."
        )
    if leg["write_unavailable_seconds"] is not None:
        obs.append(
            f"Leg {name}: writes were unavailable for "
            f"{fmt_duration(leg['write_unavailable_seconds'])}."
        )
    obs += [
        f"Leg {name}: DNS provider {d['provider']} failed: {d['detail']}."
        for d in leg["dns"]
        if not d["ok"]
    ]
    obs += [
        f"Leg {name}: smoke test {s['name']} failed: {s['detail']}."
        for s in leg["smoke"]
        if not s["ok"]
    ]
    return obs + _step_observations(_maps(raw.get("phases")))


def build_drill_doc(
    drill: Mapping[str, Any], *, generated_at: float | None = None
) -> dict[str, Any]:
    """The report of one DR drill record (``<state_dir>/drills/<id>.json``).

    Each leg keeps its own phases (journal steps, offsets from the leg's start) and its RTO/RPO
    against the drill's objectives; the drill's ``rto``/``rpo`` are the worst leg's. A drill has
    no Appendix C checklist (its legs' incidents do); it has a lessons section.
    """
    if not isinstance(drill, Mapping):
        raise TypeError(f"a drill record is a mapping, not {type(drill).__name__}")
    raw_legs = _maps(drill.get("legs"))
    starts = [v for leg in raw_legs if (v := num(leg.get("started_at"))) is not None]
    t0 = num(drill.get("started_at"))
    if t0 is None:
        t0 = min(starts, default=0.0)
    obj = _objectives(_map(drill.get("objectives")))
    legs = [_drill_leg(leg, obj, t0) for leg in raw_legs]
    rtos = [leg["rto"]["used_seconds"] for leg in legs if leg["rto"]["used_seconds"] is not None]
    rpos = [leg["rpo"]["used_seconds"] for leg in legs if leg["rpo"]["used_seconds"] is not None]
    rto = budget_use(max(rtos, default=None), obj["rto_seconds"])
    rpo = budget_use(max(rpos, default=None), obj["rpo_seconds"])
    lost = [leg["lost_commits"] for leg in legs if leg["lost_commits"] is not None]
    rpo.update(bytes=None, lost_commits=sum(lost) if lost else None)
    finished = num(drill.get("finished_at"))
    result = _str(drill.get("result")) or ("running" if finished is None else "unknown")
    reasons = [r for r in drill.get("reasons") or [] if isinstance(r, str)]
    ident = _str(drill.get("id"), "drill-?")
    kind, trigger = _str(drill.get("kind"), "?"), _str(drill.get("trigger"), "?")
    dry_run = drill.get("dry_run") is True
    load = _map(drill.get("load"))
    prechecks = [
        {"name": _str(p.get("name")), "ok": p.get("ok") is True, "detail": _str(p.get("detail"))}
        for p in _maps(drill.get("prechecks"))
    ]
    obs = _budget_observations(rto, rpo, "worst leg")
    obs += [f"Pre-check {p['name']} failed: {p['detail']}." for p in prechecks if not p["ok"]]
    for leg, raw in zip(legs, raw_legs, strict=True):
        obs += _leg_observations(leg, raw)
    if _int(load.get("errors")):
        obs.append(f"The write load saw {load['errors']} errors.")
    if dry_run:
        obs.append("Dry run: the drill stopped before changing anything.")
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "id": ident,
        "kind": "drill",
        "title": f"DR drill {ident}: {kind} ({trigger}{', dry run' if dry_run else ''})",
        "verdict": result,
        "verdict_text": _drill_verdict(result, reasons, len(legs), rto),
        "status": result,
        "started_at": t0,
        "finished_at": finished,
        "duration_seconds": _sub(finished, t0),
        "generated_at": generated_at,
        "objectives": obj,
        "rto": rto,
        "rpo": rpo,
        "facts": _facts(
            ("Result", result),
            ("Drill kind", kind),
            ("Trigger", trigger),
            ("Dry run", "yes" if dry_run else "no"),
            ("Started", fmt_time(t0)),
            ("Finished", fmt_time(finished)),
            ("Duration", fmt_duration(_sub(finished, t0))),
            ("Legs", str(len(legs))),
            (
                "Write load",
                f"{_num_text(load.get('rate'))}/s, {_num_text(load.get('acked'))} acknowledged, "
                f"{_num_text(load.get('errors'))} errors",
            ),
        ),
        "legs": legs,
        "timeline": [],
        "notifications": [],
        "levels": [],
        "prechecks": prechecks,
        "reasons": reasons,
        "divergent": [],
        "notes": [],
        "drill_id": ident,
        "checklist": [],
        "checklist_done": 0,
        "checklist_total": 0,
        "lessons": _lessons(obs),
    }
    return doc


def _num_text(value: Any) -> str:
    v = num(value)
    return "-" if v is None else f"{v:g}"


def _drill_verdict(result: str, reasons: list[str], legs: int, rto: Mapping[str, Any]) -> str:
    why = "; ".join(reasons)
    match result:
        case "passed":
            return (
                f"Passed: {legs} leg(s); worst RTO {fmt_duration(rto['used_seconds'])} "
                f"({fmt_percent(rto['percent'])} of the budget)."
            )
        case "failed":
            return f"Failed: {why or 'see the legs below'}."
        case "refused":
            return f"Refused before any change: {why or 'a pre-check failed'}."
        case "aborted":
            return f"Aborted: {why or 'no reason recorded'}."
        case "running":
            return "Still running: this report is provisional."
        case _:
            return f"Result {result}."
