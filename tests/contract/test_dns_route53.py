"""Contract tests for the Route53 adapter.

Against a real moto server (records, zone errors, authentication), a tiny canned-answer HTTP
server (5xx, throttling, hangs, malformed bodies: moto cannot produce those) and, for change
polling, a fake client at the boto3 boundary (moto always answers INSYNC).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
import structlog
from moto.server import ThreadedMotoServer

from orchestrator.config import Route53Provider
from orchestrator.errors import OperationTimeout, PermanentError, TransientError
from orchestrator.providers.dns import ChangeHandle, DnsProvider, RecordSet, diff
from orchestrator.providers.dns_route53 import Route53Dns

KEY_ID = "AKIAHELIOSTESTKEY123"
SECRET = "helios-test-secret-do-not-leak"
ZONE = "helios.test."
NAME = "db.helios.test."


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter's config refers to its keys as env:NAME, like a real config file."""
    monkeypatch.setenv("HELIOS_T_AWS_KEY", KEY_ID)
    monkeypatch.setenv("HELIOS_T_AWS_SECRET", SECRET)


def _moto_post(endpoint: str, path: str, body: bytes = b"") -> None:
    req = urllib.request.Request(
        endpoint + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


@pytest.fixture
def raw(moto_endpoint: str) -> Iterator[Any]:
    """A plain boto3 client on a fresh moto state, to arrange and inspect."""
    _moto_post(moto_endpoint, "/moto-api/reset")
    client = boto3.session.Session(
        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name="us-east-1"
    ).client("route53", endpoint_url=moto_endpoint)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def zone_id(raw: Any) -> str:
    zid: str = raw.create_hosted_zone(Name=ZONE, CallerReference=str(time.time()))["HostedZone"][
        "Id"
    ]
    return zid.rsplit("/", 1)[-1]


def make_cfg(endpoint: str, zone: str, **extra: Any) -> Route53Provider:
    return Route53Provider.model_validate(
        {
            "name": "r53",
            "kind": "route53",
            "zone_id": zone,
            "endpoint_url": endpoint,
            "access_key_id": "env:HELIOS_T_AWS_KEY",
            "secret_access_key": "env:HELIOS_T_AWS_SECRET",
            "timeout": 2,
            "poll_interval": 0.5,
            **extra,
        }
    )


@pytest.fixture
async def r53(moto_endpoint: str, zone_id: str) -> AsyncIterator[Route53Dns]:
    adapter = Route53Dns(make_cfg(moto_endpoint, zone_id))
    try:
        yield adapter
    finally:
        await adapter.aclose()


def rrsets(raw: Any, zone: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = raw.list_resource_record_sets(HostedZoneId=zone)[
        "ResourceRecordSets"
    ]
    return out


def rs(values: list[str], ttl: int = 60, name: str = NAME, rtype: str = "A") -> RecordSet:
    return RecordSet.make(name, rtype, ttl, values)


# --- records -----------------------------------------------------------------------------------


async def test_is_a_dns_provider(r53: Route53Dns) -> None:
    assert isinstance(r53, DnsProvider)
    assert (r53.name, r53.kind) == ("r53", "route53")


async def test_read_absent_is_none(r53: Route53Dns) -> None:
    assert await r53.read(NAME, "A") is None
    assert await r53.read("db.helios.test", "CNAME") is None


async def test_create_then_read_back(r53: Route53Dns) -> None:
    desired = rs(["10.0.0.2", "10.0.0.1"])
    handle = await r53.apply(diff("r53", None, desired))
    assert handle.provider == "r53"
    assert handle.change_id and "/" not in handle.change_id
    assert handle.status == "INSYNC"
    assert await r53.wait_live(handle, 5) == 0.0
    assert await r53.read("DB.helios.test", "a") == desired


async def test_update_value_and_ttl(r53: Route53Dns, raw: Any, zone_id: str) -> None:
    first = rs(["10.0.0.1"], ttl=60)
    await r53.apply(diff("r53", None, first))
    second = rs(["10.0.1.1"], ttl=30)
    await r53.apply(diff("r53", first, second))
    assert await r53.read(NAME, "A") == second
    assert [r for r in rrsets(raw, zone_id) if r["Name"] == NAME] == [
        {"Name": NAME, "Type": "A", "TTL": 30, "ResourceRecords": [{"Value": "10.0.1.1"}]}
    ]


async def test_apply_same_again_is_noop(r53: Route53Dns, raw: Any, zone_id: str) -> None:
    desired = rs(["10.0.0.1"])
    await r53.apply(diff("r53", None, desired))
    before = rrsets(raw, zone_id)
    # Even with a stale "before", an already-live desired state changes nothing.
    handle = await r53.apply(diff("r53", None, desired))
    assert handle == ChangeHandle(provider="r53", change_id=None, status="noop")
    assert await r53.wait_live(handle, 1) == 0.0
    assert rrsets(raw, zone_id) == before


async def test_cname(r53: Route53Dns) -> None:
    desired = rs(["db-eu.helios.test"], rtype="CNAME", name="alias.helios.test")
    await r53.apply(diff("r53", None, desired))
    assert await r53.read("alias.helios.test.", "CNAME") == desired


async def test_empty_values_refused(r53: Route53Dns, raw: Any, zone_id: str) -> None:
    before = rrsets(raw, zone_id)
    with pytest.raises(PermanentError, match="no values"):
        await r53.apply(diff("r53", None, rs([])))
    with pytest.raises(PermanentError, match="exactly one"):
        await r53.apply(diff("r53", None, rs(["a.example.", "b.example."], rtype="CNAME")))
    assert rrsets(raw, zone_id) == before


async def test_exact_scope(r53: Route53Dns, raw: Any, zone_id: str) -> None:
    for name, rtype, value in (
        ("other.helios.test.", "A", "192.0.2.9"),
        (NAME, "AAAA", "2001:db8::1"),
        ("x.db.helios.test.", "A", "192.0.2.10"),
    ):
        raw.change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={
                "Changes": [
                    {
                        "Action": "UPSERT",
                        "ResourceRecordSet": {
                            "Name": name,
                            "Type": rtype,
                            "TTL": 300,
                            "ResourceRecords": [{"Value": value}],
                        },
                    }
                ]
            },
        )
    before = {(r["Name"], r["Type"]): r for r in rrsets(raw, zone_id)}
    assert await r53.read(NAME, "A") is None  # the AAAA at the same name is not an A
    await r53.apply(diff("r53", None, rs(["10.0.0.1"])))
    await r53.apply(diff("r53", None, rs(["10.0.0.3"], ttl=10)))
    after = {(r["Name"], r["Type"]): r for r in rrsets(raw, zone_id)}
    assert after.pop((NAME, "A"))["ResourceRecords"] == [{"Value": "10.0.0.3"}]
    assert after == before


async def test_alias_record_refused(r53: Route53Dns, raw: Any, zone_id: str) -> None:
    raw.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": NAME,
                        "Type": "A",
                        "AliasTarget": {
                            "HostedZoneId": zone_id,
                            "DNSName": "other.helios.test.",
                            "EvaluateTargetHealth": False,
                        },
                    },
                }
            ]
        },
    )
    with pytest.raises(PermanentError, match="alias or routing-policy"):
        await r53.apply(diff("r53", None, rs(["10.0.0.1"])))


# --- errors against moto -----------------------------------------------------------------------


async def test_zone_not_found(moto_endpoint: str) -> None:
    adapter = Route53Dns(make_cfg(moto_endpoint, "ZDOESNOTEXIST"))
    try:
        with pytest.raises(PermanentError, match=r"hosted zone ZDOESNOTEXIST not found"):
            await adapter.read(NAME, "A")
        with pytest.raises(PermanentError, match="NoSuchHostedZone"):
            await adapter.apply(diff("r53", None, rs(["10.0.0.1"])))
    finally:
        await adapter.aclose()


async def test_bad_credentials(moto_endpoint: str, r53: Route53Dns) -> None:
    _moto_post(moto_endpoint, "/moto-api/reset-auth", b"0")  # moto now checks credentials
    try:
        with pytest.raises(PermanentError, match="authentication") as info:
            await r53.read(NAME, "A")
    finally:
        _moto_post(moto_endpoint, "/moto-api/reset-auth", b"inf")
    assert "InvalidClientTokenId" in str(info.value)
    assert SECRET not in str(info.value) and KEY_ID not in str(info.value)


async def test_no_credentials_is_permanent(
    moto_endpoint: str, zone_id: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe 169.254.169.254
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    cfg = Route53Provider.model_validate(
        {"name": "r53", "kind": "route53", "zone_id": zone_id, "endpoint_url": moto_endpoint}
    )
    adapter = Route53Dns(cfg)
    try:
        with pytest.raises(PermanentError, match="no usable credentials"):
            await adapter.read(NAME, "A")
    finally:
        await adapter.aclose()


async def test_connection_refused_is_transient(unused_tcp_port: int) -> None:
    adapter = Route53Dns(make_cfg(f"http://127.0.0.1:{unused_tcp_port}", "Z1"))
    try:
        with pytest.raises(TransientError, match="cannot reach"):
            await adapter.read(NAME, "A")
    finally:
        await adapter.aclose()


# --- errors from a canned-answer server --------------------------------------------------------


@dataclass
class Canned:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


class CannedServer:
    """Answers every request with the next canned answer (or 200 with an empty rrset list)."""

    def __init__(self) -> None:
        self.answers: list[Canned] = []
        self.requests: list[str] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.requests.append(f"{self.command} {self.path}")
                answer = outer.answers.pop(0) if outer.answers else Canned(200, _EMPTY_LIST)
                if answer.hang:
                    outer.release.wait(10)
                    return
                self.send_response(answer.status)
                for k, v in {"Content-Type": "text/xml", **answer.headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


_NS = "https://route53.amazonaws.com/doc/2013-04-01/"
_EMPTY_LIST = (
    f'<?xml version="1.0"?><ListResourceRecordSetsResponse xmlns="{_NS}">'
    "<ResourceRecordSets></ResourceRecordSets><IsTruncated>false</IsTruncated>"
    "<MaxItems>1</MaxItems></ListResourceRecordSetsResponse>"
).encode()


def _error(code: str, message: str = "nope") -> bytes:
    return (
        f'<?xml version="1.0"?><ErrorResponse xmlns="{_NS}"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>r1</RequestId></ErrorResponse>"
    ).encode()


@pytest.fixture
async def canned() -> AsyncIterator[tuple[CannedServer, Route53Dns]]:
    server = CannedServer()
    adapter = Route53Dns(make_cfg(server.endpoint, "ZCANNED", timeout=1))
    try:
        yield server, adapter
    finally:
        await adapter.aclose()
        server.stop()


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (Canned(500, _error("InternalFailure")), "InternalFailure"),
        (Canned(503, _error("ServiceUnavailable")), "ServiceUnavailable"),
        (Canned(400, _error("PriorRequestNotComplete")), "PriorRequestNotComplete"),
        (
            Canned(500, b"<html><body>boom</body></html>", {"Content-Type": "text/html"}),
            r"\(500\)|malformed answer",  # botocore makes Code "500" of an HTML 5xx body
        ),
    ],
)
async def test_server_errors_are_transient_and_not_retried(
    canned: tuple[CannedServer, Route53Dns], answer: Canned, match: str
) -> None:
    server, adapter = canned
    server.answers.append(answer)
    with pytest.raises(TransientError, match=match) as info:
        await adapter.read(NAME, "A")
    assert not isinstance(info.value, OperationTimeout)
    assert info.value.retry_after is None
    assert len(server.requests) == 1  # botocore retries are off


@pytest.mark.parametrize(
    "answer",
    [
        Canned(429, _error("Throttling", "Rate exceeded"), {"Retry-After": "2"}),
        Canned(400, _error("Throttling", "Rate exceeded"), {"Retry-After": "2"}),
    ],
)
async def test_throttling_carries_retry_after(
    canned: tuple[CannedServer, Route53Dns], answer: Canned
) -> None:
    server, adapter = canned
    server.answers.append(answer)
    with pytest.raises(TransientError, match="Throttling") as info:
        await adapter.read(NAME, "A")
    assert info.value.retry_after == 2
    assert len(server.requests) == 1


async def test_hanging_answer_times_out(canned: tuple[CannedServer, Route53Dns]) -> None:
    server, adapter = canned
    server.answers.append(Canned(200, hang=True))
    t0 = time.monotonic()
    with pytest.raises(OperationTimeout):
        await adapter.read(NAME, "A")
    assert time.monotonic() - t0 < 1.5


@pytest.mark.parametrize(
    "body",
    [b"this is not xml", b'<?xml version="1.0"?><Unexpected><Thing/></Unexpected>'],
)
async def test_malformed_answer_is_transient(
    canned: tuple[CannedServer, Route53Dns], body: bytes
) -> None:
    server, adapter = canned
    server.answers.append(Canned(200, body))
    with pytest.raises(TransientError, match="malformed answer"):
        await adapter.apply(diff("r53", None, rs(["10.0.0.1"])))


@pytest.mark.parametrize(
    ("code", "match"),
    [
        ("AccessDenied", "authentication or permission"),
        ("SignatureDoesNotMatch", "authentication or permission"),
        ("InvalidChangeBatch", "rejected"),
        ("InvalidInput", "rejected"),
    ],
)
async def test_client_errors_are_permanent_without_secrets(
    canned: tuple[CannedServer, Route53Dns], code: str, match: str
) -> None:
    server, adapter = canned
    server.answers.append(
        Canned(
            403 if "Sig" in code or "Access" in code else 400,
            _error(code, f"key {KEY_ID} secret {SECRET} is wrong"),
        )
    )
    with pytest.raises(PermanentError, match=match) as info:
        await adapter.read(NAME, "A")
    assert code in str(info.value)
    assert KEY_ID not in str(info.value) and SECRET not in str(info.value)


# --- change polling with a fake client at the boto3 boundary ----------------------------------


class FakeRoute53Client:
    """``get_change`` answers PENDING ``pending`` times, then INSYNC."""

    def __init__(self, pending: int) -> None:
        self.pending = pending
        self.calls: list[str] = []
        self.contexts: list[dict[str, Any]] = []

    def get_change(self, Id: str) -> dict[str, Any]:
        self.calls.append(Id)
        self.contexts.append(structlog.contextvars.get_contextvars())
        status = "PENDING" if len(self.calls) <= self.pending else "INSYNC"
        return {"ChangeInfo": {"Id": f"/change/{Id}", "Status": status}}


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _fake_adapter(client: FakeRoute53Client, ft: FakeTime) -> Route53Dns:
    cfg = make_cfg("http://127.0.0.1:9", "ZFAKE", poll_interval=2)
    return Route53Dns(cfg, client=client, sleep=ft.sleep, clock=ft.clock)


async def test_wait_live_polls_until_insync() -> None:
    client, ft = FakeRoute53Client(pending=2), FakeTime()
    adapter = _fake_adapter(client, ft)
    try:
        with structlog.contextvars.bound_contextvars(failover_id="f-1"):
            waited = await adapter.wait_live(ChangeHandle("r53", "C1", "PENDING"), timeout=30)
    finally:
        await adapter.aclose()
    assert waited == 4.0
    assert client.calls == ["C1", "C1", "C1"]
    assert ft.sleeps == [2, 2]
    assert all(ctx.get("failover_id") == "f-1" for ctx in client.contexts)


async def test_wait_live_times_out() -> None:
    client, ft = FakeRoute53Client(pending=10**6), FakeTime()
    adapter = _fake_adapter(client, ft)
    try:
        with pytest.raises(OperationTimeout, match="not INSYNC within 5s"):
            await adapter.wait_live(ChangeHandle("r53", "C1", "PENDING"), timeout=5)
    finally:
        await adapter.aclose()
    assert ft.sleeps == [2, 2, 1]
    assert len(client.calls) == 3


async def test_aclose_is_idempotent_and_final(r53: Route53Dns) -> None:
    await r53.read(NAME, "A")
    await r53.aclose()
    await r53.aclose()
    with pytest.raises(PermanentError, match="closed"):
        await r53.read(NAME, "A")


async def test_shared_executor_is_left_running(moto_endpoint: str, zone_id: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        adapter = Route53Dns(make_cfg(moto_endpoint, zone_id), executor=pool)
        await adapter.read(NAME, "A")
        await adapter.aclose()
        assert pool.submit(lambda: 42).result() == 42
    await asyncio.sleep(0)


async def test_factory_builds_route53(moto_endpoint: str, zone_id: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator.providers.dns_factory import build_dns_provider

    with ThreadPoolExecutor(max_workers=2) as pool:
        adapter = build_dns_provider(make_cfg(moto_endpoint, zone_id), pool)
        try:
            assert isinstance(adapter, Route53Dns)
            assert await adapter.read(NAME, "A") is None
        finally:
            await adapter.aclose()
