"""Incident communication: activation levels, notifications and reports for the daemon.

Guarantees:

* :meth:`Comms.on_tick` is quick: it classifies the tick (BCP level), records a level change
  on the open incident and *queues* the messages the change calls for; nothing is sent on the
  tick's path.
* One worker task (:meth:`Comms.run`, owned by the daemon's TaskGroup) sends the queued messages
  in order, each bounded by its channels' timeouts and retries, then saves the incident; a
  channel failure is recorded on the incident, never raised.
* While an incident is open, the audiences of its level get periodic status updates at their
  ``update_interval``. After a failover the incident is *monitored*: the customer status says
  "monitoring" and "resolved" follows once the service has been healthy for the monitoring
  period (or at once for a primary that recovered by itself).
* Every incident that closes gets its report written (Markdown, JSON, HTML) under
  ``<state_dir>/reports``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from orchestrator import levels
from orchestrator.config import Config
from orchestrator.incidents import Incident, IncidentStore
from orchestrator.model import Assessment, Snapshot

log = structlog.get_logger("helios.comms")
WORKER_WAKE = 1.0
ADOPT_WINDOW = 86400.0
"""A failover closed less than this long ago and never resolved is monitored after a restart."""


class Sender(Protocol):
    """What :class:`orchestrator.notify.Notifier` offers the daemon."""

    async def incident_event(
        self, inc: Incident, event: str, now: float
    ) -> list[dict[str, Any]]: ...

    async def periodic(self, inc: Incident, now: float) -> list[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


@dataclass
class _Watch:
    inc: Incident
    healthy_since: float | None = None


@dataclass
class Comms:
    cfg: Config
    store: IncidentStore
    sender: Sender | None = None
    monitoring_period: float = 300.0
    service_level: levels.Classification = field(
        default_factory=lambda: levels.Classification(0, "STARTING", "starting", "Automated")
    )
    _queue: asyncio.Queue[tuple[Incident, str]] = field(default_factory=asyncio.Queue)
    _open: Incident | None = None
    _monitoring: list[_Watch] = field(default_factory=list)
    _acked_at: float | None = None

    # --- on the tick's path (no I/O) -------------------------------------------------------

    def on_tick(
        self,
        a: Assessment,
        snap: Snapshot | None,
        incident: Incident | None,
        *,
        holding: bool,
        busy: bool,
        acked_at: float | None,
        dns_degraded: bool = False,
    ) -> levels.Classification:
        """Classify this tick; track the open incident's level; queue what must be said."""
        facts = levels.facts_from(
            a,
            snap,
            rpo=self.cfg.objectives.rpo,
            holding=holding,
            failover_running=busy,
            dns_degraded=dns_degraded,
        )
        if incident is not None and incident.is_open:
            elapsed = a.at - incident.opened_at
            c = levels.assess_level(self.cfg.levels, facts, elapsed)
            if self._open is not incident:
                self._open = incident
                self._acked_at = acked_at
                if not incident.levels:
                    incident.set_level(c.level, a.at, c.sentence, c.authority)
                    self.post(incident, "opened")
            if incident.set_level(c.level, a.at, c.sentence, c.authority):
                log.warning(
                    f"incident {incident.id} is now {levels.describe(c.level)} "
                    f"(authority: {c.authority}): {c.sentence}",
                    reason="LEVEL_CHANGED",
                    level=c.level,
                )
                self.post(incident, "level_changed")
            if acked_at is not None and acked_at != self._acked_at:
                self._acked_at = acked_at
                self.post(incident, "acknowledged")
        else:
            c = levels.assess_level(self.cfg.levels, facts, None)
        self.service_level = c
        for w in self._monitoring:
            healthy = facts.primary_ok and not facts.primary_degraded
            w.healthy_since = (w.healthy_since or a.at) if healthy else None
        return c

    def post(self, inc: Incident, event: str) -> None:
        """Queue one message (sent by the worker, in order)."""
        self._queue.put_nowait((inc, event))

    def status_changed(self, inc: Incident) -> None:
        """The incident's status moved (confirmed, held, failover running)."""
        self.post(inc, "status_changed")

    def closed(self, inc: Incident) -> None:
        """The incident closed: monitor a failover, resolve a recovery; write its report."""
        if self._open is inc:
            self._open = None
        if inc.status == "failed_over":
            promoted = inc.when("promoted") or inc.opened_at
            told = any(
                n["event"] == "status_changed" and n["at"] >= promoted for n in inc.notifications
            )
            if not told:  # the runbook's notify step did not run: customers see monitoring
                self.post(inc, "status_changed")
            self._monitoring.append(_Watch(inc))
        else:
            self.post(inc, "resolved")

    def status_fields(self, incident: Incident | None, now: float) -> dict[str, Any]:
        """The status document's ``bcp`` section."""
        from orchestrator.status import bcp_section

        return bcp_section(self.service_level, incident, now)

    # --- the worker ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Send queued messages, periodic updates and monitoring resolutions until ``stop``;
        then flush what is queued (bounded by the channels' own timeouts)."""
        await self._adopt_monitored()
        while not stop.is_set():
            try:
                inc, event = await asyncio.wait_for(self._queue.get(), WORKER_WAKE)
            except TimeoutError:
                await self._housekeeping()
                continue
            await self._send(inc, event)
        while not self._queue.empty():
            inc, event = self._queue.get_nowait()
            await self._send(inc, event)

    async def _adopt_monitored(self) -> None:
        """After a restart: failovers of the last day that were never announced resolved are
        monitored again (their customers still read "monitoring")."""
        now = time.time()
        for inc in await asyncio.to_thread(self.store.all):
            recent = inc.closed_at is not None and now - inc.closed_at < ADOPT_WINDOW
            if (
                recent
                and inc.status == "failed_over"
                and inc.drill_id is None
                and inc.when("resolved") is None
                and all(w.inc.id != inc.id for w in self._monitoring)
            ):
                self._monitoring.append(_Watch(inc))

    async def _housekeeping(self) -> None:
        now = time.time()
        inc = self._open
        if inc is not None and inc.is_open and self.sender is not None:
            records = await self.sender.periodic(inc, now)
            if records:
                await self.store.save_async(inc)
        for w in list(self._monitoring):
            if w.healthy_since is not None and now - w.healthy_since >= self.monitoring_period:
                self._monitoring.remove(w)
                await self._send(w.inc, "resolved")

    async def _send(self, inc: Incident, event: str) -> None:
        now = time.time()
        if event == "resolved":
            inc.event("resolved", now, "service healthy; incident resolved")
        if self.sender is not None:
            try:
                await self.sender.incident_event(inc, event, now)
            except Exception as exc:  # a notifier bug must not stop the worker
                log.error(f"notification {event} failed: {exc}", reason="NOTIFY_ERROR")
        await self.store.save_async(inc)
        if event == "resolved" or (event == "status_changed" and not inc.is_open):
            await asyncio.to_thread(write_incident_report, self.cfg, inc)


def write_incident_report(cfg: Config, inc: Incident) -> None:
    """Write the incident's report files; a failure is logged, never raised."""
    try:
        from orchestrator import reports

        objectives = {"rto_seconds": cfg.objectives.rto, "rpo_seconds": cfg.objectives.rpo}
        doc = reports.build_incident_report(inc, cfg.state_dir, objectives=objectives)
        reports.write_reports(doc, cfg.state_dir)
    except Exception as exc:
        log.error(f"cannot write the report of {inc.id}: {exc}", reason="REPORT_FAILED")
