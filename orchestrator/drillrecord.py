"""DR drill records: their layout, the builders of records and legs, and where they are kept.

Record (``<state_dir>/drills/<id>.json``): ``id, kind, trigger, dry_run, started_at,
finished_at, result`` (passed | failed | aborted | refused; ``planned`` for a dry run, which is
never written), ``reasons``, ``objectives`` {rto_seconds, rpo_seconds}, ``prechecks`` [{name,
ok, detail}], ``load`` {rate, acked, errors}, ``legs`` [{name, from_node, from_region,
to_node, to_region, run_id, incident_id, started_at, finished_at, rto_seconds, rpo_seconds,
lost_commits, acked_commits, write_unavailable_seconds, phases [{name, action, status,
started_at, finished_at}], dns [{provider, ok, detail}], smoke [{name, kind, ok, detail,
latency_ms}], passed, reasons}]; the drill's notifications are added as ``notifications``.

Guarantees: :class:`DrillStore` writes each record atomically (a reader sees the old or the new
record) and :meth:`DrillStore.all` skips files it cannot read.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from orchestrator.atomic import write_json
from orchestrator.config import Config
from orchestrator.drillload import WriteLoad
from orchestrator.errors import HeliosError, NotFound, UsageError

RESULTS: Final = ("passed", "failed", "aborted", "refused")


DRILL_ID_PATTERN = re.compile(r"drill-[A-Za-z0-9_-]{1,64}")


def new_drill_id(now: float) -> str:
    """``drill-YYYYmmddTHHMMSS-<6 hex>`` (UTC)."""
    return f"drill-{datetime.fromtimestamp(now, UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


class DrillStore:
    """Drill records in ``<state_dir>/drills/<id>.json`` (atomic writes; unreadable files are
    skipped by :meth:`all`)."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir) / "drills"

    def path(self, drill_id: str) -> Path:
        """The record's file; UsageError for a malformed id (never a path outside the store)."""
        if not DRILL_ID_PATTERN.fullmatch(drill_id):
            raise UsageError(f"{drill_id!r} is not a drill id (drill-YYYYmmddTHHMMSS-xxxxxx)")
        return self.dir / f"{drill_id}.json"

    def save(self, record: dict[str, Any]) -> Path:
        return write_json(self.path(str(record["id"])), record)

    def load(self, drill_id: str) -> dict[str, Any]:
        try:
            doc = json.loads(self.path(drill_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFound(f"no drill {drill_id!r} in {self.dir}") from None
        except (OSError, ValueError) as exc:
            raise HeliosError(f"drill record {drill_id} is unreadable: {exc}") from None
        if not isinstance(doc, dict):
            raise HeliosError(f"drill record {drill_id} is not a JSON object")
        return doc

    def all(self) -> list[dict[str, Any]]:
        """Every readable record, oldest first (by ``started_at``)."""
        if not self.dir.is_dir():
            return []
        out = []
        for p in self.dir.glob("drill-*.json"):
            try:
                doc = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and "id" in doc:
                out.append(doc)
        return sorted(out, key=lambda d: (d.get("started_at") or 0.0, d["id"]))

    def last(self) -> dict[str, Any] | None:
        records = self.all()
        return records[-1] if records else None

    def last_success(self) -> dict[str, Any] | None:
        return next((d for d in reversed(self.all()) if d.get("result") == "passed"), None)


# --- building a record ------------------------------------------------------------------------


def new_record(
    drill_id: str, kind: str, trigger: str, dry_run: bool, started: float, cfg: Config
) -> dict[str, Any]:
    """A drill's record before any result: no legs, no pre-checks, nothing acknowledged."""
    return {
        "id": drill_id,
        "kind": kind,
        "trigger": trigger,
        "dry_run": dry_run,
        "started_at": started,
        "finished_at": None,
        "result": None,
        "reasons": [],
        "objectives": {"rto_seconds": cfg.objectives.rto, "rpo_seconds": cfg.objectives.rpo},
        "prechecks": [],
        "load": {"rate": cfg.drill.write_load.rate, "acked": 0, "errors": 0},
        "legs": [],
    }


def new_leg(
    from_node: str,
    from_region: str,
    to_node: str | None,
    to_region: str | None,
    *,
    started: float | None = None,
    finished: float | None = None,
    run_id: str | None = None,
    incident_id: str | None = None,
    rto: float | None = None,
    rpo: float | None = None,
    lost: int | None = None,
    acked: int | None = None,
    phases: list[dict[str, Any]] | None = None,
    dns: list[dict[str, Any]] | None = None,
    smoke: list[dict[str, Any]] | None = None,
    passed: bool | None = None,
    reasons: list[str] | None = None,
) -> dict[str, Any]:
    """One leg's record; ``passed`` is False for a leg that started without a verdict and
    None for a planned one."""
    return {
        "name": f"{from_region} -> {to_region or '?'}",
        "from_node": from_node,
        "from_region": from_region,
        "to_node": to_node,
        "to_region": to_region,
        "run_id": run_id,
        "incident_id": incident_id,
        "started_at": started,
        "finished_at": finished,
        "rto_seconds": rto,
        "rpo_seconds": rpo,
        "lost_commits": lost,
        "acked_commits": acked,
        "write_unavailable_seconds": None,
        "phases": phases or [],
        "dns": dns or [],
        "smoke": smoke or [],
        "passed": bool(passed) if passed is not None else (None if started is None else False),
        "reasons": reasons or [],
    }


def planned_phase(name: str, action: str) -> dict[str, Any]:
    """A runbook step of a dry run's leg: planned, never started."""
    return {
        "name": name,
        "action": action,
        "status": "planned",
        "started_at": None,
        "finished_at": None,
    }


def conclude(record: dict[str, Any], load: WriteLoad) -> None:
    """Finish ``record`` after its legs: the end time, the write load's figures, each leg's
    write unavailability and, unless the drill already has a result (aborted), its verdict:
    passed iff it has legs, every leg passed and nothing else went wrong (``reasons``)."""
    record["finished_at"] = time.time()
    record["load"] = {"rate": load.rate, "acked": len(load.acked), "errors": len(load.failures)}
    for leg in record["legs"]:
        start, end = leg["started_at"], leg["finished_at"]
        if load.acked and start is not None and end is not None:
            leg["write_unavailable_seconds"] = round(load.measure(start, end), 3)
    if record["result"] is None:
        reasons = list(record["reasons"])
        for leg in record["legs"]:
            reasons += [f"{leg['name']}: {r}" for r in leg["reasons"]]
        ok = bool(record["legs"]) and all(leg["passed"] for leg in record["legs"])
        record.update(result="passed" if ok and not reasons else "failed", reasons=reasons)
