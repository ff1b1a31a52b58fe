"""The embedded three-region sandbox against real PostgreSQL processes.

Every test leaves the shared sandbox healthy (the ``healthy`` fixture re-checks it after each
test): all regions running, ``us-east`` primary, both replicas streaming.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import cloudflare
import dns.flags
import dns.message
import dns.query
import psycopg
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import dns as gdns

from orchestrator.config import (
    CloudflareProvider,
    Config,
    GcloudProvider,
    Route53Provider,
    load_config,
)
from orchestrator.errors import SandboxError
from orchestrator.sandbox import Sandbox, SandboxStatus

pytestmark = pytest.mark.sandbox

REPLICAS = ("us-west", "eu")
WaitFor = Callable[..., Any]
Leftovers = Callable[[Path], list[tuple[int, str]]]


def connect(sb: Sandbox, region: str) -> psycopg.Connection[Any]:
    return psycopg.connect(sb.dsn(region), password=sb.password(), autocommit=True)


def query(sb: Sandbox, region: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with connect(sb, region) as conn:
        return conn.execute(sql, args or None).fetchall()


def streaming(sb: Sandbox, region: str) -> bool:
    rows = query(sb, region, "SELECT status FROM pg_stat_wal_receiver")
    return rows == [("streaming",)]


def states(status: SandboxStatus) -> dict[str, tuple[str, str]]:
    return {r.region: (r.state, r.role) for r in status.regions}


HEALTHY = {
    "us-east": ("running", "primary"),
    "us-west": ("running", "replica"),
    "eu": ("running", "replica"),
}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _secret(ref: Any) -> str:
    assert ref is not None
    return str(ref.get_secret_value())


def provider_answers(cfg: Config) -> dict[str, list[tuple[str, int, list[str]]]]:
    """Every A record set for db.helios.test. each provider's API serves, read through its SDK
    with the endpoints and secrets of the generated configuration."""
    assert cfg.dns is not None
    out: dict[str, list[tuple[str, int, list[str]]]] = {}
    for p in cfg.dns.providers:
        if isinstance(p, Route53Provider):
            client = boto3.session.Session(
                aws_access_key_id=_secret(p.access_key_id),
                aws_secret_access_key=_secret(p.secret_access_key),
                region_name=p.region,
            ).client("route53", endpoint_url=p.endpoint_url)
            try:
                sets = client.list_resource_record_sets(HostedZoneId=p.zone_id)
            finally:
                client.close()
            out[p.name] = [
                (s["Name"], int(s["TTL"]), [r["Value"] for r in s["ResourceRecords"]])
                for s in sets["ResourceRecordSets"]
                if s["Name"] == "db.helios.test." and s["Type"] == "A"
            ]
        elif isinstance(p, CloudflareProvider):
            with cloudflare.Cloudflare(
                api_token=_secret(p.api_token), base_url=p.base_url, max_retries=0, timeout=5
            ) as cf:
                recs = cf.dns.records.list(
                    zone_id=p.zone_id, name={"exact": "db.helios.test"}, type="A"
                )
                out[p.name] = [(f"{r.name}.", int(r.ttl), [str(r.content)]) for r in recs]
        elif isinstance(p, GcloudProvider):
            client = gdns.Client(
                project=p.project,
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": p.api_endpoint},
            )
            zone = client.zone(p.managed_zone)
            out[p.name] = [
                (r.name, int(r.ttl), list(r.rrdatas))
                for r in zone.list_resource_record_sets()
                if r.name == "db.helios.test." and r.record_type == "A"
            ]
            client.close()
    return out


def nameserver_answers(cfg: Config) -> dict[str, list[str]]:
    """What each provider's authoritative server answers (authoritatively) for db.helios.test A."""
    assert cfg.dns is not None
    out = {}
    for ns in cfg.dns.nameservers:
        query = dns.message.make_query("db.helios.test.", "A")
        reply = dns.query.udp(query, ns.address, port=ns.port, timeout=2)
        assert reply.flags & dns.flags.AA
        out[ns.provider] = [rr.to_text() for rrset in reply.answer for rr in rrset]
    return out


SEEDED = {
    name: [("db.helios.test.", 60, ["127.0.0.1"])] for name in ("route53", "cloudflare", "gcloud")
}
ANSWERS = {name: ["127.0.0.1"] for name in ("route53", "cloudflare", "gcloud")}


@pytest.fixture
def no_metadata_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")


def dns_pid(sb: Sandbox) -> int:
    meta = json.loads((sb.status().state_dir / "sandbox.json").read_text())
    pid = meta["dns"]["pid"]
    assert isinstance(pid, int) and alive(pid)
    return pid


def wait_healthy(sb: Sandbox, wait_for: WaitFor, timeout: float = 20.0) -> None:
    assert states(sb.status()) == HEALTHY
    for region in REPLICAS:
        wait_for(lambda r=region: streaming(sb, r), timeout, what=f"{region} streaming")
    wait_for(
        lambda: len(query(sb, "us-east", "SELECT 1 FROM pg_stat_replication")) == 2,
        timeout,
        what="two walsenders on us-east",
    )


@pytest.fixture
def sb(sandbox: Sandbox, wait_for: WaitFor) -> Iterator[Sandbox]:
    """The shared sandbox, restored to health after the test whatever happened."""
    try:
        yield sandbox
    finally:
        sandbox.up()  # resumes hung regions and starts stopped ones
        wait_healthy(sandbox, wait_for)


def test_up_gives_a_primary_and_two_streaming_replicas(sb: Sandbox, wait_for: WaitFor) -> None:
    status = sb.status()
    assert states(status) == HEALTHY
    assert [r.port for r in status.regions] == [sb.port(r) for r in sb.REGIONS]
    assert len({r.pid for r in status.regions}) == 3
    assert all(r.pid == sb.postmaster_pid(r.region) for r in status.regions)
    assert query(sb, "us-east", "SELECT pg_is_in_recovery()") == [(False,)]
    for region in REPLICAS:
        assert query(sb, region, "SELECT pg_is_in_recovery()") == [(True,)]
        wait_for(lambda r=region: streaming(sb, r), what=f"{region} streaming")
        assert query(sb, region, "SHOW cluster_name") == [(region,)]
    rows = wait_for(
        lambda: (
            r
            if len(
                r := query(
                    sb,
                    "us-east",
                    "SELECT application_name, state, slot_name "
                    "FROM pg_stat_replication s LEFT JOIN pg_replication_slots p "
                    "ON p.active_pid = s.pid ORDER BY 1",
                )
            )
            == 2
            else None
        ),
        what="two walsenders",
    )
    assert rows == [("eu", "streaming", "eu"), ("us-west", "streaming", "us_west")]


def test_layout_and_permissions(sb: Sandbox) -> None:
    state = sb.status().state_dir
    secret = state / "secrets" / "helios.password"
    assert (secret.stat().st_mode & 0o777) == 0o600
    assert secret.stat().st_uid == os.geteuid()
    assert secret.read_text().strip() == sb.password()
    for region in sb.REGIONS:
        data = sb.data_dir(region)
        assert (data.stat().st_mode & 0o777) == 0o700
        assert (state / "logs" / f"{region}.log").stat().st_size > 0
    assert ((state / "run").stat().st_mode & 0o777) == 0o700
    if os.geteuid() == 0:  # PostgreSQL must not run as root
        assert sb.data_dir("us-east").stat().st_uid != 0
        pid = sb.postmaster_pid("us-east")
        assert pid is not None
        assert Path(f"/proc/{pid}").stat().st_uid != 0
    assert (state / "sandbox.json").is_file()
    for region in sb.REGIONS:
        with pytest.raises(psycopg.OperationalError):  # scram: no password, no entry
            psycopg.connect(sb.dsn(region), password="wrong", connect_timeout=2).close()


def test_a_write_on_the_primary_reaches_both_replicas(sb: Sandbox, wait_for: WaitFor) -> None:
    token = uuid.uuid4().hex
    with connect(sb, "us-east") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS sandbox_probe (token text PRIMARY KEY)")
        conn.execute("INSERT INTO sandbox_probe VALUES (%s)", (token,))
    for region in REPLICAS:
        wait_for(
            lambda r=region: query(sb, r, "SELECT 1 FROM sandbox_probe WHERE token = %s", token),
            10,
            what=f"row on {region}",
        )


def test_up_is_idempotent(sb: Sandbox) -> None:
    before = sb.status()
    started = time.monotonic()
    after = sb.up()
    assert time.monotonic() - started < 5
    assert after == before
    assert Sandbox(before.state_dir).status() == before  # a fresh object reads the same state


def test_generated_config_loads(sb: Sandbox) -> None:
    cfg = load_config(sb.config_path())
    assert cfg.service == "helios-sandbox"
    assert [r.name for r in cfg.ordered_regions()] == list(sb.REGIONS)
    for region, target in zip(
        cfg.ordered_regions(), ("127.0.0.1", "127.0.0.2", "127.0.0.3"), strict=True
    ):
        (node,) = region.nodes
        assert node.name == f"{region.name}-1"
        assert node.dsn == sb.dsn(region.name)
        assert f"port={sb.port(region.name)}" in node.dsn
        assert node.dns_target == target
        assert node.password is not None
        assert node.password.get_secret_value() == sb.password()
    assert (cfg.probes.interval, cfg.probes.timeout) == (1.0, 0.8)
    assert (cfg.probes.failure_threshold, cfg.probes.recovery_threshold) == (3, 3)
    assert cfg.listen.address == "127.0.0.1"
    assert cfg.listen.port == sb.port("us-east") + 3
    assert cfg.state_dir == str(sb.status().state_dir / "orchestrator")
    with psycopg.connect(sb.dsn("us-east"), password=sb.password()) as conn:  # usable as is
        assert conn.execute("SELECT current_user").fetchone() == ("helios",)


def test_kill_and_start_a_replica(sb: Sandbox, wait_for: WaitFor) -> None:
    old = sb.postmaster_pid("us-west")
    sb.kill("us-west")
    status = sb.status()
    assert states(status)["us-west"] == ("stopped", "replica")
    assert status.regions[1].pid is None
    assert states(status)["eu"] == ("running", "replica")
    with pytest.raises(psycopg.OperationalError):
        connect(sb, "us-west").close()
    sb.kill("us-west")  # already down: nothing to do
    sb.start("us-west")
    new = sb.postmaster_pid("us-west")
    assert new is not None
    assert new != old
    wait_for(lambda: streaming(sb, "us-west"), what="us-west streaming again")


def test_kill_a_hung_region_then_start_cleans_up_leftovers(
    sb: Sandbox, wait_for: WaitFor, leftover_processes: Leftovers
) -> None:
    sb.hang("eu")
    sb.kill("eu")
    leftovers = [pid for pid, _ in leftover_processes(sb.data_dir("eu"))]
    assert leftovers  # stopped children outlive the postmaster and keep shared memory
    sb.start("eu")
    assert not any(alive(p) for p in leftovers)
    wait_for(lambda: streaming(sb, "eu"), what="eu streaming again")


def test_kill_and_start_the_primary(sb: Sandbox, wait_for: WaitFor) -> None:
    sb.kill("us-east")
    assert states(sb.status())["us-east"] == ("stopped", "primary")
    sb.start("us-east")
    assert query(sb, "us-east", "SELECT pg_is_in_recovery()") == [(False,)]
    for region in REPLICAS:
        wait_for(lambda r=region: streaming(sb, r), what=f"{region} back to streaming")


async def test_hang_freezes_the_whole_server_and_unhang_restores_it(
    sb: Sandbox, wait_for: WaitFor, leftover_processes: Leftovers
) -> None:
    idle = connect(sb, "eu")  # a backend that exists before the hang
    try:
        sb.hang("eu")
        status = sb.status()
        assert states(status)["eu"] == ("hung", "replica")
        assert status.regions[2].pid == sb.postmaster_pid("eu")
        for pid, _ in leftover_processes(sb.data_dir("eu")):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            assert state == "T", f"{pid} is {state}, not stopped"

        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            async with asyncio.timeout(8):
                await psycopg.AsyncConnection.connect(
                    sb.dsn("eu"), password=sb.password(), connect_timeout=2
                )
        assert 1.5 < time.monotonic() - started < 6  # the TCP accept works, the startup hangs

        done = threading.Event()

        def run_query() -> None:
            idle.execute("SELECT 1")
            done.set()

        worker = threading.Thread(target=run_query, daemon=True)
        worker.start()
        assert not done.wait(1.0), "an existing backend answered while hung"

        sb.unhang("eu")
        assert done.wait(10), "the existing backend did not resume"
        worker.join(5)
        assert states(sb.status())["eu"] == ("running", "replica")
        async with await psycopg.AsyncConnection.connect(
            sb.dsn("eu"), password=sb.password(), connect_timeout=2
        ) as conn:
            cur = await conn.execute("SELECT pg_is_in_recovery()")
            assert await cur.fetchone() == (True,)
    finally:
        sb.unhang("eu")
        idle.close()
    wait_for(lambda: streaming(sb, "eu"), 20, what="eu streaming after unhang")


def test_up_resumes_a_hung_region(sb: Sandbox) -> None:
    pid = sb.postmaster_pid("us-west")
    sb.hang("us-west")
    assert states(sb.status())["us-west"] == ("hung", "replica")
    sb.unhang("us-west")
    sb.unhang("us-west")  # twice is fine
    sb.hang("us-west")
    assert states(sb.up())["us-west"] == ("running", "replica")
    assert sb.postmaster_pid("us-west") == pid
    assert query(sb, "us-west", "SELECT 1") == [(1,)]


def test_stop_and_start(sb: Sandbox, wait_for: WaitFor) -> None:
    sb.stop("eu")
    assert states(sb.status())["eu"] == ("stopped", "replica")
    assert not (sb.data_dir("eu") / "postmaster.pid").exists()  # a clean shutdown
    sb.stop("eu")
    with pytest.raises(SandboxError, match="eu is not running"):
        sb.hang("eu")
    sb.start("eu")
    sb.start("eu")  # already running: nothing to do
    assert states(sb.status())["eu"] == ("running", "replica")
    wait_for(lambda: streaming(sb, "eu"), what="eu streaming after restart")


def test_down_then_up_keeps_the_data(
    sb: Sandbox, wait_for: WaitFor, leftover_processes: Leftovers
) -> None:
    token = uuid.uuid4().hex
    with connect(sb, "us-east") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS sandbox_probe (token text PRIMARY KEY)")
        conn.execute("INSERT INTO sandbox_probe VALUES (%s)", (token,))
    for region in REPLICAS:
        wait_for(
            lambda r=region: query(sb, r, "SELECT 1 FROM sandbox_probe WHERE token = %s", token),
            what=f"row on {region}",
        )
    before = {r.region: r.pid for r in sb.status().regions}
    dns_before = dns_pid(sb)
    status = sb.down()
    assert {r.state for r in status.regions} == {"stopped"}
    assert all(r.pid is None for r in status.regions)
    assert status.dns == "stopped"
    assert not alive(dns_before)
    assert leftover_processes(status.state_dir) == []  # the DNS stack included
    assert sb.down() == status  # twice is fine
    assert all(sb.data_dir(r).is_dir() for r in sb.REGIONS)
    status = sb.up()
    assert states(status) == HEALTHY
    assert status.dns == "running"
    assert dns_pid(sb) != dns_before
    assert nameserver_answers(load_config(sb.config_path())) == ANSWERS  # seeded again
    assert all(r.pid not in (None, before[r.region]) for r in status.regions)
    for region in sb.REGIONS:
        assert query(sb, region, "SELECT 1 FROM sandbox_probe WHERE token = %s", token) == [(1,)]


def test_unknown_region_names_the_valid_ones(sb: Sandbox) -> None:
    for call in (
        sb.kill,
        sb.stop,
        sb.start,
        sb.hang,
        sb.unhang,
        sb.port,
        sb.dsn,
        sb.postmaster_pid,
    ):
        with pytest.raises(SandboxError, match=r"unknown region 'mars'.*us-east, us-west, eu"):
            call("mars")


def test_a_port_held_by_something_else_is_refused(sb: Sandbox) -> None:
    other = Path(tempfile.mkdtemp(dir="/tmp"))
    other.chmod(0o755)
    try:
        clash = Sandbox(other / "sb", base_port=sb.port("us-east"))
        with pytest.raises(SandboxError, match=f"port {sb.port('us-east')} .*already in use"):
            clash.up()
        assert not (other / "sb" / "data" / "us-east").exists()
    finally:
        Sandbox(other / "sb").destroy()
        os.rmdir(other)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches to the postgres user")
def test_a_state_dir_the_postgres_user_cannot_reach_is_refused(sb: Sandbox) -> None:
    private = Path(tempfile.mkdtemp(dir="/tmp"))  # mode 0700, owned by root
    try:
        with pytest.raises(SandboxError, match=r"cannot enter .*--state-dir"):
            Sandbox(private / "sb", base_port=sb.port("us-east") + 10).up()
        assert not (private / "sb").exists()
    finally:
        os.rmdir(private)


def test_bad_ports_are_refused() -> None:
    with pytest.raises(SandboxError, match="5432"):
        Sandbox(Path("/tmp/unused"), base_port=5431)
    with pytest.raises(SandboxError, match="1024-65535"):
        Sandbox(Path("/tmp/unused"), base_port=65534)


def test_dns_stack_serves_the_record_on_every_provider(
    sb: Sandbox, no_metadata_server: None
) -> None:
    status = sb.status()
    assert status.dns == "running"
    cfg = load_config(sb.config_path())
    assert cfg.dns is not None
    assert [(r.name, r.type, r.ttl) for r in cfg.dns.records] == [("db.helios.test.", "A", 60)]
    assert cfg.dns.require == "all"
    assert [(p.name, p.kind, p.primary) for p in cfg.dns.providers] == [
        ("route53", "route53", True),
        ("cloudflare", "cloudflare", False),
        ("gcloud", "gcloud", False),
    ]
    for p in cfg.dns.providers:
        assert (p.timeout, p.propagation_timeout, p.poll_interval) == (5.0, 30.0, 0.5)
    base = sb.port("us-east")
    assert sorted(ns.port for ns in cfg.dns.nameservers) == [base + 13, base + 14, base + 15]
    assert provider_answers(cfg) == SEEDED
    assert nameserver_answers(cfg) == ANSWERS

    secrets = status.state_dir / "secrets"
    for name in ("cloudflare.token", "aws_access_key_id", "aws_secret_access_key"):
        assert ((secrets / name).stat().st_mode & 0o777) == 0o600
    assert len((secrets / "cloudflare.token").read_text().strip()) >= 32
    pid = dns_pid(sb)
    assert Path(f"/proc/{pid}").stat().st_uid == os.geteuid()  # the invoking user, not postgres
    assert os.readlink(f"/proc/{pid}/cwd") == str(status.state_dir)
    assert json.loads((status.state_dir / "dns.json").read_text())["pid"] == pid


def test_up_is_idempotent_for_dns(sb: Sandbox, no_metadata_server: None) -> None:
    cfg = load_config(sb.config_path())
    pid = dns_pid(sb)
    sb.up()
    again = load_config(sb.config_path())
    assert again.dns == cfg.dns  # same zones, endpoints and secrets
    assert dns_pid(sb) == pid
    assert provider_answers(again) == SEEDED  # no duplicate record
    assert cfg.dns is not None
    (r53,) = [p for p in cfg.dns.providers if isinstance(p, Route53Provider)]
    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("route53", endpoint_url=r53.endpoint_url)
    try:
        zones = client.list_hosted_zones()["HostedZones"]
    finally:
        client.close()
    assert [z["Name"] for z in zones] == ["helios.test."]  # no second zone
