"""Failover and switchover: plan from the current assessment, then run the runbook.

Guarantees: :meth:`FailoverService.plan` changes nothing anywhere (it reads the DNS providers
and renders the runbook); :meth:`FailoverService.execute` journals every step before it runs
(see :mod:`orchestrator.executor`) and keeps the incident record current; an unfinished run
found at start-up is resumed by :meth:`FailoverService.resume_unfinished`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import structlog

from orchestrator import decision, planning
from orchestrator.actions import Actions, AgentFence, make_drivers, node_infos, slot_of
from orchestrator.config import Config
from orchestrator.dnsruntime import target_of_region
from orchestrator.dnsswitch import DnsSwitcher
from orchestrator.errors import UnsafePlan, UsageError
from orchestrator.executor import Executor, Fence, OnRecord, RunResult, RunStatus
from orchestrator.incidents import Incident, IncidentStore, new_id
from orchestrator.journal import Journal, new_run_id
from orchestrator.model import Assessment, Verdict
from orchestrator.runbook import ACTION_PARAMS, Runbook, load_runbooks, render_params

log = structlog.get_logger("helios.failover")


class IncidentNotifier(Protocol):
    """What the runbook's ``notify`` step needs (see :class:`orchestrator.notify.Notifier`)."""

    async def incident_event(
        self, inc: Incident, event: str, now: float
    ) -> list[dict[str, Any]]: ...


def _default_runbooks() -> Path:
    """The runbooks shipped with the project: ``runbooks/`` beside the package in a checkout
    (or an editable install), else where an installed wheel put them
    (``<prefix>/share/helios-orchestrator/runbooks``)."""
    beside = Path(__file__).resolve().parent.parent / "runbooks"
    if beside.is_dir():
        return beside
    return Path(sys.prefix) / "share" / "helios-orchestrator" / "runbooks"


DEFAULT_RUNBOOKS = _default_runbooks()


def decision_settings(cfg: Config) -> decision.Settings:
    return decision.Settings(
        rpo=cfg.objectives.rpo,
        cooldown=cfg.failover.cooldown,
        excluded=frozenset(cfg.failover.exclude),
        region_order=tuple(r.name for r in cfg.ordered_regions()),
        automatic=cfg.failover.automatic,
    )


def load_product_runbooks(cfg: Config) -> dict[str, Runbook]:
    """The runbooks (refused at start-up when broken: RunbookError names step and field)."""
    directory = Path(cfg.failover.runbooks_dir) if cfg.failover.runbooks_dir else DEFAULT_RUNBOOKS
    books = load_runbooks(directory, ACTION_PARAMS)
    for needed in ("failover", "switchover"):
        if needed not in books:
            raise UsageError(f"no {needed} runbook in {directory}")
    return books


class FailoverService:
    """Plans and runs failovers and switchovers for one config."""

    def __init__(
        self,
        cfg: Config,
        switcher: DnsSwitcher | None,
        notifier: IncidentNotifier | None = None,
        fence: Fence | None = None,
        agent_fence: AgentFence | None = None,
        on_record: OnRecord | None = None,
    ) -> None:
        self.on_record = on_record
        """Told every journal record (the leader mirrors its runs to the coordination service)."""
        self.fence = fence
        self.agent_fence = agent_fence
        """Fences a node without fence_command through its node agent (agents enabled)."""
        """Checked before every runbook step (the leader's epoch); None: always allowed."""
        self.cfg = cfg
        self.switcher = switcher
        self.notifier = notifier
        """Sends the runbook's ``notify`` step (owned and closed by the caller)."""
        self.runbooks = load_product_runbooks(cfg)
        self.drivers = make_drivers(cfg)
        self.infos = node_infos(cfg)
        self.incidents = IncidentStore(cfg.state_dir)
        self.journal = Journal.in_state_dir(cfg.state_dir)
        Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)

    # --- planning ------------------------------------------------------------------------

    async def plan(
        self,
        assessment: Assessment,
        *,
        kind: str,
        to_region: str | None = None,
        trigger: str = "manual",
        accept_data_loss: bool = False,
        force: bool = False,
    ) -> planning.FailoverPlan:
        """Build the plan for the current world; raises UnsafePlan when a rail forbids it."""
        settings = decision_settings(self.cfg)
        old = assessment.primary
        if old is None:
            raise UnsafePlan("no primary is known: nothing to fail over from")
        cands = decision.candidates(assessment, settings)
        if to_region is not None:
            if to_region not in {r.name for r in self.cfg.regions}:
                names = ", ".join(r.name for r in self.cfg.ordered_regions())
                raise UsageError(f"unknown region {to_region!r} (regions: {names})")
            cands = tuple(c for c in cands if c.region == to_region)
        if not cands:
            where = f" in {to_region}" if to_region else ""
            raise UnsafePlan(f"no replica{where} can be promoted (reachable, streaming replicas)")
        cand = cands[0]
        old_node = assessment.node(old)
        primary_healthy = old_node.verdict in (Verdict.HEALTHY, Verdict.DEGRADED)
        info = self.infos[old]
        old_facts = planning.NodeFacts(
            name=old,
            region=info.region,
            host=info.host,
            port=info.port,
            slot=slot_of(old),
            reachable=old_node.consecutive_failures == 0,
            role="primary",
            fence_command=bool(info.node.fence_command),
            agent=self.agent_fence is not None,
        )
        others = [c.node for c in cands if c.node != cand.node] + [
            n.node.name
            for n in assessment.nodes
            if n.node.name not in {old, cand.node} and n.node.name not in {c.node for c in cands}
        ]
        context: dict[str, Any] = {
            "old_primary": {"name": old, "region": info.region},
            "candidate": {"name": cand.node, "region": cand.region},
            "other_replicas": others,
            "replica_slots": [slot_of(n) for n in others] + [slot_of(old)],
        }
        runbook = self.runbooks[kind]
        steps = tuple(
            planning.PlannedStep(
                name=s.name,
                action=s.action,
                params=_preview(s, context),
                timeout=s.timeout,
                attempts=s.retry.attempts,
                on_failure=s.on_failure,
                approval=s.approval,
            )
            for s in runbook.steps
        )
        dns_plan = None
        if self.switcher is not None:  # the same target the switch_dns step will use
            dns_plan = await self.switcher.plan(
                cand.region, target_of_region(self.cfg, cand.region)
            )
        loss_s = 0.0 if kind == "switchover" else cand.lag_seconds
        loss_b = 0 if kind == "switchover" else cand.lag_bytes
        why = (
            f"{cand.node} in {cand.region}: "
            + ("within the RPO, " if cand.within_rpo else "BEYOND the RPO, ")
            + f"region preference {settings.region_order.index(cand.region) + 1}, "
            + f"lag {_fmt(cand.lag_seconds, 's')} / {_fmt(cand.lag_bytes, ' bytes')}"
        )
        plan = planning.FailoverPlan(
            kind=kind,
            trigger=trigger,
            old_primary=old_facts,
            candidate=cand,
            why=why,
            expected_loss_seconds=loss_s,
            expected_loss_bytes=loss_b,
            fence=planning.fence_description(old_facts, kind),
            dns=dns_plan,
            steps=steps,
            rto=self.cfg.objectives.rto,
            rpo=self.cfg.objectives.rpo,
            accept_data_loss=accept_data_loss,
            force=force,
            context=context,
        )
        planning.raise_if_unsafe(plan, primary_healthy=primary_healthy)
        return plan

    # --- execution -----------------------------------------------------------------------

    async def execute(
        self, plan: planning.FailoverPlan, incident: Incident | None = None
    ) -> tuple[RunResult, Incident]:
        """Run the plan's runbook; returns the result and the (updated) incident."""
        inc = incident or Incident(
            id=new_id(_now()),
            opened_at=_now(),
            primary=plan.old_primary.name,
            region=plan.old_primary.region,
            kind=plan.kind,
        )
        run_id = new_run_id(plan.kind)
        inc.run_id, inc.plan, inc.new_primary = run_id, plan.to_dict(), plan.candidate.node
        if plan.kind == "failover":
            inc.rpo_seconds = plan.expected_loss_seconds
            inc.rpo_bytes = plan.expected_loss_bytes
        if plan.accept_data_loss or plan.force:
            inc.notes.append(
                f"overrides used: accept_data_loss={plan.accept_data_loss} force={plan.force}"
            )
        await self.incidents.save_async(inc)
        result = await self._run(run_id, plan.kind, dict(plan.context), inc, plan.checksum())
        return result, inc

    async def _run(
        self,
        run_id: str,
        kind: str,
        context: dict[str, Any],
        inc: Incident,
        checksum: str | None,
        resume: Any = None,
    ) -> RunResult:
        async def on_event(name: str, detail: str) -> None:
            """A timeline event, persisted before the step goes on (written off the loop)."""
            inc.event(name, _now(), detail)
            await self.incidents.save_async(inc)

        async def notify(event: str) -> list[dict[str, Any]]:
            if self.notifier is None:
                return []
            return await self.notifier.incident_event(inc, event, _now())

        actions = Actions(self.cfg, self.drivers, self.switcher, on_event, notify, self.agent_fence)
        executor = Executor(
            actions.table(), self.journal, fence=self.fence, on_record=self.on_record
        )
        result = await executor.run(
            run_id, self.runbooks[kind], context, resume_from=resume, checksum=checksum
        )
        if result.status is RunStatus.DEPOSED:  # the run stays open for the leader to resume
            inc.notes.append(f"run {run_id} stopped here: {result.reason}")
            await self.incidents.save_async(inc)
            return result
        ok = result.status is RunStatus.COMPLETED and _promoted(result)
        inc.close("failed_over" if ok else "failed", _now())
        if not ok:
            inc.notes.append(f"run {run_id} ended {result.status.value}: {result.reason or ''}")
        await self.incidents.save_async(inc)
        log.info(
            f"{kind} run {run_id} {result.status.value}; incident {inc.id} RTO "
            f"{_fmt(inc.rto_seconds, 's')}",
            reason="FAILOVER_DONE" if ok else "FAILOVER_FAILED",
        )
        return result

    async def resume_unfinished(self) -> list[RunResult]:
        """Resume runs a previous daemon left unfinished (steps are idempotent)."""
        results = []
        for rec in await asyncio.to_thread(self.journal.unfinished):
            kind = rec.runbook or ""
            if kind not in self.runbooks:
                continue
            inc = next((i for i in self.incidents.all() if i.run_id == rec.run_id), None)
            if inc is None:
                inc = Incident(
                    id=new_id(_now()),
                    opened_at=rec.started_at or _now(),
                    primary=str(rec.context.get("old_primary", {}).get("name")),
                    region=str(rec.context.get("old_primary", {}).get("region")),
                    kind=kind,
                    run_id=rec.run_id,
                )
            inc.notes.append(f"run {rec.run_id} resumed after a restart of the orchestrator")
            log.warning(f"resuming unfinished {kind} run {rec.run_id}", reason="RUN_RESUMING")
            results.append(
                await self._run(rec.run_id, kind, rec.context, inc, rec.checksum, resume=rec)
            )
        return results

    async def aclose(self) -> None:
        await asyncio.gather(*(d.aclose() for d in self.drivers.values()), return_exceptions=True)


def _promoted(result: RunResult) -> bool:
    try:
        return result.step("promote").status.value == "ok"
    except (KeyError, StopIteration):
        return False


def _preview(step: Any, context: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as far as they can be rendered before the run (``steps.*`` come later)."""
    try:
        return render_params(step, context)
    except Exception:
        return dict(step.params)


def _fmt(v: float | int | None, unit: str) -> str:
    if v is None:
        return "unknown"
    return f"{v:.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def _now() -> float:
    return time.time()
