"""DNS on the sandbox: the CLI switches all three providers, the daemon reconciles drift."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudflare
import httpx
import pytest
from daemon_helpers import daemon, fast_config

from orchestrator import dnsstate
from orchestrator.config import CloudflareProvider, load_config

pytestmark = pytest.mark.sandbox

NAME = "db.helios.test."
EXE = Path(sys.executable).with_name("orchestrator")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *args], capture_output=True, text=True, timeout=120, check=False
    )


def served(config: str) -> dict[str, str]:
    out = cli("dns", "status", "--config", config, "-o", "json")
    assert out.returncode in (0, 3), out.stderr
    return {r["provider"]: ",".join(r["serves"] or []) for r in json.loads(out.stdout)["records"]}


def cloudflare_edit(sandbox: Any, content: str) -> None:
    cfg = load_config(sandbox.config_path())
    assert cfg.dns is not None
    cf = next(p for p in cfg.dns.providers if isinstance(p, CloudflareProvider))
    token = cf.api_token.get_secret_value()
    with cloudflare.Cloudflare(api_token=token, base_url=cf.base_url, max_retries=0) as c:
        rec = next(iter(c.dns.records.list(zone_id=cf.zone_id, name={"exact": NAME.rstrip(".")})))
        c.dns.records.edit(
            dns_record_id=rec.id,
            zone_id=cf.zone_id,
            name=rec.name,
            type="A",
            ttl=60,
            content=content,
        )


async def test_cli_switch_and_daemon_reconciles_drift(sandbox: Any) -> None:
    config = str(sandbox.config_path())
    state_dir = load_config(config).state_dir
    assert served(config) == {
        "route53": "127.0.0.1",
        "cloudflare": "127.0.0.1",
        "gcloud": "127.0.0.1",
    }
    dry = cli("dns", "switch", "--to", "us-west", "--dry-run", "--config", config)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("127.0.0.1") >= 3 and "nothing was changed" in dry.stdout
    assert set(served(config).values()) == {"127.0.0.1"}
    try:
        switched = cli("dns", "switch", "--to", "us-west", "--config", config)
        assert switched.returncode == 0, switched.stdout + switched.stderr
        assert "outcome: SUCCESS" in switched.stdout
        # every change was logged with its before and after values
        changes = [json.loads(x) for x in switched.stderr.splitlines() if "DNS_CHANGE_APPLIED" in x]
        assert {c["provider"] for c in changes} == {"route53", "cloudflare", "gcloud"}
        assert all("127.0.0.1" in c["before"] and "127.0.0.2" in c["after"] for c in changes)
        assert set(served(config).values()) == {"127.0.0.2"}
        desired = dnsstate.load(state_dir)
        assert desired is not None and desired.region == "us-west"

        # Someone edits Cloudflare by hand; the running daemon puts it back.
        cfg = fast_config(sandbox, dns={"reconcile_interval": 0.5})
        async with daemon(cfg) as rec:
            await asyncio.to_thread(cloudflare_edit, sandbox, "127.0.0.99")
            deadline = 20.0
            t0 = time.monotonic()
            while time.monotonic() - t0 < deadline:
                # the CLI runs in a thread: the daemon shares this event loop
                now = await asyncio.to_thread(served, config)
                if now["cloudflare"] == "127.0.0.2":
                    break
                await asyncio.sleep(0.3)
            assert now["cloudflare"] == "127.0.0.2"
            # the daemon kept ticking on schedule meanwhile
            gaps = [b[0] - a[0] for a, b in zip(rec.ticks, rec.ticks[1:], strict=False)]
            assert gaps and max(gaps) < 1.5, gaps
            async with httpx.AsyncClient(timeout=5) as client:
                text = (await client.get(f"http://127.0.0.1:{rec.port}/metrics")).text
            for p in ("route53", "cloudflare", "gcloud"):
                assert f'helios_dns_provider_up{{provider="{p}"}} 1.0' in text
            assert f'helios_dns_drift{{provider="cloudflare",record="{NAME}"}} 0.0' in text
            assert 'helios_dns_last_change_timestamp_seconds{provider="cloudflare"}' in text
    finally:
        back = cli("dns", "switch", "--to", "us-east", "--config", config)
        assert back.returncode == 0, back.stdout + back.stderr
    assert set(served(config).values()) == {"127.0.0.1"}
