"""Contract tests for the Google Cloud DNS adapter against the local Cloud DNS stand-in."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from orchestrator.config import GcloudProvider
from orchestrator.errors import OperationTimeout, PermanentError, TransientError
from orchestrator.providers.dns import ChangeHandle, DnsProvider, RecordSet, diff
from orchestrator.providers.dns_gcloud import GcloudDns
from orchestrator.sandbox.standins.gcloud import GoogleDnsStandIn

PROJECT = "helios-test"
ZONE = "helios"
NAME = "db.helios.test."


@pytest.fixture(autouse=True)
def _no_metadata_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """google-auth must never probe a GCE metadata server from here."""
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:1")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:1")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)


@pytest.fixture
def standin() -> Iterator[GoogleDnsStandIn]:
    s = GoogleDnsStandIn(PROJECT)
    s.start()
    s.add_zone(ZONE, "helios.test.")
    try:
        yield s
    finally:
        s.stop()


def make_cfg(endpoint: str, **extra: Any) -> GcloudProvider:
    return GcloudProvider.model_validate(
        {
            "name": "gdns",
            "kind": "gcloud",
            "project": PROJECT,
            "managed_zone": ZONE,
            "api_endpoint": endpoint,
            "anonymous": True,
            "timeout": 1,
            "poll_interval": 0.05,
            **extra,
        }
    )


@pytest.fixture
async def gdns(standin: GoogleDnsStandIn) -> AsyncIterator[GcloudDns]:
    adapter = GcloudDns(make_cfg(standin.api_endpoint))
    try:
        yield adapter
    finally:
        await adapter.aclose()


def rs(values: list[str], ttl: int = 60, name: str = NAME, rtype: str = "A") -> RecordSet:
    return RecordSet.make(name, rtype, ttl, values)


def writes(standin: GoogleDnsStandIn) -> list[str]:
    return [r.method for r in standin.faults.requests if r.method != "GET"]


# --- records -----------------------------------------------------------------------------------


async def test_is_a_dns_provider(gdns: GcloudDns) -> None:
    assert isinstance(gdns, DnsProvider)
    assert (gdns.name, gdns.kind) == ("gdns", "gcloud")


async def test_read_absent_is_none(gdns: GcloudDns, standin: GoogleDnsStandIn) -> None:
    assert await gdns.read(NAME, "A") is None
    # The read asks for exactly this name and type.
    [req] = standin.faults.requests
    assert "name=db.helios.test." in req.path and "type=A" in req.path


async def test_create_then_read_back(gdns: GcloudDns, standin: GoogleDnsStandIn) -> None:
    desired = rs(["10.0.0.2", "10.0.0.1"])
    handle = await gdns.apply(diff("gdns", None, desired))
    assert handle.provider == "gdns" and handle.change_id == "1"
    assert await gdns.read("DB.helios.test", "a") == desired
    assert writes(standin) == ["POST"]


async def test_update_value_and_ttl_atomically(gdns: GcloudDns, standin: GoogleDnsStandIn) -> None:
    first = rs(["10.0.0.1"], ttl=60)
    await gdns.apply(diff("gdns", None, first))
    second = rs(["10.0.1.1", "10.0.1.2"], ttl=30)
    handle = await gdns.apply(diff("gdns", first, second))
    assert handle.change_id == "2"
    assert await gdns.read(NAME, "A") == second
    assert writes(standin) == ["POST", "POST"]  # one change per apply: delete + add together
    ours = [r for r in standin.rrsets(ZONE) if r["name"] == NAME]
    assert [(r["type"], r["ttl"], sorted(r["rrdatas"])) for r in ours] == [
        ("A", 30, ["10.0.1.1", "10.0.1.2"])
    ]


async def test_apply_same_again_is_noop(gdns: GcloudDns, standin: GoogleDnsStandIn) -> None:
    desired = rs(["10.0.0.1"])
    await gdns.apply(diff("gdns", None, desired))
    standin.faults.reset_log()
    handle = await gdns.apply(diff("gdns", None, desired))  # stale "before": still a no-op
    assert handle == ChangeHandle(provider="gdns", change_id=None, status="noop")
    assert await gdns.wait_live(handle, 1) == 0.0
    assert writes(standin) == []


async def test_cname(gdns: GcloudDns) -> None:
    first = rs(["db-eu.helios.test"], rtype="CNAME")
    await gdns.apply(diff("gdns", None, first))
    second = rs(["db-us.helios.test."], rtype="CNAME", ttl=300)
    await gdns.apply(diff("gdns", first, second))
    assert await gdns.read(NAME, "CNAME") == second


async def test_empty_values_refused(gdns: GcloudDns, standin: GoogleDnsStandIn) -> None:
    with pytest.raises(PermanentError, match="no values"):
        await gdns.apply(diff("gdns", None, rs([])))
    with pytest.raises(PermanentError, match="exactly one"):
        await gdns.apply(diff("gdns", None, rs(["a.example.", "b.example."], rtype="CNAME")))
    assert standin.faults.requests == []


async def test_exact_scope(gdns: GcloudDns, standin: GoogleDnsStandIn) -> None:
    helper = GcloudDns(make_cfg(standin.api_endpoint))
    try:
        for name, rtype, value in (
            ("other.helios.test.", "A", "192.0.2.9"),
            (NAME, "AAAA", "2001:db8::1"),
            ("x.db.helios.test.", "A", "192.0.2.10"),
        ):
            await helper.apply(diff("gdns", None, rs([value], 300, name, rtype)))
    finally:
        await helper.aclose()
    before = standin.rrsets(ZONE)
    assert await gdns.read(NAME, "A") is None
    await gdns.apply(diff("gdns", None, rs(["10.0.0.1"])))
    await gdns.apply(diff("gdns", None, rs(["10.0.0.3"], ttl=10)))
    after = standin.rrsets(ZONE)
    [mine] = [r for r in after if (r["name"], r["type"]) == (NAME, "A")]
    assert (mine["ttl"], mine["rrdatas"]) == (10, ["10.0.0.3"])
    assert [r for r in after if r is not mine and r != mine] == before


async def test_concurrent_change_is_transient_and_replans(
    gdns: GcloudDns, standin: GoogleDnsStandIn
) -> None:
    await gdns.apply(diff("gdns", None, rs(["10.0.0.1"])))
    other = GcloudDns(make_cfg(standin.api_endpoint))
    try:
        standin.faults.inject(delay=0.4, methods={"POST"})  # hold our change back...
        task = asyncio.create_task(gdns.apply(diff("gdns", None, rs(["10.0.0.2"]))))
        await asyncio.sleep(0.1)
        await other.apply(diff("gdns", None, rs(["10.0.0.9"])))  # ...while someone changes it
        with pytest.raises(TransientError, match="changed concurrently; re-read"):
            await task
    finally:
        await other.aclose()
    await gdns.apply(diff("gdns", None, rs(["10.0.0.2"])))  # the retry re-reads and wins
    assert await gdns.read(NAME, "A") == rs(["10.0.0.2"])


# --- wait_live ---------------------------------------------------------------------------------


async def test_wait_live_polls_until_done(standin: GoogleDnsStandIn) -> None:
    standin.polls_until_done = 2
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    adapter = GcloudDns(make_cfg(standin.api_endpoint, poll_interval=3), sleep=fake_sleep)
    try:
        handle = await adapter.apply(diff("gdns", None, rs(["10.0.0.1"])))
        assert handle.status == "pending"
        waited = await adapter.wait_live(handle, 30)
    finally:
        await adapter.aclose()
    assert sleeps == [3, 3]
    assert 0 <= waited < 1  # fake sleeps take no time
    polls = [r for r in standin.faults.requests if "/changes/1" in r.path]
    assert len(polls) == 3


async def test_wait_live_times_out(standin: GoogleDnsStandIn, gdns: GcloudDns) -> None:
    standin.polls_until_done = 10**6
    handle = await gdns.apply(diff("gdns", None, rs(["10.0.0.1"])))
    t0 = time.monotonic()
    with pytest.raises(OperationTimeout, match=r"change 1 not done within 0\.3s"):
        await gdns.wait_live(handle, 0.3)
    assert time.monotonic() - t0 < 0.8


# --- errors ------------------------------------------------------------------------------------


async def test_zone_not_found(standin: GoogleDnsStandIn) -> None:
    adapter = GcloudDns(make_cfg(standin.api_endpoint, managed_zone="nope-zone"))
    try:
        with pytest.raises(PermanentError, match=r"managed zone nope-zone .* not found") as info:
            await adapter.apply(diff("gdns", None, rs(["10.0.0.1"])))
    finally:
        await adapter.aclose()
    assert "http://" not in str(info.value)


@pytest.mark.parametrize("status", [401, 403])
async def test_authentication(gdns: GcloudDns, standin: GoogleDnsStandIn, status: int) -> None:
    standin.faults.inject(status=status)
    with pytest.raises(PermanentError, match="authentication"):
        await gdns.read(NAME, "A")
    assert len(standin.faults.requests) == 1  # no refresh-and-resend


async def test_bad_service_account_key_is_permanent_without_echo(
    standin: GoogleDnsStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELIOS_T_GCP_KEY", json.dumps({"type": "service_account", "pk": "s3cr3t"}))
    cfg = make_cfg(standin.api_endpoint, anonymous=False, credentials="env:HELIOS_T_GCP_KEY")
    with pytest.raises(PermanentError, match="not a valid service-account JSON key") as info:
        GcloudDns(cfg)
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_transient_and_not_retried(
    gdns: GcloudDns, standin: GoogleDnsStandIn, status: int
) -> None:
    standin.faults.inject(status=status, methods={"POST"})
    with pytest.raises(TransientError, match=f"HTTP {status}") as info:
        await gdns.apply(diff("gdns", None, rs(["10.0.0.1"])))
    assert not isinstance(info.value, OperationTimeout)
    assert writes(standin) == ["POST"]
    assert await gdns.read(NAME, "A") is None


async def test_rate_limit_carries_retry_after(gdns: GcloudDns, standin: GoogleDnsStandIn) -> None:
    standin.faults.inject(status=429, retry_after=2)
    with pytest.raises(TransientError, match="rate limited") as info:
        await gdns.read(NAME, "A")
    assert info.value.retry_after == 2


async def test_bad_request_is_permanent(gdns: GcloudDns, standin: GoogleDnsStandIn) -> None:
    standin.faults.inject(status=400, methods={"POST"})
    with pytest.raises(PermanentError, match="rejected"):
        await gdns.apply(diff("gdns", None, rs(["10.0.0.1"])))


async def test_hanging_answer_times_out(gdns: GcloudDns, standin: GoogleDnsStandIn) -> None:
    standin.faults.inject(hang=True)
    t0 = time.monotonic()
    with pytest.raises(OperationTimeout):
        await gdns.read(NAME, "A")
    assert time.monotonic() - t0 < 1.5


async def test_slow_apply_is_bounded_as_a_whole(gdns: GcloudDns, standin: GoogleDnsStandIn) -> None:
    standin.faults.inject(delay=0.6, count=2)  # the read and the write each take 0.6 s
    t0 = time.monotonic()
    with pytest.raises(OperationTimeout):
        await gdns.apply(diff("gdns", None, rs(["10.0.0.1"])))
    assert time.monotonic() - t0 < 1.5


async def test_malformed_answer_is_transient(gdns: GcloudDns, standin: GoogleDnsStandIn) -> None:
    standin.faults.inject(malformed=True)
    with pytest.raises(TransientError, match="malformed answer"):
        await gdns.read(NAME, "A")


async def test_connection_refused_is_transient(unused_tcp_port: int) -> None:
    adapter = GcloudDns(make_cfg(f"http://127.0.0.1:{unused_tcp_port}"))
    try:
        with pytest.raises(TransientError, match="cannot reach"):
            await adapter.read(NAME, "A")
    finally:
        await adapter.aclose()


async def test_aclose_is_idempotent_and_final(gdns: GcloudDns) -> None:
    await gdns.aclose()
    await gdns.aclose()
    with pytest.raises(PermanentError, match="closed"):
        await gdns.read(NAME, "A")


async def test_factory_builds_gcloud(standin: GoogleDnsStandIn) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator.providers.dns_factory import build_dns_provider

    with ThreadPoolExecutor(max_workers=2) as pool:
        adapter = build_dns_provider(make_cfg(standin.api_endpoint), pool)
        try:
            assert isinstance(adapter, GcloudDns)
            assert await adapter.read(NAME, "A") is None
        finally:
            await adapter.aclose()
        assert pool.submit(lambda: 1).result() == 1  # a shared pool stays usable
