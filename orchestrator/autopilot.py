"""Autopilot: runs the decision engine every tick and acts on it.

Guarantees: :meth:`Autopilot.on_tick` is quick (it reads the operator controls, decides, and
persists what changed) and never starts a second failover while one runs; the failover itself
runs as a task of the daemon's root TaskGroup; an incident is opened at the first failed probe
of the primary, updated as the decision evolves and closed when the primary recovers or the
failover ends; the decision memory is persisted so a restart keeps the cooldown.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import structlog

from orchestrator import decision
from orchestrator.comms import Comms
from orchestrator.controls import load_controls, load_memory, save_memory
from orchestrator.errors import Busy, HeliosError
from orchestrator.executor import RunStatus
from orchestrator.failover import FailoverService, decision_settings
from orchestrator.incidents import Incident, new_id
from orchestrator.leadership import Leadership, Solo
from orchestrator.model import Assessment, Snapshot
from orchestrator.observability.failover_metrics import FailoverMetrics
from orchestrator.planning import FailoverPlan

log = structlog.get_logger("helios.autopilot")


class Autopilot:
    def __init__(
        self,
        service: FailoverService,
        metrics: FailoverMetrics | None = None,
        comms: Comms | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self._leadership: Leadership = leadership or Solo()
        self._was_leading = False
        self._quorum_seen: tuple[int, int] | None = None
        self._svc = service
        self.comms = comms or Comms(service.cfg, service.incidents)
        self.drill: str | None = None
        """The id of the drill holding the lock, as of the last tick."""
        self._waiters: list[asyncio.Future[Assessment]] = []
        self._cfg = service.cfg
        self._settings = decision_settings(service.cfg)
        self._metrics = metrics
        self.memory = load_memory(self._cfg.state_dir)
        self.incident: Incident | None = service.incidents.open_incident()
        self._tg: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._demoting: set[str] = set()
        self._rejoining: set[str] = set()

    async def start(self, tg: asyncio.TaskGroup) -> None:
        """Adopt the root TaskGroup; resume a run a previous daemon left unfinished (when this
        instance leads; else as soon as it becomes the leader)."""
        self._tg = tg
        self._was_leading = self._leadership.is_leader
        if self._was_leading:
            await self._resume_unfinished()

    async def _resume_unfinished(self) -> None:
        if self._tg is None or self.busy:
            return
        adopt = getattr(self._leadership, "adopt_run", None)
        if adopt is not None:  # the run a previous leader left, from the coordination service
            await adopt(self._svc.journal)
        if await asyncio.to_thread(self._svc.journal.unfinished):
            self.memory = decision.Memory(
                state=decision.State.FAILING_OVER,
                since=self.memory.since,
                reason="RESUMING",
                last_failover_at=self.memory.last_failover_at,
                last_failover_from=self.memory.last_failover_from,
            )
            self._task = self._tg.create_task(self._resume(), name="failover-resume")

    async def drain(self, grace: float) -> None:
        """On shutdown: let a running failover finish within ``grace`` seconds, then cancel it
        (its journal lets the next start resume it)."""
        task = self._task
        if task is None or task.done():
            return
        log.warning(f"waiting up to {grace:g}s for the running failover", reason="DRAINING")
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
            log.error(
                "failover cancelled at shutdown; it resumes on the next start",
                reason="FAILOVER_INTERRUPTED",
            )

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def next_assessment(self, timeout: float) -> Assessment:
        """The assessment of the next tick (for a drill run by the daemon)."""
        fut: asyncio.Future[Assessment] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    async def on_tick(self, a: Assessment, snap: Snapshot | None = None) -> dict[str, Any]:
        """Decide for this tick; returns fields for the tick's log line. Only the leader
        decides and acts: a follower observes (and publishes what it sees) and nothing else."""
        leading = self._leadership.is_leader
        became_leader, self._was_leading = leading and not self._was_leading, leading
        if not leading:
            self._wake(a)
            return {"decision": "follower", "decision_reason": "NOT_LEADER"}
        if became_leader:
            await self._resume_unfinished()
        controls = self.controls(await asyncio.to_thread(load_controls, self._cfg.state_dir))
        self.drill = controls.drill
        a = await self._vantage_quorum(a)
        d, mem = decision.decide(self.memory, a, controls, self._settings, a.at)
        if controls.drill is None:  # a drill owns the topology and records its own legs
            await self._track_incident(a, d)
        if d.action is decision.Action.FAILOVER and not self.busy and self._tg is not None:
            self._task = self._tg.create_task(self._failover(a), name="failover")
        if d.action is decision.Action.ESCALATE:
            log.error(d.sentence, reason=f"ESCALATE_{d.reason}", decision=d.state.value)
        if d.demote and self._tg is not None and not self.busy and controls.drill is None:
            await self._demote_stale(d.demote, a)
        if controls.drill is None:
            await self._maybe_rejoin(a, d)
        if mem != self.memory:
            self.memory = mem
            await asyncio.to_thread(save_memory, self._cfg.state_dir, mem)
        level = self.comms.on_tick(
            a,
            snap,
            self.incident,
            holding=self.memory.state is decision.State.HOLD,
            busy=self.busy,
            acked_at=controls.acked_at,
            dns_degraded=bool(self._svc.switcher is not None and self._svc.switcher.degraded),
        )
        if self._metrics is not None:
            self._metrics.record_decision(
                self.memory,
                controls,
                self.incident,
                a.at,
                decision.in_cooldown(mem, controls, self._settings, a.at),
            )
            self._metrics.record_level(
                level.level, self.incident.level if self.incident is not None else 0
            )
        self._wake(a)
        return {
            "decision": self.memory.state.value,
            "decision_reason": d.reason,
            "level": level.level,
        }

    def require_leader(self) -> None:
        """Raise Busy (nothing started) unless this instance leads: a follower never acts."""
        if not self._leadership.is_leader:
            fields = self._leadership.status_fields()
            raise Busy(
                f"this instance is not the leader: {fields.get('instance', 'this instance')} "
                f"follows ({fields.get('detail', '')})"
            )

    def controls(self, local: decision.Controls) -> decision.Controls:
        """The operator controls in force: ``local`` with the shared pause and ack applied."""
        return _shared(local, getattr(self._leadership, "shared_controls", None))

    @property
    def leadership(self) -> Leadership:
        return self._leadership

    def _wake(self, a: Assessment) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(a)

    async def _vantage_quorum(self, a: Assessment) -> Assessment:
        """With several instances, the primary is lost only when enough vantage points see it
        fail (``coordination.vantage_quorum``): a network problem near this instance alone
        must not cause a failover. With node agents, also only once it has been failing for
        ``agent.fence_after``: a partition shorter than that never causes a failover (its
        agent would not have fenced it either), even for a leader elected mid-partition."""
        agreement = getattr(self._leadership, "vantage_agreement", None)
        cfg = self._cfg.coordination
        if not a.primary_loss_confirmed or a.primary is None or agreement is None or cfg is None:
            return a
        if self._cfg.agent.enabled:
            failing = a.node(a.primary).consecutive_failures * self._cfg.probes.interval
            if failing < self._cfg.agent.fence_after:
                if self._quorum_seen != (-1, -1):
                    self._quorum_seen = (-1, -1)
                    log.warning(
                        f"primary {a.primary} has been failing for {failing:.1f}s, less than "
                        f"agent.fence_after ({self._cfg.agent.fence_after:g}s): not declared "
                        "DOWN yet",
                        reason="PRIMARY_LOSS_TOO_RECENT",
                    )
                return replace(a, primary_loss_confirmed=False)
        agree, seen = await agreement(a.primary, a.at)
        if agree >= cfg.vantage_quorum:
            self._quorum_seen = None
            return a
        if self._quorum_seen != (agree, seen):  # once per change, not every tick
            self._quorum_seen = (agree, seen)
            log.warning(
                f"primary {a.primary} looks lost from here, but only {agree} of {seen} vantage "
                f"points agree (quorum {cfg.vantage_quorum}): not declared DOWN",
                reason="VANTAGE_QUORUM_MISSING",
            )
        return replace(a, primary_loss_confirmed=False)

    async def _track_incident(self, a: Assessment, d: decision.Decision) -> None:
        primary = a.primary
        if primary is None:
            return
        p = a.node(primary)
        inc = self.incident
        changed = False
        if inc is None and p.consecutive_failures >= 1 and not self.busy:
            inc = self.incident = Incident(
                id=new_id(a.at), opened_at=a.at, primary=primary, region=p.node.region
            )
            inc.event("first_failure", a.at, p.reason)
            changed = True
        if inc is None:
            return
        if d.reason == "PRIMARY_LOST":
            inc.event("confirmed", a.at, d.sentence)
            self.comms.status_changed(inc)
            changed = True
        elif d.state is decision.State.HOLD and inc.status == "open":
            inc.status = "held"
            inc.event("hold", a.at, d.sentence)
            self.comms.status_changed(inc)
            changed = True
        elif (
            d.reason in ("PRIMARY_HEALTHY", "PRIMARY_RECOVERED", "IN_COOLDOWN")
            and not self.busy
            and inc.is_open
            and inc.run_id is None
        ):
            inc.event("recovered", a.at, f"{primary} answers again")
            inc.close("recovered", a.at)
            self.comms.closed(inc)
            changed = True
        if changed:
            await self._svc.incidents.save_async(inc)
        if not inc.is_open:
            self.incident = None

    async def _failover(self, a: Assessment) -> None:
        ok = False
        try:
            plan = await self._svc.plan(a, kind="failover", trigger="automatic")
            result, inc = await self._svc.execute(plan, self.incident)
            if result.status is RunStatus.DEPOSED:  # the new leader resumes it
                return
            ok = inc.status == "failed_over"
            self.comms.closed(inc)
            if self._metrics is not None:
                self._metrics.failover_done("automatic", inc, ok)
        except HeliosError as exc:
            log.error(f"automatic failover refused or failed: {exc}", reason="FAILOVER_REFUSED")
            if self.incident is not None:
                self.incident.notes.append(f"automatic failover refused: {exc}")
                await self._svc.incidents.save_async(self.incident)
        finally:
            if self.memory.state is decision.State.FAILING_OVER and not self._leadership.is_leader:
                pass  # deposed mid-run: the run stays unfinished for whoever leads next
            else:
                self.memory = decision.failover_finished(self.memory, ok, a.at)
                await asyncio.to_thread(save_memory, self._cfg.state_dir, self.memory)
            if ok:
                self.incident = None

    async def start_operator_run(self, plan: FailoverPlan, requested_by: str) -> Incident:
        """Run an operator's plan (from the control API) as the daemon's one run in flight.

        Raises :class:`Busy` (nothing started) while a failover, switchover or drill holds the
        topology. A failover adopts the incident the daemon already has open for the lost
        primary; otherwise a new incident records the run. Returns the incident at once; the
        run goes on in a task of the daemon's TaskGroup (a client that disconnects does not
        stop it). The incident is on disk when this returns.
        """
        if self._tg is None:
            raise Busy("the daemon is still starting; try again in a moment")
        self.require_leader()
        if self.busy:
            raise Busy("a failover or switchover is already running")
        if self.drill is not None:
            raise Busy(f"drill {self.drill} holds the topology")
        now = time.time()
        adopted = self.incident if plan.kind == "failover" and self.incident is not None else None
        inc = adopted or Incident(
            id=new_id(now),
            opened_at=now,
            primary=plan.old_primary.name,
            region=plan.old_primary.region,
            kind=plan.kind,
        )
        inc.notes.append(f"{plan.kind} requested by {requested_by} through the control API")
        self._task = self._tg.create_task(
            self._operator_run(plan, inc, adopted is not None), name=f"operator-{plan.kind}"
        )
        # On disk before the caller hears of it: a client may read it back at once.
        await self._svc.incidents.save_async(inc)
        return inc

    async def _operator_run(self, plan: FailoverPlan, inc: Incident, adopted: bool) -> None:
        ok = False
        try:
            _, inc = await self._svc.execute(plan, inc)
            ok = inc.status == "failed_over"
            if adopted:
                self.comms.closed(inc)
            if self._metrics is not None and plan.kind == "failover":
                self._metrics.failover_done("manual", inc, ok)
        except HeliosError as exc:
            log.error(f"operator {plan.kind} failed: {exc}", reason="FAILOVER_FAILED")
            inc.notes.append(f"{plan.kind} failed: {exc}")
            await self._svc.incidents.save_async(inc)
        finally:
            if adopted and not inc.is_open:
                self.incident = None

    async def _resume(self) -> None:
        ok = False
        try:
            results = await self._svc.resume_unfinished()
            ok = all(r.status.value == "completed" for r in results)
        finally:
            self.memory = decision.failover_finished(self.memory, ok, self.memory.since)
            await asyncio.to_thread(save_memory, self._cfg.state_dir, self.memory)
            self.incident = None

    async def _maybe_rejoin(self, a: Assessment, d: decision.Decision) -> None:
        """The last failover's old primary is back (a reachable standby that streams from
        nobody) and the new primary is healthy: rewind it and make it follow the new primary."""
        old = self.memory.last_failover_from
        if (
            old is None
            or self._tg is None
            or self.busy
            or old in self._rejoining
            or a.primary is None
            or a.primary == old
        ):
            return
        if d.state not in (decision.State.COOLDOWN, decision.State.HEALTHY):
            return
        node = a.node(old)
        if node.consecutive_failures or node.role.value != "replica":
            return
        if node.reason != "REPLICATION_BROKEN":
            return
        if await asyncio.to_thread(self._svc.journal.unfinished):
            return
        self._rejoining.add(old)
        self._tg.create_task(self._rejoin(old, a.primary), name=f"rejoin-{old}")

    async def _rejoin(self, node: str, upstream: str) -> None:
        up = self._svc.infos[upstream]
        try:
            how = await self._svc.drivers[node].rejoin(up.name, up.region, up.host, up.port)
            log.warning(
                f"{node} rejoined as a replica of {upstream} ({how})",
                reason="OLD_PRIMARY_REJOINED",
                node=node,
            )
        except HeliosError as exc:
            log.error(f"could not rejoin {node}: {exc}", reason="REJOIN_FAILED", node=node)
        finally:
            self._rejoining.discard(node)

    async def _demote_stale(self, nodes: tuple[str, ...], a: Assessment) -> None:
        """Fence primaries on an older timeline, one task per node. A run in progress (ours or
        an operator's switchover) owns the topology: its old primary is left to the runbook."""
        unfinished = await asyncio.to_thread(self._svc.journal.unfinished)
        if self._tg is None or unfinished:
            return
        for stale in nodes:
            if stale not in self._demoting:
                self._demoting.add(stale)
                self._tg.create_task(self._demote(stale, a), name=f"demote-{stale}")

    async def _demote(self, node: str, a: Assessment) -> None:
        newest = max((n.timeline or 0) for n in a.nodes)
        try:
            await self._demote_once(node, a, newest)
        finally:
            self._demoting.discard(node)

    async def _demote_once(self, node: str, a: Assessment, newest: int) -> None:
        try:
            if await self._svc.drivers[node].demote_if_stale(newest):
                log.error(
                    f"{node} came back as a primary on an old timeline: fenced",
                    reason="STALE_PRIMARY_FENCED",
                    node=node,
                )
                last = self._svc.incidents.all()
                if last:
                    last[-1].divergent.append(
                        f"{node} reappeared as primary (timeline < {newest}); fenced at {a.at:.3f}"
                    )
                    await self._svc.incidents.save_async(last[-1])
        except HeliosError as exc:
            log.error(f"could not demote stale primary {node}: {exc}", reason="DEMOTE_FAILED")


def _shared(local: decision.Controls, shared: dict[str, Any] | None) -> decision.Controls:
    """With several instances, pause and ack are the ones every instance shares (so a new
    leader keeps them); the drill lock stays the local one (drills run on the leader)."""
    if shared is None:
        return local
    acked = shared.get("acked_at")
    return replace(
        local,
        paused=bool(shared.get("paused", False)),
        acked_at=float(acked) if isinstance(acked, int | float) else local.acked_at,
    )
