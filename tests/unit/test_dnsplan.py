"""DNS switch planning: diffs, safety rails, outcome policy, backoff."""

from __future__ import annotations

import pytest
from tenacity import RetryCallState

from orchestrator.config import RetryPolicy
from orchestrator.dnsplan import (
    OwnedRecordSpec,
    ProviderRead,
    SwitchOutcome,
    outcome,
    plan_switch,
    raise_if_unsafe,
    select_records,
)
from orchestrator.dnsswitch import backoff
from orchestrator.errors import TransientError, UnsafePlan
from orchestrator.providers.dns import ChangeKind, RecordChange, RecordSet

OWNED = [OwnedRecordSpec("db.helios.test", "A", 60)]
KEY = ("db.helios.test.", "A")
EAST = RecordSet.make("db.helios.test", "A", 60, ["127.0.0.1"])
WEST = RecordSet.make("db.helios.test.", "A", 60, ["127.0.0.2"])


def reads(**current: RecordSet | None) -> list[ProviderRead]:
    return [ProviderRead(p, {KEY: rs}) for p, rs in current.items()]


def test_recordset_normal_form() -> None:
    a = RecordSet.make("DB.Helios.Test", "a", 60, ["127.0.0.2", "127.0.0.1", "127.0.0.1"])
    assert a == RecordSet("db.helios.test.", "A", 60, ("127.0.0.1", "127.0.0.2"))
    c = RecordSet.make("db.helios.test", "CNAME", 30, ["west.helios.test"])
    assert c.values == ("west.helios.test.",)


def test_plan_diffs_each_provider() -> None:
    plan = plan_switch(
        "us-west", "127.0.0.2", OWNED, reads(route53=EAST, cloudflare=WEST, gcloud=None)
    )
    kinds = {c.provider: c.kind for c in plan.changes}
    assert kinds == {
        "route53": ChangeKind.UPDATE,
        "cloudflare": ChangeKind.NOOP,
        "gcloud": ChangeKind.CREATE,
    }
    assert all(c.after == WEST for c in plan.changes)
    assert plan.records_changed() == {KEY}
    assert "route53: db.helios.test. A 127.0.0.1 ttl=60 -> db.helios.test. A 127.0.0.2 ttl=60" in [
        c.describe() for c in plan.changes
    ]


def test_unreadable_provider_is_planned_blind() -> None:
    r = [ProviderRead("route53", error="route53: no answer"), *reads(cloudflare=EAST)]
    plan = plan_switch("us-west", "127.0.0.2", OWNED, r)
    assert plan.unreadable == {"route53": "route53: no answer"}
    assert plan.for_provider("route53")[0].kind is ChangeKind.CREATE


def test_checksum_changes_with_the_world() -> None:
    a = plan_switch("us-west", "127.0.0.2", OWNED, reads(route53=EAST))
    b = plan_switch("us-west", "127.0.0.2", OWNED, reads(route53=EAST))
    c = plan_switch("us-west", "127.0.0.2", OWNED, reads(route53=None))
    assert a.checksum() == b.checksum()
    assert a.checksum() != c.checksum()


def test_empty_target_refused() -> None:
    with pytest.raises(UnsafePlan, match=r"no answer|empty"):
        plan_switch("us-west", " ", OWNED, reads(route53=EAST))


def test_not_owned_record_refused() -> None:
    foreign = RecordSet.make("www.helios.test", "A", 60, ["127.0.0.9"])
    plan = plan_switch("us-west", "127.0.0.2", OWNED, reads(route53=EAST))
    bad = type(plan)(
        plan.region, plan.target, plan.desired, (RecordChange("route53", None, foreign),)
    )
    with pytest.raises(UnsafePlan, match="not a record this orchestrator owns"):
        raise_if_unsafe(bad, OWNED, max_changes=5)
    with pytest.raises(UnsafePlan, match="not a record this orchestrator owns"):
        select_records(OWNED, ["www.helios.test"])
    assert select_records(OWNED, ["DB.helios.test."]) == OWNED


def test_empty_answer_refused_even_with_force() -> None:
    empty = RecordSet("db.helios.test.", "A", 60, ())
    plan = plan_switch("us-west", "127.0.0.2", OWNED, reads(route53=EAST))
    bad = type(plan)(
        plan.region, plan.target, plan.desired, (RecordChange("route53", EAST, empty),)
    )
    with pytest.raises(UnsafePlan, match="no answer"):
        raise_if_unsafe(bad, OWNED, max_changes=5, force=True)


def test_max_changes_needs_force() -> None:
    owned = [*OWNED, OwnedRecordSpec("ro.helios.test", "A", 60)]
    plan = plan_switch("us-west", "127.0.0.2", owned, [ProviderRead("route53", {})])
    with pytest.raises(UnsafePlan, match=r"more than dns\.max_changes=1"):
        raise_if_unsafe(plan, owned, max_changes=1)
    raise_if_unsafe(plan, owned, max_changes=1, force=True)
    raise_if_unsafe(plan, owned, max_changes=2)


@pytest.mark.parametrize(
    ("policy", "results", "expected"),
    [
        ("all", {"a": True, "b": True}, SwitchOutcome.SUCCESS),
        ("all", {"a": True, "b": False}, SwitchOutcome.FAILED),
        ("any", {"a": True, "b": False}, SwitchOutcome.PARTIAL),
        ("any", {"a": False, "b": False}, SwitchOutcome.FAILED),
        ("primary", {"a": True, "b": False}, SwitchOutcome.PARTIAL),
        ("primary", {"a": False, "b": True}, SwitchOutcome.FAILED),
        ("any", {}, SwitchOutcome.FAILED),
    ],
)
def test_outcome_policy(policy: str, results: dict[str, bool], expected: SwitchOutcome) -> None:
    assert outcome(policy, results, primary_provider="a") is expected


def _state(attempt: int, exc: BaseException) -> RetryCallState:
    st = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    st.attempt_number = attempt
    st.set_exception((type(exc), exc, None))
    return st


def test_backoff_is_exponential_capped_and_honours_retry_after() -> None:
    wait = backoff(RetryPolicy(attempts=5, initial_delay=0.5, max_delay=3))
    assert [wait(_state(n, TransientError("x"))) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert wait(_state(1, TransientError("slow down", retry_after=2.5))) == 2.5
    assert wait(_state(4, TransientError("slow down", retry_after=1))) == 3.0
