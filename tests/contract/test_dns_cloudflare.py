"""Contract tests for the Cloudflare adapter against the local Cloudflare stand-in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
from cloudflare import AsyncCloudflare

from orchestrator.config import CloudflareProvider
from orchestrator.errors import OperationTimeout, PermanentError, TransientError
from orchestrator.providers.dns import ChangeHandle, DnsProvider, RecordSet, diff
from orchestrator.providers.dns_cloudflare import CloudflareDns
from orchestrator.sandbox.standins.cloudflare import CloudflareStandIn

TOKEN = "cf-test-token-do-not-leak"
NAME = "db.helios.test."


@pytest.fixture(autouse=True)
def _token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOS_T_CF_TOKEN", TOKEN)
    monkeypatch.setenv("HELIOS_T_CF_BAD_TOKEN", "not-the-token")


@pytest.fixture
def standin() -> Iterator[CloudflareStandIn]:
    s = CloudflareStandIn(TOKEN)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def zone_id(standin: CloudflareStandIn) -> str:
    return standin.add_zone("helios.test")


def make_cfg(base_url: str, zone: str, **extra: Any) -> CloudflareProvider:
    return CloudflareProvider.model_validate(
        {
            "name": "cf",
            "kind": "cloudflare",
            "zone_id": zone,
            "api_token": "env:HELIOS_T_CF_TOKEN",
            "base_url": base_url,
            "timeout": 1,
            "poll_interval": 0.05,
            **extra,
        }
    )


@pytest.fixture
async def cf(standin: CloudflareStandIn, zone_id: str) -> AsyncIterator[CloudflareDns]:
    adapter = CloudflareDns(make_cfg(standin.base_url, zone_id))
    try:
        yield adapter
    finally:
        await adapter.aclose()


@pytest.fixture
async def raw(standin: CloudflareStandIn) -> AsyncIterator[AsyncCloudflare]:
    """A plain SDK client, to arrange records behind the adapter's back."""
    async with AsyncCloudflare(api_token=TOKEN, base_url=standin.base_url, max_retries=0) as c:
        yield c


def rs(values: list[str], ttl: int = 60, name: str = NAME, rtype: str = "A") -> RecordSet:
    return RecordSet.make(name, rtype, ttl, values)


def ours(standin: CloudflareStandIn, zone: str, rtype: str = "A") -> list[dict[str, Any]]:
    return [
        r for r in standin.records(zone) if r["name"] == "db.helios.test" and r["type"] == rtype
    ]


def writes(standin: CloudflareStandIn) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in standin.faults.requests if r.method != "GET"]


# --- records -----------------------------------------------------------------------------------


async def test_is_a_dns_provider(cf: CloudflareDns) -> None:
    assert isinstance(cf, DnsProvider)
    assert (cf.name, cf.kind) == ("cf", "cloudflare")


async def test_read_absent_is_none(cf: CloudflareDns) -> None:
    assert await cf.read(NAME, "A") is None


async def test_create_then_read_back(
    cf: CloudflareDns, standin: CloudflareStandIn, zone_id: str
) -> None:
    desired = rs(["10.0.0.2", "10.0.0.1"])
    handle = await cf.apply(diff("cf", None, desired))
    assert handle == ChangeHandle(provider="cf", change_id=None, status="applied")
    assert await cf.read("DB.helios.test", "a") == desired
    assert sorted(r["content"] for r in ours(standin, zone_id)) == ["10.0.0.1", "10.0.0.2"]
    assert [m for m, p in writes(standin)] == ["POST"]
    assert all(p.endswith("/dns_records/batch") for _, p in writes(standin))
    assert 0.0 <= await cf.wait_live(handle, 2) < 1


async def test_update_value_and_ttl_in_place(
    cf: CloudflareDns, standin: CloudflareStandIn, zone_id: str
) -> None:
    first = rs(["10.0.0.1"], ttl=60)
    await cf.apply(diff("cf", None, first))
    [before] = ours(standin, zone_id)
    second = rs(["10.0.1.1"], ttl=120)
    await cf.apply(diff("cf", first, second))
    assert await cf.read(NAME, "A") == second
    [after] = ours(standin, zone_id)
    assert after["id"] == before["id"]  # patched in place: the name never went empty
    assert (after["content"], after["ttl"]) == ("10.0.1.1", 120)


async def test_grow_and_shrink_value_sets(
    cf: CloudflareDns, standin: CloudflareStandIn, zone_id: str
) -> None:
    three = rs(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    await cf.apply(diff("cf", None, rs(["10.0.0.9"])))
    await cf.apply(diff("cf", None, three))
    assert await cf.read(NAME, "A") == three
    assert len(ours(standin, zone_id)) == 3
    one = rs(["10.0.0.2"], ttl=300)
    await cf.apply(diff("cf", three, one))
    assert await cf.read(NAME, "A") == one
    assert len(ours(standin, zone_id)) == 1


async def test_apply_same_again_is_noop(
    cf: CloudflareDns, standin: CloudflareStandIn, zone_id: str
) -> None:
    desired = rs(["10.0.0.1", "10.0.0.2"])
    await cf.apply(diff("cf", None, desired))
    before = ours(standin, zone_id)
    standin.faults.reset_log()
    handle = await cf.apply(diff("cf", None, desired))  # stale "before": still a no-op
    assert handle.status == "noop"
    assert await cf.wait_live(handle, 1) == 0.0
    assert writes(standin) == []
    assert ours(standin, zone_id) == before  # no duplicates, nothing modified


async def test_cname(cf: CloudflareDns, standin: CloudflareStandIn, zone_id: str) -> None:
    first = rs(["db-eu.helios.test."], rtype="CNAME")
    await cf.apply(diff("cf", None, first))
    assert await cf.read(NAME, "CNAME") == first
    second = rs(["db-us.helios.test"], rtype="CNAME", ttl=300)
    await cf.apply(diff("cf", first, second))
    assert await cf.read(NAME, "CNAME") == second
    [rec] = ours(standin, zone_id, "CNAME")
    assert rec["content"] == "db-us.helios.test"


async def test_auto_ttl_reads_as_one(cf: CloudflareDns, raw: AsyncCloudflare, zone_id: str) -> None:
    await raw.dns.records.create(
        zone_id=zone_id, name="db.helios.test", type="A", content="10.0.0.1", ttl=1
    )
    assert await cf.read(NAME, "A") == rs(["10.0.0.1"], ttl=1)


async def test_empty_values_refused(
    cf: CloudflareDns, standin: CloudflareStandIn, zone_id: str
) -> None:
    with pytest.raises(PermanentError, match="no values"):
        await cf.apply(diff("cf", None, rs([])))
    with pytest.raises(PermanentError, match="exactly one"):
        await cf.apply(diff("cf", None, rs(["a.example.", "b.example."], rtype="CNAME")))
    assert standin.faults.requests == []


async def test_exact_scope(
    cf: CloudflareDns, standin: CloudflareStandIn, zone_id: str, raw: AsyncCloudflare
) -> None:
    for name, rtype, content in (
        ("other.helios.test", "A", "192.0.2.9"),
        ("db.helios.test", "AAAA", "2001:db8::1"),
        ("x.db.helios.test", "A", "192.0.2.10"),
        ("db.helios.test.helios.test", "A", "192.0.2.11"),
    ):
        await raw.dns.records.create(
            zone_id=zone_id,
            name=name,
            type=cast(Any, rtype),
            content=content,
            ttl=300,
        )
    others = standin.records(zone_id)
    assert await cf.read(NAME, "A") is None
    await cf.apply(diff("cf", None, rs(["10.0.0.1", "10.0.0.2"])))
    await cf.apply(diff("cf", None, rs(["10.0.0.3"], ttl=120)))
    mine = ours(standin, zone_id)
    assert [(r["content"], r["ttl"]) for r in mine] == [("10.0.0.3", 120)]
    assert [r for r in standin.records(zone_id) if r not in mine] == others


async def test_batch_unsupported_falls_back(
    cf: CloudflareDns, standin: CloudflareStandIn, zone_id: str
) -> None:
    await cf.apply(diff("cf", None, rs(["10.0.0.1", "10.0.0.2"])))
    [kept] = [r for r in ours(standin, zone_id) if r["content"] == "10.0.0.2"]
    standin.faults.inject(status=405, path_contains="/batch")
    standin.faults.reset_log()
    desired = rs(["10.0.0.2", "10.0.0.5", "10.0.0.6"], ttl=90)
    await cf.apply(diff("cf", None, desired))
    assert not cf.batch_supported
    assert await cf.read(NAME, "A") == desired
    assert [m for m, _ in writes(standin)] == ["POST", "PATCH", "PATCH", "POST"]
    assert any(r["id"] == kept["id"] for r in ours(standin, zone_id))
    # Later changes go straight to single calls.
    standin.faults.reset_log()
    await cf.apply(diff("cf", None, rs(["10.0.0.2"], ttl=90)))
    assert [m for m, _ in writes(standin)] == ["DELETE", "DELETE"]
    assert await cf.read(NAME, "A") == rs(["10.0.0.2"], ttl=90)


async def test_record_gone_meanwhile_is_transient(
    cf: CloudflareDns, standin: CloudflareStandIn, zone_id: str, raw: AsyncCloudflare
) -> None:
    await cf.apply(diff("cf", None, rs(["10.0.0.1"])))
    [rec] = ours(standin, zone_id)
    standin.faults.inject(delay=0.3, path_contains="/batch")
    task = asyncio.create_task(cf.apply(diff("cf", None, rs(["10.0.0.2"]))))
    await asyncio.sleep(0.1)
    await raw.dns.records.delete(dns_record_id=rec["id"], zone_id=zone_id)
    with pytest.raises(TransientError, match="changed concurrently; re-read"):
        await task
    # The caller's retry re-plans against what is there now.
    await cf.apply(diff("cf", None, rs(["10.0.0.2"])))
    assert await cf.read(NAME, "A") == rs(["10.0.0.2"])


# --- errors ------------------------------------------------------------------------------------


async def test_zone_not_found(standin: CloudflareStandIn) -> None:
    adapter = CloudflareDns(make_cfg(standin.base_url, "0123456789abcdef0123456789abcdef"))
    try:
        with pytest.raises(PermanentError, match="zone 0123456789abcdef0123456789abcdef not found"):
            await adapter.read(NAME, "A")
        with pytest.raises(PermanentError, match="not found"):
            await adapter.apply(diff("cf", None, rs(["10.0.0.1"])))
    finally:
        await adapter.aclose()


async def test_bad_token(standin: CloudflareStandIn, zone_id: str) -> None:
    cfg = make_cfg(standin.base_url, zone_id, api_token="env:HELIOS_T_CF_BAD_TOKEN")
    adapter = CloudflareDns(cfg)
    try:
        with pytest.raises(PermanentError, match="authentication") as info:
            await adapter.apply(diff("cf", None, rs(["10.0.0.1"])))
    finally:
        await adapter.aclose()
    assert "not-the-token" not in str(info.value) and TOKEN not in str(info.value)


async def test_permission_denied(cf: CloudflareDns, standin: CloudflareStandIn) -> None:
    standin.faults.inject(status=403)
    with pytest.raises(PermanentError, match="authentication or permission"):
        await cf.read(NAME, "A")


@pytest.mark.parametrize("status", [500, 502, 503, 409])
async def test_server_errors_are_transient_and_not_retried(
    cf: CloudflareDns, standin: CloudflareStandIn, zone_id: str, status: int
) -> None:
    await cf.apply(diff("cf", None, rs(["10.0.0.1"])))
    before = standin.records(zone_id)
    standin.faults.inject(status=status, methods={"POST"})
    standin.faults.reset_log()
    with pytest.raises(TransientError, match=f"HTTP {status}") as info:
        await cf.apply(diff("cf", None, rs(["10.0.0.2"])))
    assert not isinstance(info.value, OperationTimeout)
    assert [m for m, _ in writes(standin)] == ["POST"]  # the SDK did not re-send the POST
    assert standin.records(zone_id) == before


async def test_rate_limit_carries_retry_after(
    cf: CloudflareDns, standin: CloudflareStandIn
) -> None:
    standin.faults.inject(status=429, retry_after=2)
    with pytest.raises(TransientError, match="rate limited") as info:
        await cf.read(NAME, "A")
    assert info.value.retry_after == 2
    assert len(standin.faults.requests) == 1


async def test_hanging_answer_times_out(cf: CloudflareDns, standin: CloudflareStandIn) -> None:
    standin.faults.inject(hang=True)
    t0 = time.monotonic()
    with pytest.raises(OperationTimeout):
        await cf.read(NAME, "A")
    assert time.monotonic() - t0 < 1.5


async def test_slow_apply_is_bounded_as_a_whole(
    cf: CloudflareDns, standin: CloudflareStandIn
) -> None:
    standin.faults.inject(delay=0.6, count=2)  # the read and the write each take 0.6 s
    t0 = time.monotonic()
    with pytest.raises(OperationTimeout):
        await cf.apply(diff("cf", None, rs(["10.0.0.1"])))
    assert time.monotonic() - t0 < 1.5


async def test_malformed_answer_is_transient(cf: CloudflareDns, standin: CloudflareStandIn) -> None:
    standin.faults.inject(malformed=True)
    with pytest.raises(TransientError, match="malformed answer"):
        await cf.read(NAME, "A")


@pytest.mark.parametrize("methods", [{"GET"}, {"POST"}])
async def test_success_false_with_http_200(
    cf: CloudflareDns, standin: CloudflareStandIn, zone_id: str, methods: set[str]
) -> None:
    standin.faults.inject(success_false=True, methods=methods)
    with pytest.raises(TransientError, match=r"success=false.*injected failure with HTTP 200"):
        await cf.apply(diff("cf", None, rs(["10.0.0.1"])))
    assert ours(standin, zone_id) == []


async def test_connection_refused_is_transient(unused_tcp_port: int) -> None:
    adapter = CloudflareDns(make_cfg(f"http://127.0.0.1:{unused_tcp_port}/client/v4", "z"))
    try:
        with pytest.raises(TransientError, match="cannot reach"):
            await adapter.read(NAME, "A")
    finally:
        await adapter.aclose()


# --- wait_live and lifecycle -------------------------------------------------------------------


async def test_wait_live_times_out_when_overwritten(
    cf: CloudflareDns, standin: CloudflareStandIn, zone_id: str, raw: AsyncCloudflare
) -> None:
    handle = await cf.apply(diff("cf", None, rs(["10.0.0.1"])))
    [rec] = ours(standin, zone_id)
    await raw.dns.records.edit(
        dns_record_id=rec["id"],
        zone_id=zone_id,
        name="db.helios.test",
        type="A",
        ttl=60,
        content="10.9.9.9",
    )
    t0 = time.monotonic()
    with pytest.raises(OperationTimeout, match=r"not served as applied within 0\.3s"):
        await cf.wait_live(handle, 0.3)
    assert time.monotonic() - t0 < 0.8


async def test_aclose_is_idempotent_and_final(cf: CloudflareDns) -> None:
    await cf.aclose()
    await cf.aclose()
    with pytest.raises(PermanentError, match="closed"):
        await cf.read(NAME, "A")


async def test_factory_builds_cloudflare(standin: CloudflareStandIn, zone_id: str) -> None:
    from orchestrator.providers.dns_factory import build_dns_provider

    adapter = build_dns_provider(make_cfg(standin.base_url, zone_id), None)
    try:
        assert isinstance(adapter, CloudflareDns)
        assert await adapter.read(NAME, "A") is None
    finally:
        await adapter.aclose()
