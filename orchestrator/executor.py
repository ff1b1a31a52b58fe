"""The executor: runs a runbook's steps against actions, journaling every step durably.

Guarantees:

* A step's ``step_started`` record is on disk (fsynced) **before** its action is called, and its
  ``step_finished`` / ``step_failed`` record before the next step starts. A run ends with exactly
  one ``run_finished`` or ``run_aborted`` record, or, at an unapproved gate, an
  ``awaiting_approval`` note (the run stays unfinished and resumes after approval).
* Each step runs under one tenacity policy built from its ``retry`` block: only
  :class:`~orchestrator.errors.TransientError` (including
  :class:`~orchestrator.errors.OperationTimeout`) is retried; backoff is exponential from
  ``retry.backoff``, capped at ``retry.max_delay``, never shorter than a ``Retry-After`` hint —
  and when the hint is longer than ``max_delay`` the step stops retrying instead of stalling the
  run. Every attempt runs inside ``asyncio.timeout(step.timeout)``, so a hung call ends as an
  ``OperationTimeout``. Sleeps go through the injected ``sleep``.
* ``on_failure``: ``abort`` ends the run (later steps never start); ``continue`` goes on;
  ``compensate`` runs the compensation action once (journaled as ``<step>.compensate``), then
  aborts. A template that cannot be rendered fails its step like a permanent error.
* Each step's result mapping is visible to later templates as ``steps.<step name>`` (as JSON
  reads it back, so a resumed run sees exactly what the live run saw); ``run.id`` is the run id,
  usable as an idempotency key.
* Resume: steps whose end is journaled are not run again (their results are restored); the step
  that was started but not ended is run again (actions are idempotent). A run whose runbook or
  context changed since it started is aborted rather than resumed.
* Cancellation is never swallowed: a record being written is completed, nothing more is
  journaled, and ``CancelledError`` propagates, so the next start finds the run unfinished.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from orchestrator.errors import (
    HeliosError,
    OperationError,
    OperationTimeout,
    PermanentError,
    RunbookError,
    TransientError,
)
from orchestrator.journal import Journal, RunRecord, dumps, to_jsonable
from orchestrator.retrying import RetryAfterBeyond, backoff, error_class
from orchestrator.runbook import (
    RESERVED_CONTEXT,
    Runbook,
    Step,
    StepRetry,
    render_compensation,
    render_params,
)

log = structlog.get_logger("helios.executor")

ActionFn = Callable[[dict[str, Any]], Awaitable[Mapping[str, Any] | None]]
"""Rendered params in, result mapping out. Raise TransientError to be retried, PermanentError or
UnsafePlan to fail the step at once. Must be idempotent (a resumed run may call it again)."""
Approver = Callable[[Step, dict[str, Any]], Awaitable[bool]]
Sleep = Callable[[float], Awaitable[None]]


class RunStatus(enum.StrEnum):
    COMPLETED = "completed"
    ABORTED = "aborted"
    AWAITING_APPROVAL = "awaiting_approval"
    DEPOSED = "deposed"
    """This orchestrator lost the leadership: it stopped before the next step and left the run
    unfinished in the journal, for the leader to resume."""


OnRecord = Callable[[dict[str, Any]], Awaitable[None]]
"""Told every journal record once it is on disk (the leader mirrors its run to the
coordination service with it); it must not raise."""

Fence = Callable[[], Awaitable[int | None]]
"""Checked before every step: returns the leader's epoch (None without leader election) or
raises HeliosError (e.g. LostLeadership) when this orchestrator may no longer act."""


class StepStatus(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not run: the run stopped before it (abort, approval gate)."""
    COMPENSATED = "compensated"
    """Failed, and its compensation succeeded."""


@dataclass(frozen=True, slots=True)
class StepOutcome:
    name: str
    status: StepStatus
    attempts: int = 0
    duration: float = 0.0
    error: str | None = None
    result: dict[str, Any] | None = None
    error_class: str | None = None
    restored: bool = False
    """Taken from the journal of the interrupted run, not run again."""


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: str
    status: RunStatus
    steps: list[StepOutcome]
    started_at: float
    finished_at: float
    reason: str | None = None

    def step(self, name: str) -> StepOutcome:
        return next(s for s in self.steps if s.name == name)


def step_backoff(retry: StepRetry) -> Callable[[RetryCallState], float]:
    """Exponential backoff capped at ``max_delay``, never shorter than a Retry-After hint."""
    return backoff(retry.backoff, retry.max_delay)


def plan_fingerprint(runbook: Runbook, context: Mapping[str, Any]) -> str:
    """sha256 of the runbook and the context as journaled: what a resumed run must match."""
    doc = {"runbook": runbook.model_dump(mode="json"), "context": dict(context)}
    return hashlib.sha256(dumps(doc, sort_keys=True).encode()).hexdigest()


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        f"attempt {state.attempt_number} failed ({exc}); retrying in {delay:g}s",
        reason="STEP_RETRY",
        attempt=state.attempt_number,
        delay=delay,
        error_class=error_class(exc) if exc else None,
    )


async def _durably(write: Callable[[], object]) -> None:
    """Run a journal write in a thread; if cancelled meanwhile, let the write finish (a record
    is never half-attempted) and then propagate the cancellation."""
    task = asyncio.ensure_future(asyncio.to_thread(write))
    interrupted = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            interrupted = True
        except Exception:  # the write's own error, raised below
            break
    error = task.exception()
    if interrupted:
        raise asyncio.CancelledError
    if error is not None:
        raise error


@dataclass
class _Prior:
    """What the journal of an interrupted run says about its steps."""

    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    approved: set[str] = field(default_factory=set)


@dataclass
class _Report:
    outcomes: list[StepOutcome]
    stop: RunStatus | None = None
    reason: str | None = None


class Executor:
    """Runs runbooks; see the module docstring for the guarantees."""

    def __init__(
        self,
        actions: Mapping[str, ActionFn],
        journal: Journal,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        approver: Approver | None = None,
        fence: Fence | None = None,
        on_record: OnRecord | None = None,
    ) -> None:
        self._fence = fence
        self._on_record = on_record
        self._epoch: int | None = None
        self._actions = dict(actions)
        self._journal = journal
        self._sleep = sleep
        self._clock = clock
        self._approver = approver

    async def run(
        self,
        run_id: str,
        runbook: Runbook,
        context: Mapping[str, Any],
        *,
        resume_from: RunRecord | None = None,
        checksum: str | None = None,
    ) -> RunResult:
        """Execute ``runbook`` with ``context`` (JSON-able; journaled in ``run_started``).

        ``checksum`` is the plan's checksum, journaled as is (default: the plan fingerprint).
        To resume after a restart pass the unfinished run's record and its context:
        ``run(rec.run_id, runbook, rec.context, resume_from=rec)``.
        Raises RunbookError (before journaling anything) if an action has no implementation,
        ValueError on misuse, OSError if the journal cannot be written.
        """
        self._check(runbook, context)
        fingerprint = plan_fingerprint(runbook, to_jsonable(dict(context)))
        started_at = self._clock()
        with bound_contextvars(run=run_id, runbook=runbook.name):
            try:
                refused = await self._fenced_out(run_id, runbook, [], started_at, None, False)
                if refused is not None:
                    return refused
                if resume_from is None:
                    prior = _Prior()
                    await self._record(
                        run_id,
                        "run_started",
                        runbook=runbook.name,
                        checksum=checksum or fingerprint,
                        fingerprint=fingerprint,
                        context=dict(context),
                        steps=[s.name for s in runbook.steps],
                    )
                    log.info(f"run {run_id} of {runbook.name} started", reason="RUN_STARTED")
                else:
                    prior = self._prior(run_id, resume_from)
                    started_at = resume_from.started_at or started_at
                    await self._record(
                        run_id, "note", event="resumed", message="resumed after restart"
                    )
                    log.warning(f"run {run_id} resumed after restart", reason="RUN_RESUMED")
                    started = resume_from.started or {}
                    if started.get("fingerprint") != fingerprint:
                        why = "the runbook or the plan context changed since the run started"
                        return await self._end(
                            run_id, runbook, [], RunStatus.ABORTED, started_at, why
                        )
                return await self._steps(run_id, runbook, context, prior, started_at)
            except asyncio.CancelledError:
                log.warning(
                    f"run {run_id} cancelled; it resumes on restart", reason="RUN_CANCELLED"
                )
                raise

    def _check(self, runbook: Runbook, context: Mapping[str, Any]) -> None:
        reserved = RESERVED_CONTEXT & context.keys()
        if reserved:
            raise ValueError(f"context names reserved for the executor: {sorted(reserved)}")
        problems = []
        for i, step in enumerate(runbook.steps):
            wanted = [("action", step.action)]
            if step.compensate is not None:
                wanted.append(("compensate.action", step.compensate.action))
            problems += [
                f"steps[{i}] ({step.name}).{where}: no implementation of {action!r}"
                for where, action in wanted
                if action not in self._actions
            ]
        if problems:
            raise RunbookError(runbook.name, problems)

    @staticmethod
    def _prior(run_id: str, rec: RunRecord) -> _Prior:
        if rec.run_id != run_id:
            raise ValueError(f"resume_from is run {rec.run_id}, not {run_id}")
        if rec.finished:
            raise ValueError(f"run {run_id} already ended ({rec.status}); nothing to resume")
        return _Prior(rec.step_states(), rec.approved_steps())

    async def _steps(
        self,
        run_id: str,
        runbook: Runbook,
        context: Mapping[str, Any],
        prior: _Prior,
        started_at: float,
    ) -> RunResult:
        ctx: dict[str, Any] = {
            **to_jsonable(dict(context)),
            "run": {"id": run_id, "runbook": runbook.name},
            "steps": {},
        }
        outcomes: list[StepOutcome] = []
        for step in runbook.steps:
            state = prior.states.get(step.name)
            if state is None or state["kind"] != "step_finished":  # not done before a restart
                deposed = await self._fenced_out(run_id, runbook, outcomes, started_at, step.name)
                if deposed is not None:
                    return deposed
            with bound_contextvars(step=step.name):
                report = await self._step(run_id, runbook.name, step, ctx, prior)
            outcomes += report.outcomes
            if report.stop is not None:
                return await self._end(
                    run_id, runbook, outcomes, report.stop, started_at, report.reason, step.name
                )
        return await self._end(run_id, runbook, outcomes, RunStatus.COMPLETED, started_at, None)

    async def _fenced_out(
        self,
        run_id: str,
        runbook: Runbook,
        outcomes: list[StepOutcome],
        started_at: float,
        step: str | None,
        journal: bool = True,
    ) -> RunResult | None:
        """None when this orchestrator may act (the epoch is noted for the journal); else the
        DEPOSED result, the run left unfinished for the leader."""
        if self._fence is None:
            return None
        try:
            self._epoch = await self._fence()
            return None
        except HeliosError as exc:
            why = f"not the leader any more: {exc}"
        if journal:
            await self._record(run_id, "note", event="deposed", step=step, message=why)
        log.error(
            f"run {run_id} stopped before {step or 'its start'}: {why}",
            reason="RUN_DEPOSED",
            step=step,
        )
        done = {o.name for o in outcomes}
        rest = [
            StepOutcome(s.name, StepStatus.SKIPPED) for s in runbook.steps if s.name not in done
        ]
        return RunResult(run_id, RunStatus.DEPOSED, outcomes + rest, started_at, self._clock(), why)

    async def _end(
        self,
        run_id: str,
        runbook: Runbook,
        outcomes: list[StepOutcome],
        status: RunStatus,
        started_at: float,
        reason: str | None,
        step: str | None = None,
    ) -> RunResult:
        done = {o.name for o in outcomes}
        outcomes = outcomes + [
            StepOutcome(s.name, StepStatus.SKIPPED) for s in runbook.steps if s.name not in done
        ]
        failed = [
            o.name for o in outcomes if o.status in (StepStatus.FAILED, StepStatus.COMPENSATED)
        ]
        if status is RunStatus.COMPLETED:
            await self._record(run_id, "run_finished", status=status.value, failed_steps=failed)
            sentence = f"run {run_id} completed" + (f"; failed steps: {failed}" if failed else "")
            log.info(sentence, reason="RUN_COMPLETED", failed_steps=failed)
        elif status is RunStatus.ABORTED:
            await self._record(run_id, "run_aborted", step=step, reason=reason)
            log.error(f"run {run_id} aborted: {reason}", reason="RUN_ABORTED", step=step)
        else:
            await self._record(run_id, "note", event="awaiting_approval", step=step)
            log.warning(f"run {run_id} waits for approval: {reason}", reason="AWAITING_APPROVAL")
        return RunResult(run_id, status, outcomes, started_at, self._clock(), reason)

    # --- one step ------------------------------------------------------------------------------

    async def _step(
        self, run_id: str, source: str, step: Step, ctx: dict[str, Any], prior: _Prior
    ) -> _Report:
        state = prior.states.get(step.name)
        if state is not None and state["kind"] != "step_started":
            outcome = _restored(step.name, state)
            if outcome.status is StepStatus.OK:
                ctx["steps"][step.name] = outcome.result
                log.info(f"{step.name}: done before the restart; not run again", reason="STEP_DONE")
                return _Report([outcome])
        else:
            try:
                params = render_params(step, ctx, source=source)
            except RunbookError as exc:
                outcome = await self._failed(run_id, step.name, exc, 0, 0.0)
            else:
                if step.approval and step.name not in prior.approved:
                    if not await self._approved(step, params):
                        why = f"step {step.name} needs approval"
                        return _Report([], RunStatus.AWAITING_APPROVAL, why)
                    await self._record(run_id, "note", event="approved", step=step.name)
                outcome = await self._execute(run_id, step.name, step.action, params, step)
            if outcome.status is StepStatus.OK:
                ctx["steps"][step.name] = outcome.result
                return _Report([outcome])
        return await self._on_failure(run_id, source, step, ctx, prior, outcome)

    async def _on_failure(
        self,
        run_id: str,
        source: str,
        step: Step,
        ctx: dict[str, Any],
        prior: _Prior,
        outcome: StepOutcome,
    ) -> _Report:
        why = f"step {step.name} failed: {outcome.error}"
        if step.on_failure == "continue":
            log.warning(f"{why}; continuing (on_failure: continue)", reason="STEP_FAILED_CONTINUE")
            return _Report([outcome])
        if step.on_failure == "abort":
            return _Report([outcome], RunStatus.ABORTED, why)
        name = f"{step.name}.compensate"
        with bound_contextvars(step=name):
            state = prior.states.get(name)
            if state is not None and state["kind"] != "step_started":
                comp = _restored(name, state)
            else:
                comp = await self._compensate(run_id, source, step, ctx)
        if comp.status is StepStatus.OK:
            outcome = replace(outcome, status=StepStatus.COMPENSATED)
            log.warning(f"{why}; compensated", reason="STEP_COMPENSATED")
        return _Report([outcome, comp], RunStatus.ABORTED, why)

    async def _compensate(
        self, run_id: str, source: str, step: Step, ctx: dict[str, Any]
    ) -> StepOutcome:
        name = f"{step.name}.compensate"
        assert step.compensate is not None  # the runbook model guarantees it
        try:
            params = render_compensation(step, ctx, source=source)
        except RunbookError as exc:
            return await self._failed(run_id, name, exc, 0, 0.0)
        once = step.model_copy(update={"retry": StepRetry(attempts=1)})
        return await self._execute(run_id, name, step.compensate.action, params, once)

    async def _approved(self, step: Step, params: dict[str, Any]) -> bool:
        if self._approver is None:
            log.warning(
                f"{step.name} needs approval and there is no approver", reason="NO_APPROVER"
            )
            return False
        try:
            return bool(await self._approver(step, params))
        except OperationError as exc:
            log.warning(f"approval request failed: {exc}", reason="APPROVAL_ERROR")
            return False

    async def _execute(
        self, run_id: str, name: str, action: str, params: dict[str, Any], step: Step
    ) -> StepOutcome:
        await self._record(run_id, "step_started", step=name, action=action, params=params)
        log.info(f"{name}: {action} started", reason="STEP_STARTED", action=action)
        t0 = self._clock()
        result, exc, attempts = await self._call(self._actions[action], action, params, step)
        duration = self._clock() - t0
        if exc is not None:
            return await self._failed(run_id, name, exc, attempts, duration)
        await self._record(
            run_id, "step_finished", step=name, result=result, attempts=attempts, duration=duration
        )
        log.info(f"{name}: {action} ok", reason="STEP_OK", attempts=attempts, duration=duration)
        return StepOutcome(name, StepStatus.OK, attempts, duration, result=result)

    async def _call(
        self, fn: ActionFn, action: str, params: dict[str, Any], step: Step
    ) -> tuple[dict[str, Any], Exception | None, int]:
        """(result, error, attempts). Every exception ends here: the step boundary must journal
        each failure, including an action's bug, before the run goes on or stops."""
        attempts = 0
        raw: Mapping[str, Any] | None = None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(step.retry.attempts) | RetryAfterBeyond(step.retry.max_delay),
            wait=step_backoff(step.retry),
            retry=retry_if_exception_type(TransientError),
            sleep=self._sleep,
            reraise=True,
            before_sleep=_log_retry,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    try:
                        async with asyncio.timeout(step.timeout):
                            raw = await fn(copy.deepcopy(params))
                    except TimeoutError:
                        raise OperationTimeout(
                            f"{action}: no result within {step.timeout:g}s"
                        ) from None
            if raw is not None and not isinstance(raw, Mapping):
                raise PermanentError(f"{action} returned {type(raw).__name__}, not a mapping")
            result: dict[str, Any] = to_jsonable(dict(raw or {}))
        except Exception as exc:
            return {}, exc, attempts
        return result, None, attempts

    async def _failed(
        self, run_id: str, name: str, exc: Exception, attempts: int, duration: float
    ) -> StepOutcome:
        cls, text = error_class(exc), f"{type(exc).__name__}: {exc}"
        await self._record(
            run_id,
            "step_failed",
            step=name,
            error_class=cls,
            error=text,
            attempts=attempts,
            duration=duration,
        )
        log.error(
            f"{name} failed after {attempts} attempt(s): {text}",
            reason="STEP_FAILED",
            error_class=cls,
            attempts=attempts,
            exc_info=exc if cls == "internal" else False,
        )
        return StepOutcome(name, StepStatus.FAILED, attempts, duration, text, error_class=cls)

    async def _record(self, run_id: str, kind: str, **fields: Any) -> None:
        record = {"run": run_id, "kind": kind, "at": self._clock(), **fields}
        if self._epoch is not None:
            record["epoch"] = self._epoch  # the leader's fencing token when it wrote this
        written: list[dict[str, Any]] = []
        await _durably(lambda: written.append(self._journal.append(record)))
        if self._on_record is not None and written:
            await self._on_record(written[0])


def _restored(name: str, state: Mapping[str, Any]) -> StepOutcome:
    ok = state["kind"] == "step_finished"
    return StepOutcome(
        name,
        StepStatus.OK if ok else StepStatus.FAILED,
        attempts=int(state.get("attempts", 0)),
        duration=float(state.get("duration", 0.0)),
        error=None if ok else state.get("error"),
        result=dict(state.get("result") or {}) if ok else None,
        error_class=None if ok else state.get("error_class"),
        restored=True,
    )
