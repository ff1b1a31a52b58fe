"""DR drills: move (or fail) the primary on purpose under a synthetic write load, measure RTO
and RPO per leg, verify DNS and smoke checks, judge against the objectives, record the result.

A drill is pre-checks, then one or two legs: a **switchover** drill moves the primary to the
target region with the switchover runbook; a **failover** drill runs ``drill.failure_command``
on the primary (the way a real outage would fail it), waits until the loss is confirmed and
runs the failover runbook, then brings the failed node back as a replica. With failback, a
switchover back to the original region follows.

Guarantees:

* **Pre-checks first** (:func:`orchestrator.drillcheck.prechecks` plus the first leg's plan):
  a refused drill changes nothing: no lock, no write load, no run; its record says why.
* **Dry run** = pre-checks plus the planned legs (:meth:`FailoverService.plan`, which reads but
  changes nothing); no lock, no load, no record written. The details are in
  :attr:`DrillRunner.planned`.
* **The drill lock** (``controls.acquire_drill``, expiring after ``drill.max_duration``) is
  held from the first change to the end and released in ``finally``; the write load is always
  stopped. The daemon's decision engine stands aside while it is held (``DRILL_IN_PROGRESS``).
* **Bounded**: every wait (loss confirmation, settling, DNS verification, smoke checks, the
  failure command, the lost-commit query) has its own bound; runbook steps have theirs.
  ``max_duration`` is checked between phases: the drill never cancels a runbook run midway
  (a half-done promotion is worse than a late drill).
* **Record**: written atomically to ``<state_dir>/drills/<id>.json`` with the keys documented in
  :mod:`orchestrator.drillrecord`; one log line per phase with a ``reason`` code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import structlog
from structlog.contextvars import bound_contextvars

from orchestrator import decision, drillcheck
from orchestrator.commands import fill_argv, run_command
from orchestrator.config import Config
from orchestrator.controls import acquire_drill, load_controls, release_drill
from orchestrator.dnsruntime import target_of_region
from orchestrator.drillcheck import Check, LegFacts
from orchestrator.drillload import Ack, ServiceTarget, WriteLoad, smoke_check
from orchestrator.drillrecord import (
    DrillStore,
    conclude,
    new_drill_id,
    new_leg,
    new_record,
    planned_phase,
)
from orchestrator.errors import HeliosError, UsageError
from orchestrator.executor import RunResult, RunStatus, StepStatus
from orchestrator.failover import FailoverService
from orchestrator.incidents import Incident, new_id
from orchestrator.model import Assessment
from orchestrator.planning import FailoverPlan
from probes.postgres import ConnectionSlot

log = structlog.get_logger("helios.drill")

FAILURE_COMMAND_TIMEOUT: Final = 60.0
DNS_VERIFY_TIMEOUT: Final = 30.0
LOST_QUERY_TIMEOUT: Final = 10.0
WARMUP_TIMEOUT: Final = 15.0
POLL_MIN: Final = 0.2
"""Least time between two assessments while polling (an ``assess`` that returns at once)."""

Assess = Callable[[], Awaitable[Assessment]]


@dataclass(frozen=True, slots=True)
class _Spec:
    """What was asked of one drill, defaults filled in from ``cfg.drill``."""

    kind: str
    to_region: str | None
    failback: bool


class _Aborted(HeliosError):
    """The drill cannot go on (the reason ends up in the record)."""


class DrillRunner:
    """Runs one drill at a time for one config; see the module docstring."""

    def __init__(
        self, cfg: Config, service: FailoverService, assess: Assess, *, trigger: str = "manual"
    ) -> None:
        self._cfg = cfg
        self._svc = service
        self._assess = assess
        self._trigger = trigger
        self.store = DrillStore(cfg.state_dir)
        self.planned: list[dict[str, Any]] = []
        """Dry run only: per leg, the plan, the failure command and what would be measured."""
        self._primary: str | None = None
        self._target = ServiceTarget(cfg, lambda: self._primary)
        self._lost_seen: set[int] = set()
        self._id = ""

    # --- the whole drill ---------------------------------------------------------------------

    async def run(
        self,
        kind: str | None = None,
        to_region: str | None = None,
        failback: bool | None = None,
        dry_run: bool = False,
        drill_id: str | None = None,
    ) -> dict[str, Any]:
        """Run (or plan) a drill; returns its record (``None`` arguments: ``cfg.drill``).

        The record's layout is documented in :mod:`orchestrator.drillrecord` (``result`` is
        ``planned`` for a dry run). Raises UsageError for an unknown region or a failure
        command that cannot be filled in (nothing changed).
        """
        s = self._cfg.drill
        kind = kind or s.kind
        if kind not in ("switchover", "failover"):
            raise UsageError(f"unknown drill kind {kind!r} (switchover or failover)")
        spec = _Spec(kind, to_region or s.to, s.failback if failback is None else failback)
        started = time.time()
        self._id = drill_id or new_drill_id(started)
        self._lost_seen, self.planned = set(), []
        record = new_record(self._id, kind, self._trigger, dry_run, started, self._cfg)
        with bound_contextvars(drill=self._id):
            a = await self._assess()
            self._primary = a.primary
            checks, plan = await self._prechecks(a, spec)
            record["prechecks"] = [c.to_dict() for c in checks]
            if not all(c.ok for c in checks):
                return await self._refused(record, drillcheck.refused_reasons(checks), dry_run)
            assert plan is not None
            log.info(f"drill {self._id}: pre-checks passed", reason="DRILL_PRECHECKS_OK")
            if dry_run:
                record["legs"] = self._preview(plan, spec)
                record["result"] = "planned"
                record["finished_at"] = time.time()
                log.info(f"drill {self._id}: dry run, nothing changed", reason="DRILL_DRY_RUN")
                return record
            return await self._execute(record, a, spec)

    async def _prechecks(
        self, a: Assessment, spec: _Spec
    ) -> tuple[list[Check], FailoverPlan | None]:
        kind = spec.kind
        state_dir = self._cfg.state_dir
        controls = await asyncio.to_thread(load_controls, state_dir)
        incident = await asyncio.to_thread(self._svc.incidents.open_incident)
        unfinished = await asyncio.to_thread(self._svc.journal.unfinished)
        argv = self._failure_argv(a.primary) if kind == "failover" and a.primary else None
        checks = drillcheck.prechecks(
            a,
            controls,
            incident is not None,
            bool(unfinished),
            self._cfg.objectives.rpo,
            kind=kind,
            failure_command=argv if kind == "failover" else None,
        )
        if not all(c.ok for c in checks):
            return checks, None
        try:  # the first leg's plan: the same rails the real run will meet
            plan = await self._svc.plan(
                a, kind=kind, to_region=spec.to_region, trigger="drill", force=kind == "failover"
            )
        except UsageError:
            raise
        except HeliosError as exc:
            return [*checks, Check("plan", False, str(exc))], None
        return [*checks, Check("plan", True, plan.why)], plan

    async def _refused(
        self, record: dict[str, Any], reasons: list[str], dry_run: bool
    ) -> dict[str, Any]:
        record.update(result="refused", reasons=reasons, finished_at=time.time())
        log.warning(f"drill {self._id} refused: {'; '.join(reasons)}", reason="DRILL_REFUSED")
        if not dry_run:
            await asyncio.to_thread(self.store.save, record)
        return record

    async def _execute(self, record: dict[str, Any], a: Assessment, spec: _Spec) -> dict[str, Any]:
        state_dir = self._cfg.state_dir
        s = self._cfg.drill
        deadline = time.monotonic() + s.max_duration
        try:
            await asyncio.to_thread(
                acquire_drill, state_dir, self._id, time.time() + s.max_duration
            )
        except HeliosError as exc:
            return await self._refused(record, [f"drill lock: {exc}"], False)
        load = WriteLoad(self._id, s.write_load.rate, s.write_load.timeout, self._target)
        log.info(
            f"drill {self._id} started: {spec.kind}" + (" with failback" if spec.failback else ""),
            reason="DRILL_STARTED",
        )
        try:
            load.start()
            if not await load.wait_acks(max(3, int(s.write_load.rate)), WARMUP_TIMEOUT):
                raise _Aborted(
                    f"the write load got no acknowledgement within {WARMUP_TIMEOUT:g}s "
                    f"({len(load.failures)} failed attempts)"
                )
            await self._legs(record, a, spec, load, deadline)
        except asyncio.CancelledError:
            record.update(result="aborted", reasons=["the drill was cancelled"])
            raise
        except _Aborted as exc:
            log.error(f"drill {self._id} aborted: {exc}", reason="DRILL_ABORTED")
            record.update(result="aborted", reasons=[str(exc)])
        except Exception as exc:  # the top of the drill: any surprise aborts it, logged
            log.exception(f"drill {self._id} aborted: {exc}", reason="DRILL_ABORTED")
            record.update(result="aborted", reasons=[f"{type(exc).__name__}: {exc}"])
        finally:
            await load.stop()
            await asyncio.to_thread(release_drill, state_dir, self._id)
            conclude(record, load)
            path = await asyncio.to_thread(self.store.save, record)
            log.info(
                f"drill {self._id} {record['result']}; record {path}",
                reason=f"DRILL_{record['result'].upper()}",
                reasons=record["reasons"],
            )
        return record

    async def _legs(
        self, record: dict[str, Any], a: Assessment, spec: _Spec, load: WriteLoad, deadline: float
    ) -> None:
        assert a.primary is not None
        origin, origin_region = a.primary, self._svc.infos[a.primary].region
        if spec.kind == "switchover":
            leg, promoted = await self._switchover_leg(a, spec.to_region, load)
        else:
            leg, promoted = await self._failover_leg(a, spec.to_region, load, deadline)
        record["legs"].append(leg)
        if not promoted:
            if spec.kind == "switchover" and leg["run_id"] is not None:
                record["reasons"] += await self._restore_writes(origin, leg["to_node"])
            return
        if spec.kind == "failover":
            problem = await self._rejoin(origin, leg["to_node"])
            if problem:
                record["reasons"].append(problem)
        a, settled = await self._settle(leg["to_node"], deadline)
        if not settled:
            record["reasons"].append(f"the cluster was not healthy after {leg['name']}")
        if not spec.failback:
            return
        if time.monotonic() >= deadline:
            record["reasons"].append("max_duration reached before the failback")
            return
        back, promoted = await self._switchover_leg(a, origin_region, load)
        record["legs"].append(back)
        if not promoted and back["run_id"] is not None:
            record["reasons"] += await self._restore_writes(leg["to_node"], back["to_node"])
        if promoted:
            _, settled = await self._settle(origin, deadline)
            if not settled:
                record["reasons"].append(f"the cluster was not healthy after {back['name']}")

    # --- legs --------------------------------------------------------------------------------

    async def _switchover_leg(
        self, a: Assessment, to_region: str | None, load: WriteLoad
    ) -> tuple[dict[str, Any], bool]:
        started = time.time()
        log.info(f"drill {self._id}: switchover leg starting", reason="DRILL_LEG_STARTED")
        try:
            plan = await self._svc.plan(a, kind="switchover", to_region=to_region, trigger="drill")
        except HeliosError as exc:
            return self._unplanned(a, to_region, started, f"switchover refused: {exc}"), False
        inc = Incident(
            id=new_id(started),
            opened_at=started,
            primary=plan.old_primary.name,
            region=plan.old_primary.region,
            kind="switchover",
            drill_id=self._id,
        )
        result, inc = await self._svc.execute(plan, inc)
        return await self._finish_leg(plan, result, inc, started, load)

    async def _failover_leg(
        self, a: Assessment, to_region: str | None, load: WriteLoad, deadline: float
    ) -> tuple[dict[str, Any], bool]:
        assert a.primary is not None
        old, region = a.primary, self._svc.infos[a.primary].region
        argv = self._failure_argv(old)
        started = time.time()
        if argv is None:  # the pre-checks refuse a failover drill without one
            return self._unplanned(a, to_region, started, "no drill.failure_command"), False
        log.info(
            f"drill {self._id}: failing {old} with {argv}",
            reason="DRILL_FAILURE_INJECTED",
            node=old,
        )
        try:
            await run_command(argv, FAILURE_COMMAND_TIMEOUT)
        except HeliosError as exc:
            return self._unplanned(a, to_region, started, f"failure command: {exc}"), False
        failed_at = _failure_moment(load, started, time.time())
        inc = Incident(
            id=new_id(failed_at),
            opened_at=failed_at,
            primary=old,
            region=region,
            kind="failover",
            drill_id=self._id,
        )
        inc.event("first_failure", failed_at, f"drill {self._id}: {' '.join(argv)}")
        bound = max(30.0, 10 * self._cfg.probes.interval * self._cfg.probes.failure_threshold)
        # The same judgement as the daemon's decision engine: DOWN after the failure threshold
        # AND confirmed by the replicas (one failed probe never fails over).
        lost, confirmed = await self._until(
            lambda x: decision.seen(x) is decision.Seen.PRIMARY_LOST, bound, deadline
        )
        reason = None
        plan = None
        if not confirmed:
            reason = f"the loss of {old} was not confirmed within {bound:g}s"
        else:
            inc.event("confirmed", lost.at, lost.sentence)
            log.info(f"drill {self._id}: {lost.sentence}", reason="DRILL_PRIMARY_LOST")
            try:
                plan = await self._svc.plan(
                    lost, kind="failover", to_region=to_region, trigger="drill"
                )
            except HeliosError as exc:
                reason = f"failover refused: {exc}"
        if plan is None:
            inc.notes.append(reason or "")
            inc.close("failed")
            await asyncio.to_thread(self._svc.incidents.save, inc)
            leg = self._unplanned(a, to_region, started, reason or "")
            leg["incident_id"] = inc.id
            return leg, False
        result, inc = await self._svc.execute(plan, inc)
        return await self._finish_leg(plan, result, inc, started, load, failed_at)

    async def _finish_leg(
        self,
        plan: FailoverPlan,
        result: RunResult,
        inc: Incident,
        started: float,
        load: WriteLoad,
        failed_at: float | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Measure and judge a leg whose run ended. ``started``: when the leg began (the
        switchover's start, or the start of the failure command); ``failed_at``: the moment
        of the injected failure (the RPO window ends there; default ``started``). The RTO is
        the incident's: opened at ``started`` or at the failure, closed by the first verified
        write."""
        finished = time.time()
        promoted = inc.status == "failed_over"
        new = plan.candidate.node if promoted else plan.old_primary.name
        self._primary = new
        phases = await self._phases(result.run_id)
        dns = await self._verify_dns(plan.candidate.region) if promoted else []
        smoke = await self._smoke()
        lost = await self._lost(new, load)
        failed = tuple(
            f"{s.name}: {s.error}"
            for s in result.steps
            if s.status in (StepStatus.FAILED, StepStatus.COMPENSATED)
        )
        end = started if failed_at is None else failed_at
        rpo = None if lost is None else drillcheck.rpo_seconds([x.at for x in lost], end)
        facts = LegFacts(
            completed=result.status is RunStatus.COMPLETED and promoted,
            run_reason=result.reason,
            failed_steps=failed,
            rto_seconds=inc.rto_seconds,
            rpo_seconds=rpo,
            dns=tuple(Check(d["provider"], d["ok"], d["detail"]) for d in dns),
            smoke=tuple(Check(c["name"], c["ok"], c["detail"]) for c in smoke),
        )
        passed, reasons = drillcheck.judge_leg(
            facts, self._cfg.objectives.rto, self._cfg.objectives.rpo
        )
        leg = new_leg(
            plan.old_primary.name,
            plan.old_primary.region,
            plan.candidate.node,
            plan.candidate.region,
            started=started,
            finished=finished,
            run_id=result.run_id,
            incident_id=inc.id,
            rto=inc.rto_seconds,
            rpo=rpo,
            lost=None if lost is None else len(lost),
            acked=load.acked_between(started, finished),
            phases=phases,
            dns=dns,
            smoke=smoke,
            passed=passed,
            reasons=reasons,
        )
        log.info(
            f"drill {self._id}: leg {leg['name']} {'passed' if passed else 'failed'}: RTO "
            f"{_fmt(inc.rto_seconds)}, RPO {_fmt(rpo)}, lost {leg['lost_commits']}",
            reason="DRILL_LEG_PASSED" if passed else "DRILL_LEG_FAILED",
            reasons=reasons,
        )
        return leg, promoted

    def _unplanned(
        self, a: Assessment, to_region: str | None, started: float, reason: str
    ) -> dict[str, Any]:
        log.error(f"drill {self._id}: leg failed: {reason}", reason="DRILL_LEG_FAILED")
        primary = a.primary or ""
        region = self._svc.infos[primary].region if primary in self._svc.infos else ""
        leg = new_leg(primary, region, None, to_region, started=started, finished=time.time())
        leg["reasons"] = [reason]
        return leg

    # --- between legs --------------------------------------------------------------------

    async def _until(
        self, pred: Callable[[Assessment], bool], bound: float, deadline: float
    ) -> tuple[Assessment, bool]:
        """Assess until ``pred`` holds (True) or ``bound`` / the drill's deadline passes."""
        end = min(time.monotonic() + bound, deadline)
        while True:
            t0 = time.monotonic()
            a = await self._assess()
            if pred(a):
                return a, True
            if time.monotonic() >= end:
                return a, False
            await asyncio.sleep(max(0.0, POLL_MIN - (time.monotonic() - t0)))

    async def _settle(self, primary: str, deadline: float) -> tuple[Assessment, bool]:
        p = self._cfg.probes
        bound = max(self._cfg.drill.settle, (p.recovery_threshold + 2) * p.interval)
        a, ok = await self._until(
            lambda x: x.reason == "ALL_HEALTHY" and x.primary == primary, bound, deadline
        )
        log.log(
            20 if ok else 30,
            f"drill {self._id}: " + ("every node healthy" if ok else f"not settled: {a.sentence}"),
            reason="DRILL_SETTLED" if ok else "DRILL_NOT_SETTLED",
        )
        return a, ok

    async def _rejoin(self, node: str, upstream: str) -> str | None:
        """Bring the failed old primary back as a replica of the new one (the driver's
        ``rejoin_command``, bounded by it); the problem in words, or None."""
        up = self._svc.infos[upstream]
        try:
            how = await self._svc.drivers[node].rejoin(up.name, up.region, up.host, up.port)
        except HeliosError as exc:
            log.error(f"drill {self._id}: rejoin of {node} failed: {exc}", reason="REJOIN_FAILED")
            return f"rejoin of {node} as a replica of {upstream} failed: {exc}"
        log.info(
            f"drill {self._id}: {node} rejoined as a replica of {upstream} ({how})",
            reason="DRILL_REJOINED",
        )
        return None

    async def _restore_writes(self, primary: str, candidate: str | None) -> list[str]:
        """After a switchover run that promoted nothing: let the old primary take writes
        again (``stop_writes`` left it read-only), but only once the candidate is provably
        still a standby (a promotion that timed out may complete later: two writable
        primaries are worse than a read-only one). The problems in words (empty: restored)."""
        if candidate is not None:
            st = await self._svc.drivers[candidate].status()
            if not (st.reachable and st.in_recovery):
                why = "a primary" if st.is_primary else f"in an unknown state ({st.error})"
                return [f"writes NOT resumed on {primary}: the candidate {candidate} is {why}"]
        try:
            await self._svc.drivers[primary].resume_writes()
        except HeliosError as exc:
            return [f"writes could not be resumed on {primary} after the switchover: {exc}"]
        log.warning(
            f"drill {self._id}: switchover promoted nothing; writes resumed on {primary}",
            reason="DRILL_WRITES_RESUMED",
        )
        return []

    # --- measurements ---------------------------------------------------------------------

    async def _phases(self, run_id: str) -> list[dict[str, Any]]:
        runs = await asyncio.to_thread(self._svc.journal.runs)
        rec = runs.get(run_id)
        return drillcheck.phases_of(rec.records) if rec else []

    async def _verify_dns(self, region: str) -> list[dict[str, Any]]:
        """Each provider's API and its authoritative name servers serve the new target."""
        switcher = self._svc.switcher
        if switcher is None:
            return []
        try:
            async with asyncio.timeout(DNS_VERIFY_TIMEOUT * 2):
                plan = await switcher.plan(region, target_of_region(self._cfg, region))
                answers = await switcher.verify(plan, DNS_VERIFY_TIMEOUT)
        except (HeliosError, TimeoutError) as exc:
            return [
                {"provider": p, "ok": False, "detail": f"verification failed: {exc}"}
                for p in switcher.provider_names
            ]
        out = []
        for provider in switcher.provider_names:
            mine = [x for x in answers if x.provider == provider]
            detail = "; ".join(
                f"{x.source} {','.join(x.values) or '(none)'}"
                + (f" ({x.error})" if x.error else "")
                for x in mine
            )
            ok = bool(mine) and all(x.ok for x in mine)
            out.append({"provider": provider, "ok": ok, "detail": detail or "no answer"})
        return out

    async def _smoke(self) -> list[dict[str, Any]]:
        return [await smoke_check(c, self._target) for c in self._cfg.drill.smoke_checks]

    async def _lost(self, node: str, load: WriteLoad) -> list[Ack] | None:
        """Acknowledged commits the new primary lacks, not counted by an earlier leg (None when
        they could not be counted)."""
        info = self._svc.infos[node]
        password = info.node.password.get_secret_value() if info.node.password else None
        slot = ConnectionSlot(info.node.dsn, password, LOST_QUERY_TIMEOUT, "helios-drill")
        try:
            async with asyncio.timeout(LOST_QUERY_TIMEOUT):
                lost = await slot.run(load.lost_commits)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.error(f"drill {self._id}: cannot count lost commits: {exc}", reason="DRILL_NO_RPO")
            return None
        finally:
            await slot.aclose()
        new = [x for x in lost if x.seq not in self._lost_seen]
        self._lost_seen.update(x.seq for x in new)
        return new

    # --- helpers ------------------------------------------------------------------------------

    def _failure_argv(self, node: str | None) -> list[str] | None:
        template = self._cfg.drill.failure_command
        if not template or node is None:
            return None
        values = {"node": node, "region": self._svc.infos[node].region}
        try:
            return fill_argv(template, values)
        except ValueError as exc:
            raise UsageError(f"drill.failure_command {template}: {exc}") from None

    def _preview(self, plan: FailoverPlan, spec: _Spec) -> list[dict[str, Any]]:
        """The legs a real run would go through, and :attr:`planned` beside them."""
        kind = spec.kind
        old, cand = plan.old_primary, plan.candidate
        first = new_leg(old.name, old.region, cand.node, cand.region)
        first["phases"] = [planned_phase(s.name, s.action) for s in plan.steps]
        legs = [first]
        o = self._cfg.objectives
        start = "the injected failure" if kind == "failover" else "the start of the leg"
        measures = [
            f"RTO: {start} -> first verified write through the service name (objective {o.rto:g}s)",
            f"RPO: acknowledged commits of the write load ({self._cfg.drill.write_load.rate:g}/s) "
            f"missing on the new primary (objective {o.rpo:g}s)",
            "write unavailability: longest gap between acknowledged writes",
            "DNS: "
            + (", ".join(self._svc.switcher.provider_names) if self._svc.switcher else "none"),
            "smoke checks: "
            + (", ".join(c.name for c in self._cfg.drill.smoke_checks) or "none configured"),
        ]
        self.planned = [
            {
                "leg": first["name"],
                "kind": kind,
                "failure_command": self._failure_argv(old.name) if kind == "failover" else None,
                "plan": plan.to_dict(),
                "measures": measures,
            }
        ]
        if spec.failback:
            back = new_leg(cand.node, cand.region, old.name, old.region)
            back["phases"] = [
                planned_phase(s.name, s.action) for s in self._svc.runbooks["switchover"].steps
            ]
            legs.append(back)
            self.planned.append(
                {
                    "leg": back["name"],
                    "kind": "switchover",
                    "failure_command": None,
                    "plan": None,
                    "measures": measures,
                }
            )
        return legs


# --- helpers -----------------------------------------------------------------------------------


def _failure_moment(load: WriteLoad, command_started: float, command_ended: float) -> float:
    """When the injected failure hit, as the client saw it: the first failed write after the
    failure command started, or the command's end if no write failed before it returned (the
    command's own start-up time is not part of the outage)."""
    first = next((at for at, _ in load.failures if at >= command_started), None)
    return command_ended if first is None else min(first, command_ended)


def _fmt(v: float | None) -> str:
    return "unknown" if v is None else f"{v:.2f}s"
