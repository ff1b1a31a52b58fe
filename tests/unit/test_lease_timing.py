"""The pure parts of leader election: lease timing, the coordination settings' checks, etcd key
arithmetic. The behaviour against etcd is in tests/integration/test_coord_etcd.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.config_coord import CoordinationSettings
from orchestrator.coord.base import Leadership
from orchestrator.coord.etcd import lease_seconds, prefix_range_end
from orchestrator.lease import LeaseTiming


def test_deadline_is_ttl_minus_margin_after_the_renewal_was_sent() -> None:
    t = LeaseTiming(ttl=10.0, margin=2.0)
    assert t.deadline(100.0) == 108.0
    assert t.renew_interval == pytest.approx(10 / 3)
    assert t.retry_interval == 1.0
    held = Leadership("orch", "a", 7, 1, 10.0, 100.0)
    assert held.expires_at() == 110.0
    assert held.expires_at(2.0) == t.deadline(held.valid_from)


def test_next_renewal_a_third_of_the_ttl_later_or_a_retry_after_a_failure() -> None:
    t = LeaseTiming(ttl=9.0, margin=1.5)
    assert t.next_renewal(100.0) == 103.0
    assert t.next_renewal(100.0, failed_at=103.2) == 104.2
    # Retries never go past the deadline (107.5): the elector steps down there.
    assert t.next_renewal(100.0, failed_at=107.0) == 107.5


def test_a_won_leadership_is_usable_only_before_its_first_renewal_is_due() -> None:
    t = LeaseTiming(ttl=3.0, margin=0.6)
    assert t.usable(50.0, 50.5)
    assert not t.usable(50.0, 51.0)


@pytest.mark.parametrize("margin", [0.0, -1.0, 6.7, 10.0])
def test_margin_must_leave_room_for_a_renewal(margin: float) -> None:
    with pytest.raises(ValueError, match="margin"):
        LeaseTiming(ttl=10.0, margin=margin)


@given(
    ttl=st.floats(min_value=2, max_value=600),
    frac=st.floats(min_value=0.01, max_value=0.66),
    sent=st.floats(min_value=0, max_value=1e6),
    failures=st.lists(st.floats(min_value=0, max_value=100), max_size=5),
)
def test_the_leader_always_gives_up_before_the_lease_can_expire(
    ttl: float, frac: float, sent: float, failures: list[float]
) -> None:
    """Whatever the failures, every renewal attempt is due before the deadline or at it, and
    the deadline is ``margin`` before the earliest moment etcd could expire the lease."""
    t = LeaseTiming(ttl=ttl, margin=ttl * frac)
    assert t.deadline(sent) < sent + ttl
    assert t.deadline(sent) > t.next_renewal(sent)
    for f in failures:
        assert t.next_renewal(sent, failed_at=sent + f) <= t.deadline(sent)


def test_settings_defaults_and_timing() -> None:
    s = CoordinationSettings.model_validate({"endpoints": ["http://127.0.0.1:2379"]})
    assert (s.backend, s.ttl, s.margin, s.timeout, s.prefix) == ("etcd", 10.0, 2.0, 2.0, "/helios/")
    assert s.renew_interval == pytest.approx(10 / 3)
    s = CoordinationSettings.model_validate(
        {"endpoints": ["https://e1:2379"], "ttl": "15s", "step_down_margin": "3s", "timeout": "1s"}
    )
    assert (s.ttl, s.margin, s.timeout) == (15.0, 3.0, 1.0)
    assert CoordinationSettings(backend="kubernetes").endpoints == []


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({}, "at least one endpoint"),
        ({"endpoints": ["127.0.0.1:2379"]}, "http"),
        ({"endpoints": ["http://e:2379"], "ttl": "1s"}, "greater than or equal to 2"),
        ({"endpoints": ["http://e:2379"], "step_down_margin": "7s"}, "two thirds"),
        ({"endpoints": ["http://e:2379"], "timeout": "4s"}, "renew interval"),
        ({"endpoints": ["http://e:2379"], "prefix": "helios"}, "starts and ends with '/'"),
        ({"endpoints": ["http://e:2379"], "username": "root"}, "both or neither"),
        ({"endpoints": ["http://e:2379"], "password": "hunter2"}, "by reference"),
        ({"endpoints": ["http://e:2379"], "ttl": 10, "extra": 1}, "Extra inputs"),
    ],
)
def test_settings_problems(data: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        CoordinationSettings.model_validate(data)


def test_credentials_by_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOS_TEST_ETCD_PASSWORD", "s3cret")
    s = CoordinationSettings.model_validate(
        {
            "endpoints": ["http://e:2379"],
            "username": "helios",
            "password": "env:HELIOS_TEST_ETCD_PASSWORD",
        }
    )
    assert s.password is not None and s.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


def test_prefix_range_end() -> None:
    assert prefix_range_end(b"/helios/data/") == b"/helios/data0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"


def test_lease_seconds_round_up() -> None:
    assert [lease_seconds(x) for x in (0.2, 1.0, 2.5, 10.0)] == [1, 1, 3, 10]


class HangingRenewals:
    """A coordinator (our own protocol, not etcd) that grants leadership once and then never
    answers a renewal: what a leader sees when its etcd member hangs."""

    def __init__(self) -> None:
        self.resigned: list[int] = []
        self.renewals = 0

    async def campaign(self, name: str, candidate_id: str, ttl: float) -> Leadership | None:
        import time

        if self.resigned:  # once only
            return None
        return Leadership(name, candidate_id, 42, 1, ttl, time.monotonic())

    async def renew(self, leadership: Leadership) -> Leadership:
        import asyncio

        self.renewals += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def resign(self, leadership: Leadership) -> None:
        self.resigned.append(leadership.epoch)


async def test_a_hung_renewal_ends_the_leadership_at_the_deadline_and_stop_resigns() -> None:
    import asyncio
    import time

    from prometheus_client import CollectorRegistry

    from orchestrator.lease import LeaderElector

    coord = HangingRenewals()
    registry = CollectorRegistry()
    elector = LeaderElector(coord, name="orch", candidate_id="a", ttl=2.0, registry=registry)  # type: ignore[arg-type]
    elector.start()
    try:
        status = await asyncio.wait_for(elector.wait_for(lambda s: s.is_leader), 2)
        assert status.epoch == 42 and elector.epoch == 42
        assert status.deadline is not None
        assert registry.get_sample_value("helios_leader") == 1.0
        down = await asyncio.wait_for(elector.wait_for(lambda s: not s.is_leader), 3)
        await asyncio.sleep(0.05)
        assert down.reason == "renewal overdue"
        assert time.monotonic() >= status.deadline
        assert time.monotonic() - status.deadline < 0.3
        assert coord.renewals >= 1
        assert registry.get_sample_value("helios_leader") == 0.0
        assert registry.get_sample_value("helios_leader_epoch") == 42.0
        # Stepped down, it resigned that lease; the next campaign (after the resignation) lost.
        assert coord.resigned == [42]
        assert not elector.is_leader
    finally:
        started = time.monotonic()
        await asyncio.wait_for(elector.stop(), 3)
        assert time.monotonic() - started < 0.5


async def test_stop_during_a_hung_renewal_steps_down_at_once_and_resigns() -> None:
    import asyncio
    import time

    from orchestrator.lease import LeaderElector, LeaderStatus

    coord = HangingRenewals()
    seen: list[LeaderStatus] = []
    elector = LeaderElector(coord, name="orch", candidate_id="a", ttl=3.0, on_change=seen.append)  # type: ignore[arg-type]
    elector.start()
    try:
        await asyncio.wait_for(elector.wait_for(lambda s: s.is_leader), 2)
        while coord.renewals == 0:  # the first renewal is due after 1 s, and hangs
            await asyncio.sleep(0.05)
    finally:
        started = time.monotonic()
        await asyncio.wait_for(elector.stop(), 3)
        took = time.monotonic() - started
    assert took < 0.5
    assert not elector.is_leader
    assert [(s.is_leader, s.reason) for s in seen] == [(True, "campaign won"), (False, "stopping")]
    assert coord.resigned == [42]
