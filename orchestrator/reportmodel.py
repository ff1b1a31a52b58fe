"""Report documents for incidents and DR drills: pure functions from records to one JSON-able dict
(the incident's here, the drill's in :mod:`orchestrator.drillreport`).

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
* An incident's checklist is the plan's Appendix C, ticked only on evidence in the record
  (:mod:`orchestrator.checklist`).

Document layout (see :func:`build_incident_doc`,
:func:`orchestrator.drillreport.build_drill_doc`)::

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
from collections.abc import Mapping, Sequence
from typing import Any, Final

from orchestrator.checklist import incident_checklist
from orchestrator.reportparts import (
    SCHEMA,
    as_int,
    as_map,
    as_maps,
    as_str,
    budget_observations,
    budget_use,
    fact_rows,
    fmt_duration,
    fmt_offset,
    fmt_time,
    lessons,
    level_name,
    num,
    objectives_of,
    phase_row,
    step_observations,
    step_phase,
    sub,
    timeline_events,
)

# (phase, end event): a phase starts at the latest earlier event of the chain that happened.
_INCIDENT_PHASES: Final = (
    ("detection", "confirmed"),
    ("decision & fencing", "fenced"),
    ("promotion", "promoted"),
    ("DNS switch", "dns_switched"),
    ("verification", "first_verified_write"),
)
_CHAIN: Final = ("first_failure", "confirmed", "fenced", "promoted", "dns_switched")


def journal_steps(
    records: Sequence[Mapping[str, Any]],
) -> tuple[float | None, list[dict[str, Any]]]:
    """(run start, steps) from one run's journal records: each step's name, action, status
    (ok | failed | running), started_at, finished_at, attempts and error, in start order."""
    started: float | None = None
    steps: dict[str, dict[str, Any]] = {}
    for r in records:
        kind, at, name = r.get("kind"), num(r.get("at")), as_str(r.get("step"))
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
            s["action"] = as_str(r.get("action"), s["action"])
            s["started_at"] = s["started_at"] if s["started_at"] is not None else at
            continue
        s["status"] = "ok" if kind == "step_finished" else "failed"
        s["finished_at"], s["attempts"] = at, as_int(r.get("attempts"))
        s["error"] = as_str(r.get("error"))
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
        rows.append(phase_row(name, "timeline", max(starts, default=t0), end, t0))
    if "recovered" in when and "first_verified_write" not in when:
        starts = [at for e, at in when.items() if e in _CHAIN and at <= when["recovered"]]
        rows.append(
            phase_row(
                "primary recovered", "timeline", max(starts, default=t0), when["recovered"], t0
            )
        )
    return rows


def _notifications(incident: Mapping[str, Any], t0: float) -> list[dict[str, Any]]:
    out = []
    for n in as_maps(incident.get("notifications")):
        at = num(n.get("at"))
        out.append(
            {
                "at": at,
                "offset": sub(at, t0),
                **{k: as_str(n.get(k)) for k in ("event", "audience", "channel", "via", "detail")},
                "ok": n.get("ok") is True,
            }
        )
    return sorted(out, key=lambda n: n["at"] if n["at"] is not None else math.inf)


def _incident_observations(doc: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    obs = budget_observations(doc["rto"], doc["rpo"], "first failure -> first verified write")
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
    obs += step_observations(steps)
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
    events = timeline_events(incident)
    t0 = num(incident.get("opened_at"))
    if t0 is None:
        t0 = events[0]["at"] if events else 0.0
    when: dict[str, float] = {}
    for e in events:
        when.setdefault(e["event"], e["at"])
    run_started, steps = journal_steps(journal_records or [])
    plan = as_map(incident.get("plan"))
    budget = as_map(plan.get("budget"))
    obj = objectives_of(objectives, budget)
    rto_used = num(incident.get("rto_seconds"))
    if rto_used is None and "recovered" in when:
        rto_used = when["recovered"] - t0
    rto = budget_use(rto_used, obj["rto_seconds"])
    rpo = budget_use(num(incident.get("rpo_seconds")), obj["rpo_seconds"])
    rpo.update(bytes=as_int(incident.get("rpo_bytes")), lost_commits=None)
    closed_at = num(incident.get("closed_at"))
    end = closed_at if closed_at is not None else (events[-1]["at"] if events else None)
    status = as_str(incident.get("status"), "open")
    primary, region = as_str(incident.get("primary"), "?"), as_str(incident.get("region"), "?")
    new_primary = as_str(incident.get("new_primary")) or None
    ident = as_str(incident.get("id"), "inc-?")
    leg = {
        "name": f"{primary} ({region}) -> {new_primary or 'no new primary'}",
        "started_at": t0,
        "finished_at": end,
        "offset": 0.0,
        "duration_seconds": sub(end, t0),
        "run_id": as_str(incident.get("run_id")) or None,
        "incident_id": None,
        "passed": None,
        "reasons": [],
        "rto": rto,
        "rpo": rpo,
        "write_unavailable_seconds": None,
        "lost_commits": None,
        "acked_commits": None,
        "phases": _incident_phases(when, t0) + [step_phase(s, t0, "step ") for s in steps],
        "dns": [],
        "smoke": [],
    }
    levels = [
        {
            "level": as_int(lv.get("level")),
            "name": level_name(lv.get("level")),
            "at": num(lv.get("at")),
            "offset": sub(num(lv.get("at")), t0),
            "reason": as_str(lv.get("reason")),
            "authority": as_str(lv.get("authority")),
        }
        for lv in sorted(as_maps(incident.get("levels")), key=lambda lv: num(lv.get("at")) or 0.0)
    ]
    verdict, verdict_text = _incident_verdict(status, closed_at is not None, rto, rpo)
    drill_id = as_str(incident.get("drill_id")) or None
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
        "duration_seconds": sub(closed_at, t0),
        "generated_at": generated_at,
        "objectives": obj,
        "rto": rto,
        "rpo": rpo,
        "facts": fact_rows(
            ("Status", status),
            ("Incident kind", as_str(incident.get("kind"), "-")),
            ("Opened (first failure)", fmt_time(t0)),
            ("Closed", fmt_time(closed_at)),
            ("Lost primary", f"{primary} ({region})"),
            ("New primary", new_primary or "-"),
            ("BCP activation level", level_name(incident.get("level"))),
            ("Failover run", as_str(incident.get("run_id"), "-") or "-"),
            ("Why this candidate", as_str(plan.get("why"), "-") or "-"),
            ("DR drill", drill_id or "no (a real incident)"),
        ),
        "legs": [leg],
        "timeline": [{**e, "offset": sub(e["at"], t0)} for e in events],
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
    doc["lessons"] = lessons(_incident_observations(doc, steps))
    return doc
