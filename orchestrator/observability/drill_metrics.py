"""Prometheus metrics of DR drills (names are public interface).

Fed from drill records (:mod:`orchestrator.drillrecord`): :meth:`DrillMetrics.record` after a drill,
:meth:`DrillMetrics.load` from ``<state_dir>/drills`` so that drills run by the CLI show in a
daemon started later (and, called again, in a running one: each record is counted once).
Dry runs are never counted.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from orchestrator.drillrecord import RESULTS, DrillStore


class DrillMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.last_success = Gauge(
            "helios_drill_last_success_timestamp_seconds",
            "Wall clock at which the last passed drill finished (0: never).",
            registry=r,
        )
        self.last_rto = Gauge(
            "helios_drill_last_rto_seconds",
            "Measured RTO of the last drill that measured one (the slowest of its legs).",
            registry=r,
        )
        self.last_rpo = Gauge(
            "helios_drill_last_rpo_seconds",
            "Measured RPO of the last drill that measured one (the worst of its legs).",
            registry=r,
        )
        self.last_result = Gauge(
            "helios_drill_last_result",
            "1 for the result of the last drill (passed, failed, aborted, refused), 0 others.",
            ["result"],
            registry=r,
        )
        self.drills = Counter(
            "helios_drills_total", "Drills by kind and result.", ["kind", "result"], registry=r
        )
        self._seen: set[str] = set()
        self._last: dict[str, Any] | None = None

    def record(self, record: dict[str, Any]) -> None:
        """Account for one finished drill record (ignored: dry runs, records already seen)."""
        drill_id, result = record.get("id"), record.get("result")
        if record.get("dry_run") or result not in RESULTS or drill_id in self._seen:
            return
        self._seen.add(str(drill_id))
        summary = _summary(record)
        if self._last is None or summary["started_at"] >= self._last["started_at"]:
            self._last = summary
        self.drills.labels(str(record.get("kind")), str(result)).inc()
        for r in RESULTS:
            self.last_result.labels(r).set(1 if r == result else 0)
        if result == "passed" and record.get("finished_at") is not None:
            self.last_success.set(float(record["finished_at"]))
        if summary["rto_seconds"] is not None:
            self.last_rto.set(summary["rto_seconds"])
        if summary["rpo_seconds"] is not None:
            self.last_rpo.set(summary["rpo_seconds"])

    def load(self, state_dir: str | os.PathLike[str]) -> int:
        """Record every stored drill not seen yet, oldest first; returns how many. Reads files:
        from async code call it through ``asyncio.to_thread``."""
        before = len(self._seen)
        for rec in DrillStore(state_dir).all():
            self.record(rec)
        return len(self._seen) - before

    def last_summary(self) -> dict[str, Any] | None:
        """The latest drill recorded here (for the status document): id, kind, result, when
        (UTC, ISO 8601), started_at, finished_at and its worst leg RTO/RPO; None before any."""
        return dict(self._last) if self._last is not None else None


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    legs = record.get("legs") or []
    rtos = [leg["rto_seconds"] for leg in legs if leg.get("rto_seconds") is not None]
    rpos = [leg["rpo_seconds"] for leg in legs if leg.get("rpo_seconds") is not None]
    at = record.get("finished_at") or record.get("started_at")
    return {
        "id": record.get("id"),
        "kind": record.get("kind"),
        "result": record.get("result"),
        "when": datetime.fromtimestamp(float(at), UTC).isoformat(timespec="seconds")
        if at is not None
        else None,
        "started_at": float(record.get("started_at") or 0.0),
        "finished_at": record.get("finished_at"),
        "rto_seconds": max(rtos) if rtos else None,
        "rpo_seconds": max(rpos) if rpos else None,
    }
