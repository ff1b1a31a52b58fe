"""The report document of a DR drill record: a pure function from the record to one JSON-able
dict, in the layout and with the guarantees of :mod:`orchestrator.reportmodel` (no I/O, no
clock, tolerant of partial records).

Each leg keeps its own phases and its own RTO/RPO; a drill has no Appendix C checklist (its
legs' incidents do).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    fmt_number,
    fmt_percent,
    fmt_time,
    lessons,
    num,
    objectives_of,
    step_observations,
    step_phase,
    sub,
)


def _drill_leg(leg: Mapping[str, Any], obj: Mapping[str, float], t0: float) -> dict[str, Any]:
    phases = as_maps(leg.get("phases"))
    start = num(leg.get("started_at"))
    if start is None:
        start = min((v for p in phases if (v := num(p.get("started_at"))) is not None), default=t0)
    end = num(leg.get("finished_at"))
    rto = budget_use(num(leg.get("rto_seconds")), obj["rto_seconds"])
    rpo = budget_use(num(leg.get("rpo_seconds")), obj["rpo_seconds"])
    rpo.update(bytes=None, lost_commits=as_int(leg.get("lost_commits")))
    passed = leg.get("passed")
    frm = f"{as_str(leg.get('from_node'), '?')} ({as_str(leg.get('from_region'), '?')})"
    to = f"{as_str(leg.get('to_node'), '?')} ({as_str(leg.get('to_region'), '?')})"
    return {
        "name": as_str(leg.get("name")) or f"{frm} -> {to}",
        "from": frm,
        "to": to,
        "started_at": start,
        "finished_at": end,
        "offset": sub(start, t0),
        "duration_seconds": sub(end, start),
        "run_id": as_str(leg.get("run_id")) or None,
        "incident_id": as_str(leg.get("incident_id")) or None,
        "passed": passed if isinstance(passed, bool) else None,
        "reasons": [r for r in leg.get("reasons") or [] if isinstance(r, str)],
        "rto": rto,
        "rpo": rpo,
        "write_unavailable_seconds": num(leg.get("write_unavailable_seconds")),
        "lost_commits": as_int(leg.get("lost_commits")),
        "acked_commits": as_int(leg.get("acked_commits")),
        "phases": [step_phase(p, start) for p in phases],
        "dns": [
            {
                "provider": as_str(d.get("provider")),
                "ok": d.get("ok") is True,
                "detail": as_str(d.get("detail")),
            }
            for d in as_maps(leg.get("dns"))
        ],
        "smoke": [
            {
                **{k: as_str(s.get(k)) for k in ("name", "kind", "detail")},
                "ok": s.get("ok") is True,
                "latency_ms": num(s.get("latency_ms")),
            }
            for s in as_maps(leg.get("smoke"))
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
    return obs + step_observations(as_maps(raw.get("phases")))


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
    raw_legs = as_maps(drill.get("legs"))
    starts = [v for leg in raw_legs if (v := num(leg.get("started_at"))) is not None]
    t0 = num(drill.get("started_at"))
    if t0 is None:
        t0 = min(starts, default=0.0)
    obj = objectives_of(as_map(drill.get("objectives")))
    legs = [_drill_leg(leg, obj, t0) for leg in raw_legs]
    rtos = [leg["rto"]["used_seconds"] for leg in legs if leg["rto"]["used_seconds"] is not None]
    rpos = [leg["rpo"]["used_seconds"] for leg in legs if leg["rpo"]["used_seconds"] is not None]
    rto = budget_use(max(rtos, default=None), obj["rto_seconds"])
    rpo = budget_use(max(rpos, default=None), obj["rpo_seconds"])
    lost = [leg["lost_commits"] for leg in legs if leg["lost_commits"] is not None]
    rpo.update(bytes=None, lost_commits=sum(lost) if lost else None)
    finished = num(drill.get("finished_at"))
    result = as_str(drill.get("result")) or ("running" if finished is None else "unknown")
    reasons = [r for r in drill.get("reasons") or [] if isinstance(r, str)]
    ident = as_str(drill.get("id"), "drill-?")
    kind, trigger = as_str(drill.get("kind"), "?"), as_str(drill.get("trigger"), "?")
    dry_run = drill.get("dry_run") is True
    load = as_map(drill.get("load"))
    prechecks = [
        {
            "name": as_str(p.get("name")),
            "ok": p.get("ok") is True,
            "detail": as_str(p.get("detail")),
        }
        for p in as_maps(drill.get("prechecks"))
    ]
    obs = budget_observations(rto, rpo, "worst leg")
    obs += [f"Pre-check {p['name']} failed: {p['detail']}." for p in prechecks if not p["ok"]]
    for leg, raw in zip(legs, raw_legs, strict=True):
        obs += _leg_observations(leg, raw)
    if as_int(load.get("errors")):
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
        "duration_seconds": sub(finished, t0),
        "generated_at": generated_at,
        "objectives": obj,
        "rto": rto,
        "rpo": rpo,
        "facts": fact_rows(
            ("Result", result),
            ("Drill kind", kind),
            ("Trigger", trigger),
            ("Dry run", "yes" if dry_run else "no"),
            ("Started", fmt_time(t0)),
            ("Finished", fmt_time(finished)),
            ("Duration", fmt_duration(sub(finished, t0))),
            ("Legs", str(len(legs))),
            (
                "Write load",
                f"{fmt_number(load.get('rate'))}/s, {fmt_number(load.get('acked'))} acknowledged, "
                f"{fmt_number(load.get('errors'))} errors",
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
        "lessons": lessons(obs),
    }
    return doc


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
