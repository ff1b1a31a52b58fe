"""Building blocks of the report documents (:mod:`orchestrator.reportmodel`,
:mod:`orchestrator.drillreport`, :mod:`orchestrator.checklist`): tolerant readers of record
values, budget arithmetic, the formatting the rendered reports use, and the rows and sections
both documents share (phases, facts, lessons).

Guarantees: pure (no I/O, no clock). The readers never raise: a missing or mistyped value
becomes ``None`` (or the given default); bools are never numbers, NaN and infinities never
finite numbers. Formatters return ``-`` for an unknown value. Offsets and durations are
rounded to the millisecond, percentages to 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from orchestrator.levels import describe

LEVEL_NAMES: Final = tuple(describe(level) for level in range(5))
SCHEMA: Final = 1
"""The version of the document layout."""
DEFAULT_OBJECTIVES: Final[dict[str, float]] = {"rto_seconds": 300.0, "rpo_seconds": 60.0}
"""The plan's objectives for the production database service (RTO 5 min, RPO 1 min)."""

LESSON_PROMPTS: Final[tuple[tuple[str, str], ...]] = (
    ("What happened", "The cause and the course of events, in your own words."),
    ("What went well", "What helped: automation, alerts, people, documentation."),
    ("What went wrong", "What slowed the recovery down or put data at risk."),
    ("Action items", "Each with an owner and a due date."),
)


# --- reading records -----------------------------------------------------------------------


def num(value: Any) -> float | None:
    """``value`` as a finite float, or None (bools, strings, NaN and infinities are None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def as_int(value: Any) -> int | None:
    """``value`` if it is an int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_str(value: Any, default: str = "") -> str:
    """``value`` if it is a str, else ``default``."""
    return value if isinstance(value, str) else default


def as_map(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def as_maps(value: Any) -> list[Mapping[str, Any]]:
    """The mappings in ``value`` if it is a list (other items dropped), else []."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def sub(a: float | None, b: float | None) -> float | None:
    """``a - b`` rounded to the millisecond; None if either is unknown."""
    return None if a is None or b is None else round(a - b, 3)


def timeline_events(incident: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The incident's timeline events that have an ``event`` name and a time, as ``{event,
    at, detail}``, in time order."""
    out = []
    for e in as_maps(incident.get("timeline")):
        at = num(e.get("at"))
        if at is not None and as_str(e.get("event")):
            out.append({"event": e["event"], "at": at, "detail": as_str(e.get("detail"))})
    return sorted(out, key=lambda e: e["at"])


def level_name(level: Any, unknown: str = "-") -> str:
    """``Level 2 (partial outage)`` for a level 0-4, else ``unknown``."""
    lv = as_int(level)
    return LEVEL_NAMES[lv] if lv is not None and 0 <= lv < len(LEVEL_NAMES) else unknown


# --- budgets and formatting ----------------------------------------------------------------


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
    """``12%``, ``0.5%``; ``-`` when unknown."""
    v = num(value)
    return "-" if v is None else f"{v:g}%"


def fmt_number(value: Any) -> str:
    """``50``, ``0.5``; ``-`` when unknown."""
    v = num(value)
    return "-" if v is None else f"{v:g}"


# --- what both documents share -------------------------------------------------------------


def objectives_of(*sources: Mapping[str, Any] | None) -> dict[str, float]:
    """The first positive rto_seconds/rpo_seconds found in ``sources``, else the plan's."""
    out: dict[str, float] = {}
    for key, default in DEFAULT_OBJECTIVES.items():
        values = (num(s.get(key)) for s in sources if isinstance(s, Mapping))
        out[key] = next((v for v in values if v is not None and v > 0), default)
    return out


def phase_row(
    name: str,
    group: str,
    start: float | None,
    end: float | None,
    t0: float,
    **extra: Any,
) -> dict[str, Any]:
    """One phase row (see :mod:`orchestrator.reportmodel`); ``start``/``end`` as offsets from
    ``t0``; ``extra`` sets the other keys (None values keep the defaults)."""
    row = {
        "name": name,
        "group": group,
        "action": "",
        "status": "ok" if end is not None else "running",
        "start": sub(start, t0),
        "end": sub(end, t0),
        "duration": sub(end, start),
        "attempts": None,
        "detail": "",
    }
    row.update({k: v for k, v in extra.items() if v is not None})
    return row


def step_phase(step: Mapping[str, Any], t0: float, prefix: str = "") -> dict[str, Any]:
    """The phase row of one runbook step (a :func:`orchestrator.reportmodel.journal_steps` step
    or a drill leg's phase); its name prefixed with ``prefix``."""
    start, end = num(step.get("started_at")), num(step.get("finished_at"))
    status = as_str(step.get("status"), "ok" if end is not None else "running")
    return phase_row(
        f"{prefix}{as_str(step.get('name'), '?')}",
        "steps",
        start if start is not None else end,
        end,
        t0,
        action=as_str(step.get("action")),
        status=status,
        attempts=as_int(step.get("attempts")),
        detail=as_str(step.get("error")),
    )


def step_observations(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the steps tell: failed ones, retried ones, unfinished ones."""
    obs = []
    for s in steps:
        attempts = as_int(s.get("attempts"))
        if s.get("status") == "failed":
            obs.append(f"Step {s.get('name')} failed: {as_str(s.get('error')) or 'no detail'}.")
        elif attempts is not None and attempts > 1:
            obs.append(f"Step {s.get('name')} needed {attempts} attempts.")
        elif s.get("status") == "running":
            obs.append(f"Step {s.get('name')} has no recorded end (interrupted or in flight).")
    return obs


def budget_observations(rto: Mapping[str, Any], rpo: Mapping[str, Any], how: str) -> list[str]:
    """The RTO and RPO used against their budgets, in words (``how``: what the RTO measured)."""
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


def lessons(observations: list[str]) -> dict[str, Any]:
    """The lessons-learned section: the plan's prompts and what the orchestrator observed."""
    return {
        "prompts": [{"title": t, "hint": h} for t, h in LESSON_PROMPTS],
        "observations": observations,
    }


def fact_rows(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    """``[{label, value}]`` from (label, value) pairs."""
    return [{"label": label, "value": value} for label, value in pairs]
