"""Incident and drill reports: find the record, build the document, render it as Markdown, JSON
or a standalone HTML page, write the files.

Guarantees:

* :func:`render` is pure (templates are package data): the same document gives the same text.
  HTML is autoescaped (every value from a record is text, never markup); Markdown escapes HTML
  and table syntax. The HTML page loads nothing from outside: inline CSS, an inline SVG and one
  inline script allowed by its hash in the page's Content-Security-Policy.
* :func:`write_reports` writes ``<state_dir>/reports/<id>.{md,json,html}``, each atomically
  (temporary file, fsync, rename, directory fsync): a reader sees the old or the new report.
* :func:`load_source` raises :class:`~orchestrator.errors.UsageError` for an id that is not
  recorded (naming the most recent ids) and :class:`~orchestrator.errors.HeliosError` for a
  record it cannot read; it never returns a partial document.

The documents themselves are built by :mod:`orchestrator.reportmodel` and
:mod:`orchestrator.drillreport` (pure).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from orchestrator.atomic import write_text
from orchestrator.drillreport import build_drill_doc
from orchestrator.errors import HeliosError, UsageError
from orchestrator.incidents import Incident, IncidentStore
from orchestrator.journal import Journal
from orchestrator.reportmodel import build_incident_doc
from orchestrator.reportparts import fmt_duration, fmt_offset, fmt_percent, fmt_time, num

FORMATS: Final = ("md", "json", "html")
_ID = re.compile(r"^(inc|drill)-[A-Za-z0-9][A-Za-z0-9._-]*$")
_RECENT: Final = 5

# --- finding and loading the source record -------------------------------------------------


def list_sources(state_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every recorded incident and drill, oldest first: ``{id, kind, when, result}``.

    ``when`` is the start (epoch seconds, None if unknown); an unreadable file is listed with
    result ``unreadable``.
    """
    out: list[dict[str, Any]] = []
    for kind, sub, prefix, start, result in (
        ("incident", "incidents", "inc-", "opened_at", "status"),
        ("drill", "drills", "drill-", "started_at", "result"),
    ):
        folder = Path(state_dir) / sub
        if not folder.is_dir():
            continue
        for path in folder.glob(f"{prefix}*.json"):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = None
            if not isinstance(data, dict):
                out.append({"id": path.stem, "kind": kind, "when": None, "result": "unreadable"})
                continue
            out.append(
                {
                    "id": path.stem,
                    "kind": kind,
                    "when": num(data.get(start)),
                    "result": str(data.get(result) or "-"),
                }
            )
    return sorted(out, key=lambda s: (s["when"] if s["when"] is not None else -math.inf, s["id"]))


def _unknown(state_dir: str | os.PathLike[str], report_id: str, why: str) -> UsageError:
    recent = [s["id"] for s in list_sources(state_dir)[-_RECENT:]][::-1]
    hint = f"most recent: {', '.join(recent)}" if recent else "no incidents or drills recorded"
    return UsageError(f"{why} ({hint}; `orchestrator report --list` lists them all)")


def load_source(
    state_dir: str | os.PathLike[str],
    report_id: str,
    *,
    objectives: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The report document of incident ``inc-...`` or drill ``drill-...`` in ``state_dir``.

    An incident's run steps are read from the journal when its ``run_id`` is there.
    ``objectives`` (``rto_seconds``, ``rpo_seconds``; e.g. the config's) apply to incidents;
    a drill record carries its own. ``now`` stamps ``generated_at`` (default: the clock).
    """
    if not _ID.match(report_id):
        raise _unknown(
            state_dir,
            report_id,
            f"{report_id!r} is not a report id: incident ids start with inc-, drill ids "
            "with drill-",
        )
    if report_id.startswith("inc-"):
        store = IncidentStore(state_dir)
        if not (store.dir / f"{report_id}.json").is_file():
            raise _unknown(state_dir, report_id, f"no incident {report_id} in {store.dir}")
        return build_incident_report(
            store.load(report_id), state_dir, objectives=objectives, now=now
        )
    path = Path(state_dir) / "drills" / f"{report_id}.json"
    if not path.is_file():
        raise _unknown(state_dir, report_id, f"no drill {report_id} in {path.parent}")
    try:
        drill = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HeliosError(f"drill file {path} is unreadable: {exc}") from None
    if not isinstance(drill, dict):
        raise HeliosError(f"drill file {path} is unreadable: not a JSON object")
    return build_drill_report(drill, now=now)


def build_incident_report(
    incident: Incident | Mapping[str, Any],
    state_dir: str | os.PathLike[str],
    *,
    objectives: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The report document of ``incident`` (the dataclass or its ``asdict``), with the steps of
    its run read from the journal in ``state_dir`` (none if the run is not there).
    ``objectives`` as in :func:`orchestrator.reportmodel.build_incident_doc`."""
    data = asdict(incident) if isinstance(incident, Incident) else dict(incident)
    return build_incident_doc(
        data,
        _run_records(state_dir, data.get("run_id")),
        objectives=objectives,
        generated_at=time.time() if now is None else now,
    )


def build_drill_report(record: Mapping[str, Any], *, now: float | None = None) -> dict[str, Any]:
    """The report document of a drill record (as the drill runner stores it)."""
    return build_drill_doc(record, generated_at=time.time() if now is None else now)


def _run_records(state_dir: str | os.PathLike[str], run_id: Any) -> list[dict[str, Any]]:
    if not isinstance(run_id, str) or not run_id:
        return []
    run = Journal.in_state_dir(state_dir).runs().get(run_id)
    return list(run.records) if run is not None else []


# --- the timeline chart (pure geometry for the SVG) ----------------------------------------

_W, _LABELS, _RIGHT, _TOP, _ROW, _BAR, _MIN_BAR = 960.0, 190.0, 40.0, 34.0, 24.0, 14.0, 4.0
_STEPS: Final = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600)


def _nice_span(span: float) -> tuple[float, float]:
    """(axis end, tick step): the axis covers ``span`` in at most 8 ticks."""
    step = next((s for s in _STEPS if span / s <= 8), 43200.0)
    return math.ceil(span / step - 1e-9) * step, float(step)


def _tick_label(t: float) -> str:
    if t == 0:
        return "0"
    if t >= 60 and t % 60 == 0:
        return f"{t / 60:g} min"
    return f"{t:g} s"


def timeline_chart(leg: Mapping[str, Any], objectives: Mapping[str, float]) -> dict[str, Any]:
    """SVG geometry of one leg: a bar per phase on a time axis from the leg's start, scaled to
    max(duration, RTO budget, RPO budget), the RTO budget line across the phase rows, and a
    separate track for the data loss window against the RPO budget.

    Short phases keep a minimum width and a label, so a 4-second incident stays legible
    against a 5-minute axis.
    """
    rto_b, rpo_b = objectives["rto_seconds"], objectives["rpo_seconds"]
    phases = leg["phases"]
    ends = [p["end"] for p in phases if p["end"] is not None]
    ends += [p["start"] for p in phases if p["start"] is not None]
    used = [leg["rto"]["used_seconds"], leg["rpo"]["used_seconds"], leg["duration_seconds"]]
    span, step = _nice_span(max([rto_b, rpo_b, *ends, *(u for u in used if u is not None)]))
    plot_w = _W - _LABELS - _RIGHT

    def x(t: float) -> float:
        return round(_LABELS + max(0.0, t) / span * plot_w, 2)

    bars = []
    for i, p in enumerate(phases):
        start = p["start"] if p["start"] is not None else 0.0
        end = p["end"] if p["end"] is not None else max(start, leg["duration_seconds"] or start)
        bx, y = x(start), _TOP + i * _ROW
        w = max(_MIN_BAR, x(end) - bx)
        right_side = bx + w < _LABELS + plot_w * 0.7
        bars.append(
            {
                "x": bx,
                "y": y + (_ROW - _BAR) / 2,
                "w": round(w, 2),
                "h": _BAR,
                "text_y": y + _ROW / 2 + 4,
                "label_x": round(bx + w + 6 if right_side else bx - 6, 2),
                "anchor": "start" if right_side else "end",
                "label": f"{fmt_duration(p['duration'])} at {fmt_offset(p['start'])}",
                "phase": p,
                "row": i,
            }
        )
    rows_bottom = _TOP + max(1, len(phases)) * _ROW
    rpo_y = rows_bottom + 18
    rpo_used = leg["rpo"]["used_seconds"]
    rpo_w = 0.0 if rpo_used is None else max(_MIN_BAR if rpo_used > 0 else 2.0, x(rpo_used) - x(0))
    axis_y = rpo_y + _ROW + 10
    rto_used = leg["rto"]["used_seconds"]
    return {
        "width": _W,
        "height": axis_y + 30,
        "plot_left": _LABELS,
        "plot_right": _LABELS + plot_w,
        "axis_y": axis_y,
        "ticks": [
            {"x": x(t * step), "label": _tick_label(t * step)}
            for t in range(round(span / step) + 1)
        ],
        "bars": bars,
        "rto_line": {
            "x": x(rto_b),
            "y1": _TOP - 14,
            "y2": rows_bottom,
            "budget": rto_b,
            "label": f"RTO budget {fmt_duration(rto_b)}",
        },
        "rto_used": None
        if rto_used is None
        else {"x": x(rto_used), "label": f"recovered after {fmt_duration(rto_used)}"},
        "rpo": {
            "y": rpo_y + (_ROW - _BAR) / 2,
            "h": _BAR,
            "text_y": rpo_y + _ROW / 2 + 4,
            "x": x(0),
            "w": round(rpo_w, 2),
            "measured": rpo_used is not None,
            "line_x": x(rpo_b),
            "line_y1": rpo_y - 2,
            "line_y2": rpo_y + _ROW + 2,
            "label": "data loss window "
            + (
                "not measured"
                if rpo_used is None
                else f"{fmt_duration(rpo_used)} ({fmt_percent(leg['rpo']['percent'])} "
                f"of the {fmt_duration(rpo_b)} RPO)"
            ),
            "budget_label": f"RPO budget {fmt_duration(rpo_b)}",
        },
    }


# --- rendering -----------------------------------------------------------------------------

_MD_ESCAPES: Final = {"<": "&lt;", "|": "\\|", "`": "\\`"}


def _md(value: Any) -> str:
    """Text safe inside a Markdown table cell or list item: no HTML, no table breaks."""
    text = "-" if value is None else str(value)
    text = "".join(_MD_ESCAPES.get(c, c) for c in text)
    return " ".join(text.split())


def _csp_hash(script: str) -> Markup:
    """The CSP source expression that allows exactly ``script`` (base64: safe as markup)."""
    digest = hashlib.sha256(str(script).encode("utf-8")).digest()
    return Markup("'sha256-" + base64.b64encode(digest).decode("ascii") + "'")  # noqa: S704


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("orchestrator", "templates/reports"),
        autoescape=select_autoescape(
            enabled_extensions=("html", "html.j2"), disabled_extensions=("md.j2",), default=True
        ),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        time=fmt_time,
        duration=fmt_duration,
        offset=fmt_offset,
        pct=fmt_percent,
        md=_md,
        csp_hash=_csp_hash,
    )
    env.globals["chart"] = timeline_chart
    return env


def render(doc: Mapping[str, Any], fmt: str) -> str:
    """``doc`` as Markdown (``md``), JSON (``json``) or a standalone HTML page (``html``)."""
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if fmt not in FORMATS:
        raise UsageError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    return _environment().get_template(f"report.{fmt}.j2").render(doc=doc)


# --- writing -------------------------------------------------------------------------------


def write_reports(
    doc: Mapping[str, Any],
    state_dir: str | os.PathLike[str],
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Write ``<state_dir>/reports/<id>.<fmt>`` for each format, atomically; returns the paths."""
    if not _ID.match(str(doc.get("id", ""))):
        raise UsageError(f"report document has no valid id: {doc.get('id')!r}")
    folder = Path(state_dir) / "reports"
    texts = {fmt: render(doc, fmt) for fmt in formats}  # every format renders before any write
    return [write_text(folder / f"{doc['id']}.{fmt}", text) for fmt, text in texts.items()]


def write_drill_reports(
    record: Mapping[str, Any],
    state_dir: str | os.PathLike[str],
    objectives: Mapping[str, float] | None = None,
) -> list[Path]:
    """The drill's report and the report of each leg's incident (the drill report links to
    them); returns every path written."""
    paths = write_reports(build_drill_report(record), state_dir)
    store = IncidentStore(state_dir)
    for leg in record.get("legs") or []:
        inc_id = leg.get("incident_id")
        if inc_id:
            inc = store.load(str(inc_id))
            paths += write_reports(
                build_incident_report(inc, state_dir, objectives=objectives), state_dir
            )
    return paths
