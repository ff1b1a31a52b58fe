"""Drills run inside the daemon: the scheduled one and those requested through the control API.

Guarantees: a drill is judged on the daemon's own ticks (the same assessments the decision
engine sees); its record, metrics, reports and "drill finished" notification are written exactly
as for ``orchestrator drill``; a drill requested through the API runs in a task of the daemon's
TaskGroup, so a client that disconnects does not stop it, and at most one such task runs at a
time (the drill lock in the state dir also keeps out a CLI drill or the scheduler).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from orchestrator import reports
from orchestrator.autopilot import Autopilot
from orchestrator.config import Config
from orchestrator.controls import active_drill
from orchestrator.drill import DrillRunner
from orchestrator.drillrecord import new_drill_id
from orchestrator.errors import Busy, HeliosError
from orchestrator.failover import FailoverService
from orchestrator.notify import Notifier
from orchestrator.observability.drill_metrics import DrillMetrics

log = structlog.get_logger("helios.drills")


class DaemonDrills:
    """Runs and plans drills for the daemon; see the module docstring."""

    def __init__(
        self,
        cfg: Config,
        service: FailoverService,
        autopilot: Autopilot,
        notifier: Notifier,
        metrics: DrillMetrics,
    ) -> None:
        self._cfg = cfg
        self._svc = service
        self._autopilot = autopilot
        self._notifier = notifier
        self._metrics = metrics
        self._task: asyncio.Task[dict[str, Any]] | None = None
        self.current: str | None = None
        """The id of the drill this daemon is running (scheduled or requested), if any."""
        self.failures: dict[str, dict[str, Any]] = {}
        """Requested drills that ended in an error before writing a record."""

    @property
    def busy(self) -> bool:
        return self.current is not None

    def _runner(self, trigger: str) -> DrillRunner:
        timeout = max(10.0, self._cfg.probes.interval * 10)
        return DrillRunner(
            self._cfg,
            self._svc,
            lambda: self._autopilot.next_assessment(timeout),
            trigger=trigger,
        )

    async def run(
        self,
        kind: str | None = None,
        to: str | None = None,
        failback: bool | None = None,
        *,
        trigger: str = "scheduled",
        drill_id: str | None = None,
    ) -> dict[str, Any]:
        """Run one drill to its end and record it; returns its record."""
        runner = self._runner(trigger)
        drill_id = drill_id or new_drill_id(time.time())
        self.current = drill_id
        try:
            record = await runner.run(kind, to, failback, False, drill_id=drill_id)
        finally:
            self.current = None
        self._metrics.record(record)
        cfg = self._cfg
        objectives = {"rto_seconds": cfg.objectives.rto, "rpo_seconds": cfg.objectives.rpo}
        try:
            await asyncio.to_thread(reports.write_drill_reports, record, cfg.state_dir, objectives)
        except (HeliosError, OSError) as exc:
            log.error(f"drill report not written: {exc}", reason="REPORT_FAILED")
        if cfg.notifications.send_drills and cfg.notifications.channels:
            await self._notifier.drill_event(record, "drill_finished", time.time())
            await asyncio.to_thread(runner.store.save, record)
        return record

    async def plan(
        self, kind: str | None, to: str | None, failback: bool | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A dry run on the next tick: the record (``result`` planned or refused) and, per leg,
        what would be done. Changes nothing."""
        runner = self._runner("manual")
        record = await runner.run(kind, to, failback, True)
        return record, runner.planned

    async def start(
        self,
        tg: asyncio.TaskGroup,
        kind: str | None,
        to: str | None,
        failback: bool | None,
        requested_by: str,
    ) -> str:
        """Start a drill in ``tg``; returns its id at once. Raises Busy when a drill, a run or
        an incident stands in the way (nothing started)."""
        if self.busy:
            raise Busy(f"drill {self.current} is already running")
        lock = await asyncio.to_thread(active_drill, self._cfg.state_dir)
        if lock is not None:
            raise Busy(f"drill {lock['id']} is already running")
        if self._autopilot.busy:
            raise Busy("a failover or switchover is running")
        if self._autopilot.incident is not None:
            raise Busy(f"incident {self._autopilot.incident.id} is open: no drill during one")
        drill_id = new_drill_id(time.time())
        self.current = drill_id  # taken now, so a second request is refused at once
        log.warning(
            f"drill {drill_id} requested by {requested_by} through the control API",
            reason="API_DRILL",
            drill=drill_id,
        )
        self._task = tg.create_task(
            self._guarded(kind, to, failback, drill_id), name=f"drill-{drill_id}"
        )
        return drill_id

    async def _guarded(
        self, kind: str | None, to: str | None, failback: bool | None, drill_id: str
    ) -> dict[str, Any]:
        """A requested drill; its failure is logged and recorded, never the daemon's end."""
        try:
            return await self.run(kind, to, failback, trigger="manual", drill_id=drill_id)
        except HeliosError as exc:
            log.error(f"drill {drill_id} failed: {exc}", reason="DRILL_FAILED", drill=drill_id)
            doc = {"id": drill_id, "result": "failed", "reason": str(exc)}
            self.failures[drill_id] = doc
            return doc
