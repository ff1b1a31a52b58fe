"""The local stand-ins, driven through the official SDKs: Cloudflare (``cloudflare``), Google
Cloud DNS (``google-cloud-dns``), Route53 on moto (``boto3``) and the authoritative DNS server
(``dnspython``). Fast: every server binds a free loopback port and is stopped by its fixture.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, TypeVar

import cloudflare
import dns.asyncquery
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import dns as gdns

from orchestrator.sandbox.standins import (
    AuthoritativeServer,
    CloudflareStandIn,
    GoogleDnsStandIn,
    MotoRoute53,
)

TOKEN = "test-token-123"
PROJECT = "proj-1"
T = TypeVar("T")


def must(value: T | None) -> T:
    """The Cloudflare SDK types every result as optional (``"success": false`` gives None)."""
    assert value is not None
    return value


@pytest.fixture(autouse=True)
def _no_metadata_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """google-auth must never look for the GCE metadata server (traffic off this machine)."""
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def cf_server() -> Iterator[CloudflareStandIn]:
    srv = CloudflareStandIn(TOKEN)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def cf(cf_server: CloudflareStandIn) -> Iterator[cloudflare.Cloudflare]:
    client = cloudflare.Cloudflare(
        api_token=TOKEN, base_url=cf_server.base_url, max_retries=0, timeout=5.0
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def zone_id(cf_server: CloudflareStandIn) -> str:
    return cf_server.add_zone("helios.test")


@pytest.fixture
def g_server() -> Iterator[GoogleDnsStandIn]:
    srv = GoogleDnsStandIn(PROJECT, polls_until_done=2)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


class _ShortTimeoutSession(requests.Session):
    """google-cloud-dns passes timeout=60 on every call and takes no timeout argument."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.limit = timeout

    def request(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["timeout"] = min(float(kwargs.get("timeout") or self.limit), self.limit)
        return super().request(*args, **kwargs)


@pytest.fixture
def gclient(g_server: GoogleDnsStandIn) -> Iterator[gdns.Client]:
    session = _ShortTimeoutSession(1.0)
    client = gdns.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": g_server.api_endpoint},
        _http=session,
    )
    try:
        yield client
    finally:
        session.close()


@pytest.fixture
def gzone(gclient: gdns.Client) -> Any:
    zone = gclient.zone("helios-test", "helios.test.")
    zone.create()
    return zone


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoRoute53]:
    srv = MotoRoute53()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def r53(moto: MotoRoute53) -> Any:
    moto.reset()
    return moto.client()


def http(method: str, url: str, body: object = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


# --- Cloudflare -------------------------------------------------------------------------------


def test_cloudflare_record_lifecycle(
    cf: cloudflare.Cloudflare, cf_server: CloudflareStandIn, zone_id: str
) -> None:
    assert cf.zones.get(zone_id=zone_id).name == "helios.test"
    rec = must(
        cf.dns.records.create(
            zone_id=zone_id,
            name="db.helios.test.",
            type="A",
            content="127.0.0.1",
            ttl=60,
            comment="seed",
        )
    )
    assert (rec.name, rec.content, rec.ttl) == ("db.helios.test", "127.0.0.1", 60.0)
    cf.dns.records.create(
        zone_id=zone_id, name="www", type="CNAME", content="db.helios.test.", ttl=1
    )
    page = cf.dns.records.list(zone_id=zone_id, name={"exact": "db.helios.test"}, type="A")
    assert [r.id for r in page.result] == [rec.id]
    plain = cf.dns.records.list(zone_id=zone_id, name="www.helios.test")  # type: ignore[arg-type]
    assert plain.result[0].content == "db.helios.test"  # a plain string filters exactly too
    assert cf.dns.records.list(zone_id=zone_id, type="AAAA").result == []

    edited = must(
        cf.dns.records.edit(
            dns_record_id=rec.id,
            zone_id=zone_id,
            name="db.helios.test",
            type="A",
            ttl=120,
            content="127.0.0.2",
        )
    )
    assert (edited.content, edited.ttl, edited.comment) == ("127.0.0.2", 120.0, "seed")  # merged
    put = must(
        cf.dns.records.update(
            dns_record_id=rec.id,
            zone_id=zone_id,
            name="db.helios.test",
            type="A",
            ttl=60,
            content="127.0.0.3",
        )
    )
    assert (put.content, put.comment) == ("127.0.0.3", None)  # replaced
    assert must(cf.dns.records.get(dns_record_id=rec.id, zone_id=zone_id)).content == "127.0.0.3"

    batch = must(
        cf.dns.records.batch(
            zone_id=zone_id,
            patches=[{"id": rec.id, "content": "127.0.0.4"}],  # type: ignore[list-item]
            posts=[{"name": "db2.helios.test", "type": "A", "content": "10.0.0.1", "ttl": 60}],
        )
    )
    assert batch.patches is not None and batch.posts is not None
    assert [p.content for p in batch.patches] == ["127.0.0.4"]
    assert [p.name for p in batch.posts] == ["db2.helios.test"]
    assert cf_server.lookup("db.helios.test.", "A") == (60, ["127.0.0.4"])
    assert cf_server.lookup("www.helios.test", "CNAME") == (300, ["db.helios.test"])

    cf.dns.records.delete(dns_record_id=rec.id, zone_id=zone_id)
    with pytest.raises(cloudflare.NotFoundError) as err:
        cf.dns.records.get(dns_record_id=rec.id, zone_id=zone_id)
    assert err.value.errors[0].code == 81044
    assert sorted(r["name"] for r in cf_server.records(zone_id)) == [
        "db2.helios.test",
        "www.helios.test",
    ]


def test_cloudflare_auto_pagination_requests_one_page_past_the_end(
    cf: cloudflare.Cloudflare, cf_server: CloudflareStandIn, zone_id: str
) -> None:
    for i in range(5):
        cf.dns.records.create(zone_id=zone_id, name=f"n{i}", type="A", content="10.0.0.1", ttl=60)
    cf_server.faults.reset_log()
    names = [r.name for r in cf.dns.records.list(zone_id=zone_id, per_page=2)]
    assert names == [f"n{i}.helios.test" for i in range(5)]
    pages = [r.path.rsplit("page=", 1)[-1] for r in cf_server.faults.requests]
    assert pages == ["2", "2", "3", "4"]  # per_page=2 first, then page 2, 3 and the empty 4
    last = cf.dns.records.list(zone_id=zone_id, per_page=2, page=9)
    assert last.result == []


def test_cloudflare_validation_errors(cf: cloudflare.Cloudflare, zone_id: str) -> None:
    def code(**kw: Any) -> int:
        base = {"zone_id": zone_id, "name": "db.helios.test", "type": "A", "ttl": 60}
        with pytest.raises(cloudflare.BadRequestError) as err:
            cf.dns.records.create(**{**base, **kw})
        return int(must(err.value.errors[0].code))

    assert code(type="MX", content="x") == 1004
    assert code(content="not-an-ip") == 9005
    assert code(type="AAAA", content="127.0.0.1") == 9006
    assert code(content="10.0.0.1", ttl=30) == 9021
    assert code(content="10.0.0.1", ttl=86401) == 9021
    cf.dns.records.create(
        zone_id=zone_id, name="db.helios.test", type="A", content="10.0.0.1", ttl=1
    )
    assert code(content="10.0.0.1") == 81057  # identical record
    assert code(type="CNAME", content="other.example.") == 81053
    with pytest.raises(cloudflare.NotFoundError) as err:
        cf.dns.records.list(zone_id="0" * 32)
    assert err.value.errors[0].code == 7003


def test_cloudflare_authentication(cf_server: CloudflareStandIn, zone_id: str) -> None:
    with (
        cloudflare.Cloudflare(api_token="wrong", base_url=cf_server.base_url, max_retries=0) as bad,
        pytest.raises(cloudflare.AuthenticationError) as err,
    ):
        bad.dns.records.list(zone_id=zone_id)
    assert err.value.status_code == 401
    assert err.value.errors[0].code == 10000
    status, body = http("GET", f"{cf_server.base_url}/zones/{zone_id}/dns_records")  # no header
    assert status == 401
    assert body["success"] is False and body["errors"][0]["message"] == "Authentication error"


def test_cloudflare_faults_map_to_sdk_exceptions(
    cf: cloudflare.Cloudflare, cf_server: CloudflareStandIn, zone_id: str
) -> None:
    faults = cf_server.faults
    faults.inject(status=429, retry_after=7)
    with pytest.raises(cloudflare.RateLimitError) as rate:
        cf.dns.records.list(zone_id=zone_id)
    assert rate.value.response.headers["retry-after"] == "7"
    assert rate.value.errors[0].code == 971
    faults.inject(status=500)
    with pytest.raises(cloudflare.InternalServerError):
        cf.dns.records.list(zone_id=zone_id)
    assert cf.dns.records.list(zone_id=zone_id).result == []  # count=1: used up
    faults.inject(malformed=True)
    with pytest.raises(ValueError, match="Unterminated"):  # json.JSONDecodeError, not wrapped
        cf.dns.records.list(zone_id=zone_id)
    faults.inject(success_false=True)
    assert cf.dns.records.list(zone_id=zone_id).result is None  # HTTP 200: no exception
    faults.inject(status=503, methods={"POST"}, path_contains="/dns_records", count=None)
    assert cf.dns.records.list(zone_id=zone_id).result == []  # GET is not matched
    for _ in range(2):
        with pytest.raises(cloudflare.InternalServerError):
            cf.dns.records.create(zone_id=zone_id, name="x", type="A", content="1.1.1.1", ttl=60)
    faults.clear()
    cf.dns.records.create(zone_id=zone_id, name="x", type="A", content="1.1.1.1", ttl=60)
    assert [r.status for r in faults.requests] == [429, 500, 200, 200, 200, 200, 503, 503, 200]


def test_cloudflare_retry_timing_follows_retry_after(
    cf_server: CloudflareStandIn, zone_id: str
) -> None:
    cf_server.faults.inject(status=429, retry_after=0.3, count=2)
    with cloudflare.Cloudflare(
        api_token=TOKEN, base_url=cf_server.base_url, max_retries=2
    ) as client:
        assert client.dns.records.list(zone_id=zone_id).result == []
    log = cf_server.faults.requests
    assert [r.status for r in log] == [429, 429, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(log)]
    assert all(0.3 <= g < 1.0 for g in gaps), gaps


def test_cloudflare_delay_and_hang(
    cf: cloudflare.Cloudflare, cf_server: CloudflareStandIn, zone_id: str
) -> None:
    cf_server.faults.inject(delay=0.3)
    started = time.monotonic()
    assert cf.dns.records.list(zone_id=zone_id).result == []
    assert time.monotonic() - started >= 0.3
    cf_server.faults.inject(hang=True, count=None)
    started = time.monotonic()
    with pytest.raises(cloudflare.APITimeoutError):
        cf.with_options(timeout=0.3).dns.records.list(zone_id=zone_id)
    assert 0.3 <= time.monotonic() - started < 2
    cf_server.faults.clear()  # the hung request is served now, to a client that left
    assert cf.dns.records.list(zone_id=zone_id).result == []


def test_cloudflare_stop_releases_a_hung_request(
    cf_server: CloudflareStandIn, zone_id: str
) -> None:
    cf_server.faults.inject(hang=True)
    errors: list[BaseException] = []

    def call() -> None:
        with cloudflare.Cloudflare(
            api_token=TOKEN, base_url=cf_server.base_url, max_retries=0, timeout=30
        ) as client:
            try:
                client.dns.records.list(zone_id=zone_id)
            except cloudflare.APIConnectionError as exc:
                errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    deadline = time.monotonic() + 5
    while cf_server.faults.hung == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cf_server.faults.hung == 1
    started = time.monotonic()
    cf_server.stop()
    assert time.monotonic() - started < 2
    worker.join(5)
    assert not worker.is_alive()
    assert len(errors) == 1
    assert [r.status for r in cf_server.faults.requests] == [0]
    cf_server.stop()  # idempotent


# --- Google Cloud DNS -------------------------------------------------------------------------


def test_google_zone_and_change_polling(gclient: gdns.Client, g_server: GoogleDnsStandIn) -> None:
    zone = gclient.zone("helios-test", "helios.test.")
    assert not zone.exists()
    zone.create()
    assert zone.exists()
    assert [z.name for z in gclient.list_zones()] == ["helios-test"]
    with pytest.raises(gexc.Conflict):
        gclient.zone("helios-test", "helios.test.").create()

    change = zone.changes()
    change.add_record_set(zone.resource_record_set("db.helios.test.", "A", 60, ["127.0.0.1"]))
    change.create()
    assert change.status == "pending"
    assert g_server.lookup("db.helios.test", "A") == (60, ["127.0.0.1"])  # applied at once
    seen = []
    for _ in range(3):
        change.reload()
        seen.append(change.status)
    assert seen == ["pending", "pending", "done"]
    again = zone.changes()
    again.name = change.name  # re-attach by id, as after a restart
    again.reload()
    assert again.status == "done"
    assert [c.status for c in zone.list_changes()] == ["done"]

    sets = {(r.name, r.record_type): r for r in zone.list_resource_record_sets()}
    assert set(sets) == {("db.helios.test.", "A"), ("helios.test.", "NS"), ("helios.test.", "SOA")}
    assert sets[("db.helios.test.", "A")].ttl == 60  # sent as "60", answered as 60
    stored = [r for r in g_server.rrsets("helios-test") if r["type"] == "A"]
    assert stored == [
        {
            "kind": "dns#resourceRecordSet",
            "name": "db.helios.test.",
            "type": "A",
            "ttl": 60,
            "rrdatas": ["127.0.0.1"],
        }
    ]


def test_google_changes_are_atomic_compare_and_set(gzone: Any, g_server: GoogleDnsStandIn) -> None:
    rrs = gzone.resource_record_set
    first = gzone.changes()
    first.add_record_set(rrs("db.helios.test.", "A", 60, ["127.0.0.1"]))
    first.create()

    stale = gzone.changes()  # deletion with the wrong ttl, plus an addition
    stale.delete_record_set(rrs("db.helios.test.", "A", 300, ["127.0.0.1"]))
    stale.add_record_set(rrs("db.helios.test.", "A", 60, ["127.0.0.2"]))
    with pytest.raises(gexc.PreconditionFailed) as failed:
        stale.create()
    assert failed.value.errors[0]["reason"] == "conditionNotMet"
    assert g_server.lookup("db.helios.test.", "A") == (60, ["127.0.0.1"])  # nothing applied

    dup = gzone.changes()
    dup.add_record_set(rrs("db.helios.test.", "A", 60, ["127.0.0.9"]))
    with pytest.raises(gexc.Conflict) as conflict:
        dup.create()
    assert conflict.value.errors[0]["reason"] == "alreadyExists"

    swap = gzone.changes()
    swap.delete_record_set(rrs("db.helios.test.", "A", 60, ["127.0.0.1"]))
    swap.add_record_set(rrs("db.helios.test.", "A", 60, ["127.0.0.2"]))
    swap.create()
    assert g_server.lookup("db.helios.test.", "A") == (60, ["127.0.0.2"])

    with pytest.raises(ValueError):  # the SDK refuses an empty change itself
        gzone.changes().create()
    url = f"{g_server.api_endpoint}/dns/v1/projects/{PROJECT}/managedZones/helios-test/changes"
    status, body = http("POST", url, {"additions": [], "deletions": []})
    assert status == 400 and body["error"]["errors"][0]["domain"] == "global"
    outside = gzone.changes()
    outside.add_record_set(rrs("db.example.com.", "A", 60, ["127.0.0.1"]))
    with pytest.raises(gexc.BadRequest):
        outside.create()


def test_google_rrset_filters_and_paging(gzone: Any, g_server: GoogleDnsStandIn) -> None:
    change = gzone.changes()
    for i in range(5):
        change.add_record_set(gzone.resource_record_set(f"n{i}.helios.test.", "A", 60, ["1.1.1.1"]))
    change.add_record_set(gzone.resource_record_set("n0.helios.test.", "AAAA", 60, ["::1"]))
    change.create()
    g_server.page_size = 2
    names = [r.name for r in gzone.list_resource_record_sets()]  # the SDK follows the tokens
    assert len(names) == 8 and names[0] == "helios.test."
    assert len([r for r in g_server.faults.requests if "/rrsets" in r.path]) == 4

    base = f"{g_server.api_endpoint}/dns/v1/projects/{PROJECT}/managedZones/helios-test/rrsets"
    status, body = http("GET", f"{base}?name=n0.helios.test.")
    assert status == 200 and [r["type"] for r in body["rrsets"]] == ["A", "AAAA"]
    status, body = http("GET", f"{base}?name=n0.helios.test.&type=AAAA")
    assert [r["rrdatas"] for r in body["rrsets"]] == [["::1"]]
    status, body = http("GET", f"{base}?maxResults=3")
    assert len(body["rrsets"]) == 3 and "nextPageToken" in body
    status, body = http("GET", f"{base}?maxResults=3&pageToken={body['nextPageToken']}")
    assert len(body["rrsets"]) == 3
    status, body = http("GET", f"{base}?type=A")
    assert status == 400  # type needs name
    status, body = http("GET", f"{g_server.api_endpoint}/dns/v1/projects/other/managedZones")
    assert status == 404 and body["error"]["errors"][0]["reason"] == "notFound"


def test_google_faults_map_to_sdk_exceptions(gzone: Any, g_server: GoogleDnsStandIn) -> None:
    faults = g_server.faults
    faults.inject(status=500)
    with pytest.raises(gexc.InternalServerError):
        gzone.reload()
    faults.inject(status=429, retry_after=3)
    with pytest.raises(gexc.TooManyRequests) as rate:
        gzone.reload()
    assert rate.value.response is not None
    assert rate.value.response.headers["Retry-After"] == "3"
    faults.inject(status=404, path_contains="/changes/")
    change = gzone.changes()
    change.name = "1"
    with pytest.raises(gexc.NotFound):
        change.reload()
    faults.inject(malformed=True)
    with pytest.raises(ValueError):  # requests' JSONDecodeError, not a google exception
        gzone.reload()
    faults.inject(hang=True)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):  # transport errors are not wrapped
        gzone.reload()
    assert time.monotonic() - started < 3
    faults.clear()  # the hung request is answered now, to a client that left
    gzone.reload()
    deadline = time.monotonic() + 5
    while len(faults.requests) < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    # zone create, 500, 429, 404, malformed (200), the hung one (answered late), the reload
    assert [r.status for r in faults.requests] == [200, 500, 429, 404, 200, 200, 200]


# --- Route53 on moto --------------------------------------------------------------------------


def test_route53_records_through_boto3(r53: Any, moto: MotoRoute53) -> None:
    zone = r53.create_hosted_zone(Name="helios.test.", CallerReference="t1")["HostedZone"]
    rrset = {
        "Name": "db.helios.test.",
        "Type": "A",
        "TTL": 60,
        "ResourceRecords": [{"Value": "127.0.0.1"}],
    }
    r53.change_resource_record_sets(
        HostedZoneId=zone["Id"],
        ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": rrset}]},
    )
    assert moto.lookup("db.helios.test", "A") == (60, ["127.0.0.1"])
    rrset["ResourceRecords"] = [{"Value": "127.0.0.2"}]
    r53.change_resource_record_sets(
        HostedZoneId=zone["Id"],
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrset}]},
    )
    assert moto.lookup("DB.helios.test.", "A") == (60, ["127.0.0.2"])
    assert moto.lookup("db.helios.test.", "AAAA") is None
    r53.change_resource_record_sets(
        HostedZoneId=zone["Id"],
        ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": rrset}]},
    )
    assert moto.lookup("db.helios.test.", "A") is None
    moto.reset()
    assert r53.list_hosted_zones()["HostedZones"] == []


# --- the authoritative DNS server -------------------------------------------------------------


def _ask(port: int, name: str, rtype: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rtype), "127.0.0.1", port=port, timeout=2)


async def test_nameservers_answer_for_each_provider(
    cf: cloudflare.Cloudflare,
    cf_server: CloudflareStandIn,
    zone_id: str,
    gzone: Any,
    g_server: GoogleDnsStandIn,
    r53: Any,
    moto: MotoRoute53,
) -> None:
    cf.dns.records.create(zone_id=zone_id, name="db", type="A", content="127.0.0.1", ttl=60)
    change = gzone.changes()
    change.add_record_set(gzone.resource_record_set("db.helios.test.", "A", 60, ["127.0.0.2"]))
    change.create()
    hz = r53.create_hosted_zone(Name="helios.test.", CallerReference="ns")["HostedZone"]["Id"]
    rrset = {
        "Name": "db.helios.test.",
        "Type": "A",
        "TTL": 60,
        "ResourceRecords": [{"Value": "127.0.0.3"}],
    }
    r53.change_resource_record_sets(
        HostedZoneId=hz, ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": rrset}]}
    )
    expected = {
        cf_server.lookup: "127.0.0.1",
        g_server.lookup: "127.0.0.2",
        moto.lookup: "127.0.0.3",
    }
    for lookup, address in expected.items():
        with AuthoritativeServer(lookup) as ns:
            query = dns.message.make_query("db.helios.test.", "A")
            reply = await dns.asyncquery.udp(query, "127.0.0.1", port=ns.port, timeout=2)
            assert reply.rcode() == dns.rcode.NOERROR
            assert reply.flags & dns.flags.AA
            assert [(rr.ttl, [r.to_text() for r in rr]) for rr in reply.answer] == [(60, [address])]
            assert _ask(ns.port, "nope.helios.test.", "A").rcode() == dns.rcode.NXDOMAIN


def test_nameserver_cname_chain_nodata_and_servfail(
    cf: cloudflare.Cloudflare, cf_server: CloudflareStandIn, zone_id: str
) -> None:
    cf.dns.records.create(zone_id=zone_id, name="db", type="A", content="127.0.0.1", ttl=60)
    cf.dns.records.create(
        zone_id=zone_id, name="www", type="CNAME", content="db.helios.test", ttl=120
    )
    with AuthoritativeServer(cf_server.lookup) as ns:
        reply = _ask(ns.port, "WWW.helios.test.", "A")
        assert [rr.to_text() for rr in reply.answer] == [
            "WWW.helios.test. 120 IN CNAME db.helios.test.",
            "db.helios.test. 60 IN A 127.0.0.1",
        ]
        nodata = _ask(ns.port, "db.helios.test.", "AAAA")
        assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
        assert nodata.flags & dns.flags.AA

    def broken(name: str, rtype: str) -> tuple[int, list[str]] | None:
        raise RuntimeError("backend down")

    with AuthoritativeServer(broken) as ns:
        assert _ask(ns.port, "db.helios.test.", "A").rcode() == dns.rcode.SERVFAIL
