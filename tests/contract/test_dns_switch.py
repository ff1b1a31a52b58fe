"""Multi-provider DNS switch scenarios against real protocol endpoints.

Route53: moto in server mode behind a fault-injecting proxy; Cloudflare and Google Cloud DNS: local
stand-ins driven through the official SDKs; one authoritative UDP name server per provider for
verification.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import cloudflare
import pytest
import pytest_asyncio
import yaml
from prometheus_client import CollectorRegistry

from orchestrator import dnsstate
from orchestrator.cli import main
from orchestrator.config import Config, parse_config
from orchestrator.dnsplan import SwitchOutcome
from orchestrator.dnsruntime import open_switcher, target_of_region
from orchestrator.errors import UnsafePlan
from orchestrator.sandbox.standins.cloudflare import CloudflareStandIn
from orchestrator.sandbox.standins.dnsserver import AuthoritativeServer
from orchestrator.sandbox.standins.gcloud import GoogleDnsStandIn
from orchestrator.sandbox.standins.r53proxy import Route53FaultProxy
from orchestrator.sandbox.standins.route53 import MotoRoute53

NAME = "db.helios.test."
TOKEN = "cf-test-token-123"
EAST, WEST = "127.0.0.1", "127.0.0.2"


@dataclass
class World:
    moto: MotoRoute53
    proxy: Route53FaultProxy
    cf: CloudflareStandIn
    gcp: GoogleDnsStandIn
    servers: dict[str, AuthoritativeServer]
    zone_id: str
    cf_zone: str
    tmp: Path

    def config(self, **dns: Any) -> Config:
        retry = {"attempts": 3, "initial_delay": 0.2, "max_delay": 2}
        base = {"timeout": 1.0, "retry": retry, "propagation_timeout": 10, "poll_interval": 0.1}
        data: dict[str, Any] = {
            "service": "helios-test",
            "state_dir": str(self.tmp / "state"),
            "regions": [
                {
                    "name": r,
                    "priority": i + 1,
                    "nodes": [
                        {
                            "name": f"{r}-1",
                            "dsn": f"host=127.0.0.1 port={56000 + i}",
                            "dns_target": f"127.0.0.{i + 1}",
                        }
                    ],
                }
                for i, r in enumerate(["us-east", "us-west", "eu"])
            ],
            "dns": {
                "records": [{"name": NAME, "type": "A", "ttl": 60}],
                "require": "all",
                "switch_timeout": 8,
                "providers": [
                    {
                        "name": "route53",
                        "kind": "route53",
                        "primary": True,
                        "zone_id": self.zone_id,
                        "endpoint_url": self.proxy.endpoint_url,
                        "access_key_id": "env:HELIOS_TEST_AWS_KEY",
                        "secret_access_key": "env:HELIOS_TEST_AWS_SECRET",
                        **base,
                    },
                    {
                        "name": "cloudflare",
                        "kind": "cloudflare",
                        "zone_id": self.cf_zone,
                        "api_token": "env:HELIOS_TEST_CF_TOKEN",
                        "base_url": self.cf.base_url,
                        **base,
                    },
                    {
                        "name": "gcloud",
                        "kind": "gcloud",
                        "project": "helios-proj",
                        "managed_zone": "helios-test",
                        "api_endpoint": self.gcp.api_endpoint,
                        "anonymous": True,
                        **base,
                    },
                ],
                "nameservers": [
                    {"provider": p, "address": "127.0.0.1", "port": s.port}
                    for p, s in self.servers.items()
                ],
                **dns,
            },
        }
        return parse_config(data)

    def write_config(self, **dns: Any) -> Path:
        cfg = self.config(**dns)
        path = self.tmp / "helios.yaml"
        path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
        # secrets were resolved by the dump: put the references back
        data = yaml.safe_load(path.read_text())
        for p in data["dns"]["providers"]:
            if p["kind"] == "route53":
                p["access_key_id"] = "env:HELIOS_TEST_AWS_KEY"
                p["secret_access_key"] = "env:HELIOS_TEST_AWS_SECRET"
            if p["kind"] == "cloudflare":
                p["api_token"] = "env:HELIOS_TEST_CF_TOKEN"
        path.write_text(yaml.safe_dump(data))
        return path

    def served(self) -> dict[str, tuple[str, ...]]:
        """What each provider's own backend stores for the name (bypassing our adapters)."""
        r53 = self.moto.lookup(NAME, "A")
        cf = self.cf.lookup(NAME, "A")
        gcp = self.gcp.lookup(NAME, "A")
        return {
            "route53": tuple(sorted(r53[1])) if r53 else (),
            "cloudflare": tuple(sorted(cf[1])) if cf else (),
            "gcloud": tuple(sorted(gcp[1])) if gcp else (),
        }


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOS_TEST_AWS_KEY", "testing")
    monkeypatch.setenv("HELIOS_TEST_AWS_SECRET", "testing")
    monkeypatch.setenv("HELIOS_TEST_CF_TOKEN", TOKEN)
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")


@contextlib.contextmanager
def _world(tmp: Path) -> Iterator[World]:
    with contextlib.ExitStack() as stack:
        moto = MotoRoute53()
        moto.start()
        stack.callback(moto.stop)
        moto.reset()  # moto's backends are process-global: start from an empty account
        r53 = boto3.client(
            "route53",
            endpoint_url=moto.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        zone_id = r53.create_hosted_zone(Name="helios.test.", CallerReference=str(time.time()))[
            "HostedZone"
        ]["Id"].split("/")[-1]
        proxy = Route53FaultProxy(moto.endpoint_url)
        proxy.start()
        stack.callback(proxy.stop)
        cf = CloudflareStandIn(TOKEN)
        cf.start()
        stack.callback(cf.stop)
        cf_zone = cf.add_zone("helios.test")
        gcp = GoogleDnsStandIn("helios-proj", polls_until_done=1)
        gcp.start()
        stack.callback(gcp.stop)
        gcp.add_zone("helios-test", "helios.test.")
        servers = {}
        for name, lookup in (
            ("route53", moto.lookup),
            ("cloudflare", cf.lookup),
            ("gcloud", gcp.lookup),
        ):
            srv = AuthoritativeServer(lookup)
            srv.start()
            stack.callback(srv.stop)
            servers[name] = srv
        yield World(moto, proxy, cf, gcp, servers, zone_id, cf_zone, tmp)


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    with _world(tmp_path) as w:
        # start from "every provider points at us-east"
        async with open_switcher(w.config()) as sw:
            plan = await sw.plan("us-east", EAST)
            report = await sw.apply(plan)
            assert report.outcome is SwitchOutcome.SUCCESS, report
        assert w.served() == {"route53": (EAST,), "cloudflare": (EAST,), "gcloud": (EAST,)}
        for f in (w.proxy.faults, w.cf.faults, w.gcp.faults):
            f.reset_log()
        yield w


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


async def test_switch_succeeds_on_all_three_and_is_verified(world: World) -> None:
    reg = CollectorRegistry()
    async with open_switcher(world.config(), reg) as sw:
        plan = await sw.plan("us-west", WEST)
        assert [c.kind.value for c in plan.changes] == ["update"] * 3
        report = await sw.apply(plan)
        answers = await sw.verify(plan, timeout=5)
    assert report.outcome is SwitchOutcome.SUCCESS
    assert all(r.ok and r.changed == 1 for r in report.results)
    assert world.served() == {"route53": (WEST,), "cloudflare": (WEST,), "gcloud": (WEST,)}
    sources = {(a.provider, a.source.split()[0]) for a in answers}
    assert sources == {(p, s) for p in ("route53", "cloudflare", "gcloud") for s in ("api", "ns")}
    assert all(a.ok and a.values == (WEST,) and a.matched_after is not None for a in answers)
    for p in ("route53", "cloudflare", "gcloud"):
        assert sample(reg, "helios_dns_provider_up", provider=p) == 1.0
        assert (sample(reg, "helios_dns_last_change_timestamp_seconds", provider=p) or 0) > 0
        assert sample(reg, "helios_dns_change_duration_seconds_count", provider=p) == 1.0
    assert sample(reg, "helios_dns_switches_total", outcome="success") == 1.0


@pytest.mark.parametrize("fault", ["5xx", "hang"])
async def test_route53_down_cloudflare_completes_then_reconciled(world: World, fault: str) -> None:
    if fault == "5xx":
        world.proxy.faults.inject(status=503, count=None)
    else:
        world.proxy.faults.inject(hang=True, count=None)
    reg = CollectorRegistry()
    cfg = world.config(require="any", switch_timeout=4)
    async with open_switcher(cfg, reg) as sw:
        t0 = time.monotonic()
        plan = await sw.plan("us-west", WEST)
        assert "route53" in plan.unreadable
        report = await sw.apply(plan)
        elapsed = time.monotonic() - t0
        assert report.outcome is SwitchOutcome.PARTIAL
        r53 = report.result("route53")
        assert not r53.ok
        assert r53.error_class in {"transient", "timeout"}
        assert report.result("cloudflare").ok and report.result("gcloud").ok
        # reading (one call timeout per attempt) plus the switch budget bound the whole thing
        assert elapsed < 1.0 + 4 + 1.0  # one read attempt, then the switch budget
        assert report.result("cloudflare").live_after is not None
        assert report.result("cloudflare").live_after < 4
        assert sample(reg, "helios_dns_provider_up", provider="route53") == 0.0
        assert sample(reg, "helios_dns_provider_up", provider="cloudflare") == 1.0
        assert sw.degraded == {"route53"}  # the activation level reads this (Level 1)
        errors = sum(
            sample(reg, "helios_dns_errors_total", provider="route53", error_class=c) or 0
            for c in ("transient", "timeout")
        )
        assert errors >= 1
        assert world.served()["route53"] == (EAST,)
        assert world.served()["cloudflare"] == (WEST,)

        desired = dnsstate.DesiredState("us-west", WEST, plan.desired, time.time())
        world.proxy.faults.clear()  # Route53 recovers
        drifts = {d.provider: d.drifted for d in await sw.drift(desired)}
        assert drifts == {"route53": True, "cloudflare": False, "gcloud": False}
        assert sample(reg, "helios_dns_drift", provider="route53", record=NAME) == 1.0
        results = await sw.reconcile(desired)
        assert [(r.provider, r.ok) for r in results] == [("route53", True)]
        assert world.served()["route53"] == (WEST,)
        assert sample(reg, "helios_dns_provider_up", provider="route53") == 1.0
        assert sw.degraded == set()
        # repaired: the gauge is cleared
        assert sample(reg, "helios_dns_drift", provider="route53", record=NAME) == 0.0
        assert await sw.reconcile(desired) == []  # nothing left to fix
        assert sample(reg, "helios_dns_drift", provider="route53", record=NAME) == 0.0


async def test_throttling_is_retried_no_faster_than_retry_after(world: World) -> None:
    fault = world.cf.faults.inject(
        status=429, retry_after=1.5, count=1, methods={"POST", "PATCH", "PUT"}
    )
    async with open_switcher(world.config()) as sw:
        report = await sw.apply(await sw.plan("us-west", WEST))
    assert report.outcome is SwitchOutcome.SUCCESS
    assert fault.hits == 1
    assert report.result("cloudflare").attempts == 2
    log = world.cf.faults.requests
    throttled = next(i for i, r in enumerate(log) if r.status == 429)
    after = log[throttled + 1]
    assert after.at - log[throttled].at >= 1.5 - 0.05
    assert world.served()["cloudflare"] == (WEST,)


async def test_auth_error_fails_fast_with_a_clear_message(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELIOS_TEST_CF_TOKEN", "wrong-token")
    async with open_switcher(world.config()) as sw:
        t0 = time.monotonic()
        report = await sw.apply(await sw.plan("us-west", WEST))
        elapsed = time.monotonic() - t0
    cf = report.result("cloudflare")
    assert not cf.ok
    assert cf.error_class == "permanent"
    assert cf.attempts == 1
    assert "authentication" in (cf.error or "").lower()
    assert "wrong-token" not in (cf.error or "")
    assert elapsed < 3
    assert report.outcome is SwitchOutcome.FAILED  # require: all
    assert world.served()["route53"] == (WEST,)  # the other suppliers were not held back


def test_dry_run_changes_nothing(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    path = world.write_config()
    rc = main(["dns", "switch", "--to", "us-west", "--dry-run", "--config", str(path)])
    out = capsys.readouterr().out
    assert rc == 0
    for provider in ("route53", "cloudflare", "gcloud"):
        line = next(x for x in out.splitlines() if x.startswith(provider))
        assert EAST in line and WEST in line and "60" in line
    assert "dry run: nothing was changed" in out
    assert world.served() == {"route53": (EAST,), "cloudflare": (EAST,), "gcloud": (EAST,)}
    writes = [
        r
        for f in (world.proxy.faults, world.cf.faults, world.gcp.faults)
        for r in f.requests
        if r.method != "GET"
    ]
    assert writes == []
    assert not dnsstate.path_in(world.tmp / "state").exists()


def test_cli_switch_status_and_drift(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    path = world.write_config()
    assert main(["dns", "switch", "--to", "us-west", "--config", str(path), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["result"]["outcome"] == "success"
    assert {p["provider"] for p in doc["result"]["providers"] if p["ok"]} == {
        "route53",
        "cloudflare",
        "gcloud",
    }
    assert all(v["serves_new_answer"] for v in doc["result"]["verification"])
    desired = dnsstate.load(world.tmp / "state")
    assert desired is not None and desired.target == WEST

    assert main(["dns", "status", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("in sync") == 3

    # someone edits Cloudflare by hand: status reports the drift and exits 3
    world.cf.faults.reset_log()
    rec = next(r for r in world.cf.records(world.cf_zone) if r["name"] == NAME.rstrip("."))
    with cloudflare.Cloudflare(api_token=TOKEN, base_url=world.cf.base_url, max_retries=0) as c:
        c.dns.records.edit(
            dns_record_id=rec["id"],
            zone_id=world.cf_zone,
            name=rec["name"],
            type="A",
            ttl=60,
            content="127.0.0.9",
        )
    assert main(["dns", "status", "--config", str(path), "-o", "json"]) == 3
    rows = json.loads(capsys.readouterr().out)["records"]
    assert {r["provider"]: r["state"] for r in rows} == {
        "route53": "in sync",
        "cloudflare": "DRIFT",
        "gcloud": "in sync",
    }


def test_cli_partial_exit_code(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.proxy.faults.inject(status=500, count=None)
    path = world.write_config(require="any", switch_timeout=3)
    rc = main(["dns", "switch", "--to", "eu", "--config", str(path)])
    out = capsys.readouterr().out
    assert rc == 3
    assert "outcome: PARTIAL" in out
    assert "FAILED" in out


def test_change_to_a_record_not_owned_is_refused(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    path = world.write_config()
    rc = main(
        ["dns", "switch", "--to", "us-west", "--record", "www.helios.test", "--config", str(path)]
    )
    err = capsys.readouterr().err
    assert rc == 4
    assert "www.helios.test. is not a record this orchestrator owns" in err
    assert world.served()["cloudflare"] == (EAST,)


async def test_unowned_records_in_the_zone_are_untouched(world: World) -> None:
    with cloudflare.Cloudflare(api_token=TOKEN, base_url=world.cf.base_url, max_retries=0) as c:
        c.dns.records.create(
            zone_id=world.cf_zone, name="www.helios.test", type="A", ttl=300, content="127.0.0.50"
        )
    async with open_switcher(world.config()) as sw:
        await sw.apply(await sw.plan("us-west", WEST))
    www = [r for r in world.cf.records(world.cf_zone) if r["name"] == "www.helios.test"]
    assert [(r["content"], int(r["ttl"])) for r in www] == [("127.0.0.50", 300)]


async def test_more_records_than_max_changes_need_force(world: World) -> None:
    cfg = world.config(
        records=[
            {"name": NAME, "type": "A", "ttl": 60},
            {"name": "ro.helios.test.", "type": "A", "ttl": 60},
        ]
    )
    async with open_switcher(cfg) as sw:
        plan = await sw.plan("us-west", WEST)
        with pytest.raises(UnsafePlan, match="max_changes"):
            await sw.apply(plan)
        assert world.served()["route53"] == (EAST,)
        report = await sw.apply(plan, force=True)
    assert report.outcome is SwitchOutcome.SUCCESS


def test_target_of_region_and_unknown_region(world: World) -> None:
    cfg = world.config()
    assert target_of_region(cfg, "eu") == "127.0.0.3"
    rc = main(["dns", "switch", "--to", "mars", "--dry-run", "--config", str(world.write_config())])
    assert rc == 2


async def test_every_adapter_plans_a_diff_without_changing_anything(world: World) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator.providers.dns import ChangeKind, RecordSet
    from orchestrator.providers.dns_factory import build_dns_provider

    cfg = world.config()
    assert cfg.dns is not None
    want = RecordSet.make(NAME, "A", 30, [WEST])
    with ThreadPoolExecutor(4) as pool:
        for pcfg in cfg.dns.providers:
            provider = build_dns_provider(pcfg, pool)
            try:
                change = await provider.plan(want)
                same = await provider.plan(RecordSet.make(NAME, "A", 60, [EAST]))
            finally:
                await provider.aclose()
            assert change.provider == pcfg.name
            assert change.kind is ChangeKind.UPDATE
            assert change.before == RecordSet.make(NAME, "A", 60, [EAST])
            assert change.after == want
            assert same.kind is ChangeKind.NOOP
    assert world.served() == {"route53": (EAST,), "cloudflare": (EAST,), "gcloud": (EAST,)}
