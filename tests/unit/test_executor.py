"""The executor: retries, timeouts, failure policies, approval, results between steps, the
journal written before each action, crash and resume; a property test of the journal's shape."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from orchestrator import executor as executor_module
from orchestrator.errors import PermanentError, RunbookError, TransientError, UnsafePlan
from orchestrator.executor import Executor, RunStatus, StepStatus, plan_fingerprint
from orchestrator.journal import Journal
from orchestrator.runbook import ACTION_PARAMS, Runbook, Step, parse_runbook

Behaviour = Callable[[dict[str, Any], int], Awaitable[Mapping[str, Any] | None]]


class Actions:
    """Fake actions: each name runs a scripted behaviour and records its calls."""

    def __init__(self, **behaviours: Behaviour) -> None:
        self.behaviours = behaviours
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)

    def mapping(self, names: list[str] | None = None) -> dict[str, Any]:
        def make(name: str) -> Callable[[dict[str, Any]], Awaitable[Mapping[str, Any] | None]]:
            async def action(params: dict[str, Any]) -> Mapping[str, Any] | None:
                self.calls.append((name, params))
                behaviour = self.behaviours.get(name, ok)
                return await behaviour(params, self.count(name))

            return action

        return {n: make(n) for n in (names or sorted({*KNOWN, *self.behaviours}))}


async def ok(params: dict[str, Any], n: int) -> Mapping[str, Any] | None:
    return None


def fail_first(times: int, exc: Exception, then: Mapping[str, Any] | None = None) -> Behaviour:
    async def behaviour(params: dict[str, Any], n: int) -> Mapping[str, Any] | None:
        if n <= times:
            raise exc
        return then

    return behaviour


def raising(exc: BaseException) -> Behaviour:
    async def behaviour(params: dict[str, Any], n: int) -> Mapping[str, Any] | None:
        raise exc

    return behaviour


async def hang(params: dict[str, Any], n: int) -> Mapping[str, Any] | None:
    await asyncio.sleep(30)
    return None


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


KNOWN: dict[str, set[str] | None] = {
    **{k: set(v) for k, v in ACTION_PARAMS.items()},
    "act": None,
    "undo": None,
}


def book(*steps: dict[str, Any]) -> Runbook:
    full = [{"timeout": "5s", "params": {}, **s} for s in steps]
    return parse_runbook({"name": "test", "steps": full}, KNOWN)


def executor(tmp_path: Path, actions: Actions, **kw: Any) -> tuple[Executor, Journal, FakeSleep]:
    journal = Journal.in_state_dir(tmp_path)
    sleep = FakeSleep()
    return Executor(actions.mapping(), journal, sleep=sleep, **kw), journal, sleep


def kinds(journal: Journal, run: str = "r") -> list[tuple[str, str | None]]:
    return [(r["kind"], r.get("step")) for r in journal.runs()[run].records]


# --- retries and timeouts ---------------------------------------------------------------------


async def test_transient_errors_are_retried_with_capped_exponential_backoff(
    tmp_path: Path,
) -> None:
    actions = Actions(act=fail_first(3, TransientError("503"), then={"done": True}))
    ex, journal, sleep = executor(tmp_path, actions)
    rb = book(
        {
            "name": "s",
            "action": "act",
            "retry": {"attempts": 4, "backoff": "0.5s", "max_delay": "1.5s"},
        }
    )
    result = await ex.run("r", rb, {})
    assert result.status == RunStatus.COMPLETED
    assert sleep.delays == [0.5, 1.0, 1.5]
    assert result.step("s").attempts == 4 and result.step("s").result == {"done": True}
    finished = journal.runs()["r"].step_states()["s"]
    assert finished["kind"] == "step_finished" and finished["attempts"] == 4


async def test_retry_after_is_honoured_and_one_beyond_max_delay_stops_retrying(
    tmp_path: Path,
) -> None:
    actions = Actions(
        act=fail_first(1, TransientError("429", retry_after=3.0)),
        notify=raising(TransientError("429", retry_after=60.0)),
    )
    ex, _, sleep = executor(tmp_path, actions)
    rb = book(
        {"name": "s", "action": "act", "retry": {"attempts": 3, "backoff": "0.5s"}},
        {
            "name": "n",
            "action": "notify",
            "retry": {"attempts": 5, "max_delay": "5s"},
            "on_failure": "continue",
        },
    )
    result = await ex.run("r", rb, {})
    assert sleep.delays == [3.0], "never sooner than Retry-After; never a 60 s stall"
    assert result.step("s").attempts == 2
    assert result.step("n").status == StepStatus.FAILED and result.step("n").attempts == 1


async def test_permanent_error_fails_at_once_and_abort_stops_the_run(tmp_path: Path) -> None:
    actions = Actions(fence=raising(PermanentError("access denied")))
    ex, journal, sleep = executor(tmp_path, actions)
    rb = book(
        {"name": "fence", "action": "fence", "retry": {"attempts": 5}},
        {"name": "promote", "action": "promote"},
    )
    result = await ex.run("r", rb, {})
    assert result.status == RunStatus.ABORTED
    assert sleep.delays == [] and actions.count("fence") == 1
    assert actions.count("promote") == 0
    assert [(s.name, s.status) for s in result.steps] == [
        ("fence", StepStatus.FAILED),
        ("promote", StepStatus.SKIPPED),
    ]
    assert result.step("fence").error == "PermanentError: access denied"
    assert kinds(journal) == [
        ("run_started", None),
        ("step_started", "fence"),
        ("step_failed", "fence"),
        ("run_aborted", "fence"),
    ]


async def test_unsafe_plan_and_action_bugs_fail_the_step_without_retry(tmp_path: Path) -> None:
    actions = Actions(act=raising(UnsafePlan("two primaries")), undo=raising(KeyError("x")))
    ex, journal, _ = executor(tmp_path, actions)
    rb = book(
        {"name": "a", "action": "act", "retry": {"attempts": 3}, "on_failure": "continue"},
        {"name": "b", "action": "undo", "retry": {"attempts": 3}, "on_failure": "continue"},
    )
    result = await ex.run("r", rb, {})
    assert result.status == RunStatus.COMPLETED
    assert (actions.count("act"), actions.count("undo")) == (1, 1)
    assert (result.step("a").error_class, result.step("b").error_class) == ("unsafe", "internal")
    assert journal.runs()["r"].records[-1]["failed_steps"] == ["a", "b"]


async def test_hung_action_times_out_after_the_step_timeout(tmp_path: Path) -> None:
    actions = Actions(act=hang)
    ex, journal, sleep = executor(tmp_path, actions)
    rb = book({"name": "s", "action": "act", "timeout": "200ms", "retry": {"attempts": 2}})
    t0 = time.monotonic()
    result = await ex.run("r", rb, {})
    elapsed = time.monotonic() - t0
    outcome = result.step("s")
    assert outcome.status == StepStatus.FAILED and outcome.error_class == "timeout"
    assert outcome.error is not None and outcome.error.startswith("OperationTimeout")
    assert outcome.attempts == 2 and len(sleep.delays) == 1, "a timeout is transient: retried"
    assert 0.35 < elapsed < 2.0
    assert journal.runs()["r"].step_states()["s"]["error_class"] == "timeout"


# --- failure policies, approval, results between steps ---------------------------------------


async def test_on_failure_continue_runs_the_later_steps(tmp_path: Path) -> None:
    actions = Actions(repoint=raising(PermanentError("no route")))
    ex, _, _ = executor(tmp_path, actions)
    rb = book(
        {"name": "repoint", "action": "repoint", "on_failure": "continue"},
        {"name": "notify", "action": "notify", "params": {"event": "done"}},
    )
    result = await ex.run("r", rb, {})
    assert result.status == RunStatus.COMPLETED
    assert [s.status for s in result.steps] == [StepStatus.FAILED, StepStatus.OK]
    assert actions.calls[-1] == ("notify", {"event": "done"})


@pytest.mark.parametrize("compensation_works", [True, False])
async def test_on_failure_compensate_runs_the_compensation_once_then_aborts(
    tmp_path: Path, compensation_works: bool
) -> None:
    actions = Actions(
        act=raising(TransientError("flaky")),
        undo=ok if compensation_works else raising(TransientError("also flaky")),
    )
    ex, journal, _ = executor(tmp_path, actions)
    rb = book(
        {"name": "first", "action": "notify", "params": {"event": "x"}},
        {
            "name": "risky",
            "action": "act",
            "params": {"node": "{{ node }}"},
            "retry": {"attempts": 2},
            "on_failure": "compensate",
            "compensate": {
                "action": "undo",
                "params": {"node": "{{ node }}", "run": "{{ run.id }}"},
            },
        },
        {"name": "after", "action": "notify", "params": {"event": "y"}},
    )
    result = await ex.run("r", rb, {"node": "db1"})
    assert result.status == RunStatus.ABORTED
    assert actions.count("act") == 2 and actions.count("undo") == 1
    assert ("undo", {"node": "db1", "run": "r"}) in actions.calls
    expected = StepStatus.COMPENSATED if compensation_works else StepStatus.FAILED
    assert result.step("risky").status == expected
    assert result.step("risky.compensate").status == (
        StepStatus.OK if compensation_works else StepStatus.FAILED
    )
    assert result.step("after").status == StepStatus.SKIPPED
    end = "step_finished" if compensation_works else "step_failed"
    assert kinds(journal)[-4:] == [
        ("step_failed", "risky"),
        ("step_started", "risky.compensate"),
        (end, "risky.compensate"),
        ("run_aborted", "risky"),
    ]


async def test_approval_gate_stops_the_run_until_approved(tmp_path: Path) -> None:
    asked: list[tuple[str, dict[str, Any]]] = []
    answer = False

    async def approver(step: Step, params: dict[str, Any]) -> bool:
        asked.append((step.name, params))
        return answer

    actions = Actions()
    rb = book(
        {"name": "fence", "action": "fence", "params": {"node": "{{ n }}"}},
        {"name": "promote", "action": "promote", "params": {"node": "{{ n }}"}, "approval": True},
        {"name": "notify", "action": "notify", "params": {"event": "x"}},
    )
    without, journal, _ = executor(tmp_path, actions)
    result = await without.run("r", rb, {"n": "db2"})
    assert result.status == RunStatus.AWAITING_APPROVAL
    assert [s.status for s in result.steps] == [
        StepStatus.OK,
        StepStatus.SKIPPED,
        StepStatus.SKIPPED,
    ]
    assert actions.count("promote") == 0
    assert journal.runs()["r"].status == "awaiting_approval"
    assert [r.run_id for r in journal.unfinished()] == ["r"]

    denying = Executor(actions.mapping(), journal, approver=approver)
    record = journal.unfinished()[0]
    result = await denying.run("r", rb, record.context, resume_from=record)
    assert result.status == RunStatus.AWAITING_APPROVAL and asked == [("promote", {"node": "db2"})]

    answer = True
    record = journal.unfinished()[0]
    result = await denying.run("r", rb, record.context, resume_from=record)
    assert result.status == RunStatus.COMPLETED
    assert (actions.count("fence"), actions.count("promote")) == (1, 1)
    assert result.step("fence").restored
    assert journal.unfinished() == []


async def test_later_steps_see_earlier_results(tmp_path: Path) -> None:
    async def stop_writes(params: dict[str, Any], n: int) -> Mapping[str, Any]:
        return {"lsn": "0/3000060", "at": (1, 2)}

    actions = Actions(stop_writes=stop_writes)
    ex, _, _ = executor(tmp_path, actions)
    rb = book(
        {"name": "stop_writes", "action": "stop_writes", "params": {"node": "{{ old.name }}"}},
        {
            "name": "wait_replay",
            "action": "wait_replay",
            "params": {"node": "{{ new.name }}", "lsn": "{{ steps.stop_writes.lsn }}"},
        },
        {"name": "notify", "action": "act", "params": {"at": "{{ steps.stop_writes.at }}"}},
    )
    result = await ex.run("r", rb, {"old": {"name": "db1"}, "new": {"name": "db2"}})
    assert result.status == RunStatus.COMPLETED
    assert ("wait_replay", {"node": "db2", "lsn": "0/3000060"}) in actions.calls
    assert ("act", {"at": [1, 2]}) in actions.calls, "results are seen as the journal holds them"


async def test_template_error_at_render_time_fails_the_step_permanently(tmp_path: Path) -> None:
    actions = Actions(stop_writes=raising(PermanentError("read-only already?")))
    ex, journal, _ = executor(tmp_path, actions)
    rb = book(
        {"name": "stop_writes", "action": "stop_writes", "on_failure": "continue"},
        {
            "name": "wait_replay",
            "action": "wait_replay",
            "params": {"lsn": "{{ steps.stop_writes.lsn }}"},
            "retry": {"attempts": 3},
        },
    )
    result = await ex.run("r", rb, {})
    outcome = result.step("wait_replay")
    assert (outcome.status, outcome.attempts, outcome.error_class) == (
        StepStatus.FAILED,
        0,
        "template",
    )
    assert "wait_replay.params.lsn: 'dict object' has no attribute 'stop_writes'" in (
        outcome.error or ""
    )
    assert actions.count("wait_replay") == 0
    assert result.status == RunStatus.ABORTED
    assert ("step_started", "wait_replay") not in kinds(journal)


async def test_missing_implementations_and_reserved_names_are_refused_up_front(
    tmp_path: Path,
) -> None:
    journal = Journal.in_state_dir(tmp_path)
    ex = Executor(Actions().mapping(["fence"]), journal)
    with pytest.raises(RunbookError, match=r"steps\[1\] \(p\)\.action: no implementation"):
        await ex.run(
            "r", book({"name": "f", "action": "fence"}, {"name": "p", "action": "promote"}), {}
        )
    with pytest.raises(ValueError, match="reserved"):
        await ex.run("r", book({"name": "f", "action": "fence"}), {"steps": {}})
    assert journal.records() == [], "nothing is journaled for a run that cannot start"


@pytest.fixture
def all_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Other tests configure structlog globally (level filter, caching): pin our own."""
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    monkeypatch.setattr(executor_module, "log", structlog.get_logger("helios.executor"))
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("all_logs")
async def test_logs_carry_reason_codes_and_the_run_and_step(tmp_path: Path) -> None:
    actions = Actions(act=fail_first(1, TransientError("503")))
    ex, _, _ = executor(tmp_path, actions)
    rb = book({"name": "s", "action": "act", "retry": {"attempts": 2}})
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await ex.run("r", rb, {})
    reasons = [(e["reason"], e.get("step")) for e in logs]
    assert reasons == [
        ("RUN_STARTED", None),
        ("STEP_STARTED", "s"),
        ("STEP_RETRY", "s"),
        ("STEP_OK", "s"),
        ("RUN_COMPLETED", None),
    ]
    assert all(e["run"] == "r" for e in logs)


# --- the journal, crash and resume -----------------------------------------------------------


async def test_step_started_is_on_disk_before_the_action_runs(tmp_path: Path) -> None:
    seen: list[str] = []

    async def check(params: dict[str, Any], n: int) -> Mapping[str, Any] | None:
        last = Journal(tmp_path / "journal.jsonl").records()[-1]  # a fresh reader: the disk
        assert (last["kind"], last["step"], last["params"]) == (
            "step_started",
            params["me"],
            params,
        )
        seen.append(params["me"])
        return None

    actions = Actions(act=check)
    ex, _, _ = executor(tmp_path, actions)
    rb = book(*({"name": n, "action": "act", "params": {"me": n}} for n in ("one", "two", "three")))
    result = await ex.run("r", rb, {})
    assert result.status == RunStatus.COMPLETED and seen == ["one", "two", "three"]


async def test_every_record_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    count = 0
    real = os.fsync

    def counting(fd: int) -> None:
        nonlocal count
        count += 1
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    ex, journal, _ = executor(tmp_path, Actions())
    await ex.run("r", book({"name": "a", "action": "act"}, {"name": "b", "action": "act"}), {})
    records = journal.records()
    assert len(records) == 6
    assert count == len(records) + 1, "every record, plus the directory when the file was made"


async def test_a_run_that_died_mid_step_is_resumed_by_a_new_executor(tmp_path: Path) -> None:
    entered = asyncio.Event()

    async def stuck(params: dict[str, Any], n: int) -> Mapping[str, Any] | None:
        entered.set()
        await asyncio.sleep(30)
        return None

    async def stop_writes(params: dict[str, Any], n: int) -> Mapping[str, Any]:
        return {"lsn": "0/AB"}

    rb = book(
        {"name": "stop_writes", "action": "stop_writes"},
        {
            "name": "wait_replay",
            "action": "wait_replay",
            "params": {"lsn": "{{ steps.stop_writes.lsn }}"},
        },
        {"name": "promote", "action": "promote", "params": {"node": "{{ node }}"}},
    )
    first = Actions(stop_writes=stop_writes, wait_replay=stuck)
    ex, journal, _ = executor(tmp_path, first)
    task = asyncio.create_task(ex.run("r", rb, {"node": "db2"}))
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()  # the process "dies" in the middle of wait_replay
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kinds(journal)[-1] == ("step_started", "wait_replay"), "nothing journaled after"

    restarted = Journal(journal.path)
    [record] = restarted.unfinished()
    assert record.run_id == "r" and record.context == {"node": "db2"}
    second = Actions()
    resumed = Executor(second.mapping(), restarted, sleep=FakeSleep())
    result = await resumed.run(record.run_id, rb, record.context, resume_from=record)

    assert result.status == RunStatus.COMPLETED
    assert second.count("stop_writes") == 0, "a finished step is not run again"
    assert ("wait_replay", {"lsn": "0/AB"}) in second.calls, "its result was restored"
    assert second.count("promote") == 1
    assert result.step("stop_writes").restored and not result.step("wait_replay").restored
    assert kinds(restarted)[-6:] == [
        ("note", None),
        ("step_started", "wait_replay"),
        ("step_finished", "wait_replay"),
        ("step_started", "promote"),
        ("step_finished", "promote"),
        ("run_finished", None),
    ]
    assert restarted.unfinished() == []
    with pytest.raises(ValueError, match="already ended"):
        await resumed.run("r", rb, record.context, resume_from=restarted.runs()["r"])


async def test_resume_refuses_a_changed_plan_and_aborts(tmp_path: Path) -> None:
    rb = book({"name": "a", "action": "act"}, {"name": "b", "action": "act"})
    ex, journal, _ = executor(tmp_path, Actions())
    journal.append(
        {
            "run": "r",
            "kind": "run_started",
            "runbook": "test",
            "context": {"n": 1},
            "fingerprint": plan_fingerprint(rb, {"n": 1}),
        }
    )
    journal.append({"run": "r", "kind": "step_started", "step": "a"})
    record = journal.unfinished()[0]
    actions = Actions()
    ex = Executor(actions.mapping(), journal)
    result = await ex.run("r", rb, {"n": 2}, resume_from=record)
    assert result.status == RunStatus.ABORTED and actions.calls == []
    assert "changed since the run started" in (result.reason or "")
    assert journal.runs()["r"].status == "aborted"


# --- property: the journal is well-formed whatever the steps do ------------------------------

OUTCOMES = st.sampled_from(["ok", "transient_then_ok", "permanent"])
POLICIES = st.sampled_from(["abort", "continue", "compensate"])
PLANS = st.lists(st.tuples(OUTCOMES, POLICIES, st.booleans()), min_size=1, max_size=6)


def _run_plan(plan: list[tuple[str, str, bool]]) -> tuple[list[dict[str, Any]], list[str]]:
    calls: list[str] = []

    async def act(params: dict[str, Any]) -> Mapping[str, Any] | None:
        i, kind = params["i"], plan[params["i"]][0]
        calls.append(f"s{i}")
        if kind == "permanent":
            raise PermanentError("no")
        if kind == "transient_then_ok" and calls.count(f"s{i}") == 1:
            raise TransientError("later", retry_after=0.1)
        return {"i": i}

    async def undo(params: dict[str, Any]) -> Mapping[str, Any] | None:
        calls.append(f"s{params['i']}.compensate")
        if not plan[params["i"]][2]:
            raise PermanentError("cannot undo")
        return None

    steps = []
    for i, (_, policy, _) in enumerate(plan):
        s: dict[str, Any] = {
            "name": f"s{i}",
            "action": "act",
            "params": {"i": i},
            "retry": {"attempts": 2},
            "on_failure": policy,
        }
        if policy == "compensate":
            s["compensate"] = {"action": "undo", "params": {"i": i}}
        steps.append(s)
    rb = book(*steps)

    async def main(directory: str) -> list[dict[str, Any]]:
        journal = Journal.in_state_dir(directory)
        ex = Executor({"act": act, "undo": undo}, journal, sleep=FakeSleep())
        await ex.run("r", rb, {})
        return journal.records()

    with tempfile.TemporaryDirectory() as d:
        return asyncio.run(main(d)), calls


@settings(max_examples=60, deadline=None)
@given(PLANS)
def test_journal_is_well_formed_for_any_sequence_of_outcomes(
    plan: list[tuple[str, str, bool]],
) -> None:
    records, calls = _run_plan(plan)
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(set(seqs)), "seq strictly increasing"
    assert records[0]["kind"] == "run_started"
    ends = [r for r in records if r["kind"] in ("run_finished", "run_aborted")]
    assert len(ends) == 1 and records[-1] is ends[0]

    open_step: str | None = None
    for r in records[1:-1]:
        if r["kind"] == "step_started":
            assert open_step is None, "a step starts only after the previous one ended"
            open_step = r["step"]
        elif r["kind"] in ("step_finished", "step_failed"):
            assert r["step"] == open_step, "exactly one end per started step"
            open_step = None
    assert open_step is None

    aborting = [
        i
        for i, (kind, policy, _) in enumerate(plan)
        if kind == "permanent" and policy != "continue"
    ]
    started = [r["step"] for r in records if r["kind"] == "step_started"]
    if aborting:
        stop = aborting[0]
        assert ends[0]["kind"] == "run_aborted" and ends[0]["step"] == f"s{stop}"
        allowed = {f"s{i}" for i in range(stop + 1)} | {f"s{stop}.compensate"}
        assert set(started) <= allowed and set(calls) <= allowed, "nothing runs after an abort"
        assert (f"s{stop}.compensate" in started) == (plan[stop][1] == "compensate")
    else:
        assert ends[0]["kind"] == "run_finished"
        assert started == [f"s{i}" for i in range(len(plan))]
    last = aborting[0] if aborting else len(plan) - 1
    for i in range(last + 1):
        expected = 2 if plan[i][0] == "transient_then_ok" else 1
        assert calls.count(f"s{i}") == expected


# --- leadership: the fencing epoch before every step --------------------------------------------


class Lease:
    """A fence as the leader's would be: the epoch while held, LostLeadership once deposed."""

    def __init__(self, epoch: int, allowed_checks: int) -> None:
        self.epoch = epoch
        self.allowed = allowed_checks
        self.checks = 0

    async def __call__(self) -> int:
        from orchestrator.coord import LostLeadership

        self.checks += 1
        if self.checks > self.allowed:
            raise LostLeadership("svc/leader", self.epoch, "another instance holds the lease")
        return self.epoch


async def test_a_deposed_leader_stops_before_its_next_step_and_the_new_one_finishes(
    tmp_path: Path,
) -> None:
    rb = book(
        {"name": "fence", "action": "act"},
        {"name": "promote", "action": "act"},
        {"name": "switch", "action": "act"},
    )
    old = Actions()
    # start + "fence" pass; the check before "promote" finds the lease gone.
    ex, journal, _ = executor(tmp_path, old, fence=Lease(7, allowed_checks=2))
    result = await ex.run("r", rb, {"node": "db2"})
    assert result.status == RunStatus.DEPOSED
    assert old.count("act") == 1, "nothing ran after the leadership was lost"
    assert [o.status for o in result.steps] == [
        StepStatus.OK,
        StepStatus.SKIPPED,
        StepStatus.SKIPPED,
    ]
    records = journal.runs()["r"].records
    assert {r.get("epoch") for r in records if r["kind"] != "note"} == {7}
    assert records[-1]["kind"] == "note" and records[-1]["event"] == "deposed"
    [unfinished] = journal.unfinished()  # left for the new leader

    new = Actions()
    ex2 = Executor(new.mapping(), Journal(journal.path), sleep=FakeSleep(), fence=Lease(9, 99))
    done = await ex2.run("r", rb, unfinished.context, resume_from=unfinished)
    assert done.status == RunStatus.COMPLETED
    assert new.count("act") == 2, "each remaining step exactly once; fence not run again"
    after = [r for r in Journal(journal.path).runs()["r"].records if r["kind"] == "step_started"]
    assert [(r["step"], r["epoch"]) for r in after] == [("fence", 7), ("promote", 9), ("switch", 9)]


async def test_a_leader_that_cannot_confirm_its_epoch_never_starts(tmp_path: Path) -> None:
    rb = book({"name": "a", "action": "act"})
    acts = Actions()
    ex, journal, _ = executor(tmp_path, acts, fence=Lease(3, allowed_checks=0))
    result = await ex.run("r", rb, {})
    assert result.status == RunStatus.DEPOSED
    assert acts.calls == [] and journal.runs() == {}
