"""The daemon side of the control API: what each endpoint does, apart from HTTP.

Guarantees:

* Plans are built from the daemon's latest tick (the same windowed verdicts the decision engine
  uses); :class:`NotReady` until the first tick.
* A mutating call is a dry run unless ``execute`` is true; a dry run changes nothing and returns
  exactly what would be done (the plan with its checksum, the drill's legs, the control change).
* Runs and drills go through the autopilot and the drill lock, so an API request can never start
  a second run beside the automatic one, a drill or another request (:class:`Busy`, nothing
  started). A run started through the API is owned by the daemon, not by the HTTP request.
* Every executed action is logged with the token's name (the audit trail) and noted on its
  incident.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, replace
from typing import Any

import structlog

from orchestrator.api.auth import Principal
from orchestrator.api.models import ControlRequest, DrillRequest, FailoverRequest
from orchestrator.autopilot import Autopilot
from orchestrator.config import Config
from orchestrator.controls import load_controls, load_memory, save_controls
from orchestrator.drilldaemon import DaemonDrills
from orchestrator.drillrecord import DrillStore
from orchestrator.errors import Busy, HeliosError, NotFound, UnsafePlan, UsageError
from orchestrator.failover import FailoverService
from orchestrator.loop import DaemonState
from orchestrator.planning import FailoverPlan

log = structlog.get_logger("helios.api")


class NotReady(HeliosError):
    """The daemon has not judged the world yet (no tick completed)."""


class StalePlan(UnsafePlan):
    """The plan's checksum no longer matches the world."""


class ControlPlane:
    """Carries out the control API's requests inside the daemon."""

    def __init__(
        self,
        cfg: Config,
        state: DaemonState,
        service: FailoverService,
        autopilot: Autopilot,
        drills: DaemonDrills,
    ) -> None:
        self.cfg = cfg
        self._state = state
        self._svc = service
        self._autopilot = autopilot
        self._drills = drills
        self._tg: asyncio.TaskGroup | None = None

    def start(self, tg: asyncio.TaskGroup) -> None:
        """Adopt the daemon's TaskGroup (runs and drills started through the API live there)."""
        self._tg = tg

    # --- reads -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        doc = self._state.status_document()
        if doc is None:
            raise NotReady("no tick completed yet")
        return doc

    async def incidents(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest first; ``status`` filters (open means not closed)."""
        items = await asyncio.to_thread(self._svc.incidents.all)
        if status == "open":
            items = [i for i in items if i.is_open]
        elif status is not None:
            items = [i for i in items if i.status == status]
        return [i.summary() for i in reversed(items)][:limit]

    async def incident(self, incident_id: str) -> dict[str, Any]:
        inc = await asyncio.to_thread(self._svc.incidents.load, incident_id)
        return asdict(inc)

    async def drill(self, drill_id: str) -> dict[str, Any]:
        store = DrillStore(self.cfg.state_dir)
        path = store.path(drill_id)  # UsageError for a malformed id
        if await asyncio.to_thread(path.is_file):
            return await asyncio.to_thread(store.load, drill_id)
        if self._drills.current == drill_id:
            return {"id": drill_id, "result": "running"}
        if drill_id in self._drills.failures:
            return self._drills.failures[drill_id]
        raise NotFound(f"no drill {drill_id}")

    async def plan(self, kind: str, to: str | None) -> FailoverPlan:
        """The plan for the world as of the latest tick (UnsafePlan when a rail refuses it)."""
        a = self._state.assessment
        if a is None:
            raise NotReady("no tick completed yet: nothing to plan from")
        return await self._svc.plan(a, kind=kind, to_region=to, trigger="manual")

    # --- runs --------------------------------------------------------------------------------

    async def run(self, kind: str, req: FailoverRequest, who: Principal) -> dict[str, Any]:
        """Dry run: the plan. Execute: start the run and return its incident at once."""
        a = self._state.assessment
        if a is None:
            raise NotReady("no tick completed yet: nothing to plan from")
        if req.execute:
            self._refuse_if_busy()
            if await asyncio.to_thread(self._svc.journal.unfinished):
                raise Busy("a run is still unfinished in the journal; the daemon resumes it")
        plan = await self._svc.plan(
            a,
            kind=kind,
            to_region=req.to,
            trigger="manual",
            accept_data_loss=req.accept_data_loss,
            force=req.force,
        )
        if req.checksum is not None and req.checksum != plan.checksum():
            raise StalePlan(
                f"the world changed since the plan was reviewed (checksum now "
                f"{plan.checksum()}, expected {req.checksum}); review the dry run again"
            )
        if not req.execute:
            return {"dry_run": True, "plan": plan.to_dict()}
        inc = await self._autopilot.start_operator_run(plan, who.name)
        log.warning(
            f"{kind} to {plan.candidate.node} ({plan.candidate.region}) started by "
            f"{who.name} through the control API",
            reason=f"API_{kind.upper()}",
            incident=inc.id,
            checksum=plan.checksum(),
        )
        return {
            "dry_run": False,
            "accepted": True,
            "incident": inc.id,
            "plan": plan.to_dict(),
            "links": {"incident": f"/v1/incidents/{inc.id}"},
        }

    def _refuse_if_busy(self) -> None:
        self._autopilot.require_leader()
        if self._autopilot.busy:
            raise Busy("a failover or switchover is already running")
        if self._drills.busy:
            raise Busy(f"drill {self._drills.current} is running")

    # --- drills ------------------------------------------------------------------------------

    async def start_drill(self, req: DrillRequest, who: Principal) -> dict[str, Any]:
        if req.to is not None and req.to not in {r.name for r in self.cfg.regions}:
            names = ", ".join(r.name for r in self.cfg.ordered_regions())
            raise UsageError(f"unknown region {req.to!r} (regions: {names})")
        if not req.execute:
            if self._drills.busy or self._autopilot.busy:
                raise Busy("a drill or run is in progress; plan again when it ends")
            record, planned = await self._drills.plan(req.kind, req.to, req.failback)
            return {"dry_run": True, "drill": record, "planned": planned}
        if self._tg is None:
            raise Busy("the daemon is still starting; try again in a moment")
        self._autopilot.require_leader()
        drill_id = await self._drills.start(self._tg, req.kind, req.to, req.failback, who.name)
        return {
            "dry_run": False,
            "accepted": True,
            "drill": drill_id,
            "links": {"drill": f"/v1/drills/{drill_id}"},
        }

    # --- pause, resume, ack -------------------------------------------------------------------

    async def control(self, action: str, req: ControlRequest, who: Principal) -> dict[str, Any]:
        """pause / resume / ack: the change to the operator controls the next tick reads."""
        state_dir = self.cfg.state_dir
        before = self._autopilot.controls(await asyncio.to_thread(load_controls, state_dir))
        now = time.time()
        if action == "pause":
            after = replace(before, paused=True)
            effect = "automatic actions stop; observation goes on"
        elif action == "resume":
            after = replace(before, paused=False)
            effect = "automatic actions are enabled again"
        else:
            after = replace(before, acked_at=now)
            mem = await asyncio.to_thread(load_memory, state_dir)
            effect = (
                "the cooldown of the last automatic failover no longer blocks an automatic "
                "failover; the open incident is acknowledged on the paging channel"
                if mem.last_failover_at is not None
                else "nothing in cooldown; the open incident (if any) is acknowledged"
            )
        doc: dict[str, Any] = {
            "dry_run": not req.execute,
            "action": action,
            "effect": effect,
            "before": {"paused": before.paused, "acked_at": before.acked_at},
            "after": {"paused": after.paused, "acked_at": after.acked_at},
        }
        if req.execute:
            self._autopilot.require_leader()
            await asyncio.to_thread(save_controls, state_dir, after)
            share = getattr(self._autopilot.leadership, "set_controls", None)
            if share is not None:  # every instance (and the next leader) sees the change
                await share(after.paused, after.acked_at, who.name)
            log.warning(
                f"{action} by {who.name} through the control API"
                + (f": {req.reason}" if req.reason else ""),
                reason=f"API_{action.upper()}",
            )
            doc["effective"] = "on the next tick"
        return doc
