"""The control API and the CLI's ``--daemon`` mode on the real sandbox: the API plans what the
CLI plans, a dry run moves nothing, an executed switchover runs in the daemon (a second one is
refused while it runs), and the CLI drives switchover, drill and pause through the daemon."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from daemon_helpers import INTERVAL, daemon

from orchestrator.config import Config, load_config

pytestmark = pytest.mark.sandbox


def api_config(sb: Any, tmp: Path, token: str) -> Path:
    data = yaml.safe_load(Path(sb.config_path()).read_text())
    data["probes"].update(
        {"interval": INTERVAL, "timeout": 0.3, "failure_threshold": 3, "recovery_threshold": 3}
    )
    data["listen"]["port"] = 0
    data.setdefault("failover", {})["automatic"] = False
    data["notifications"] = {"channels": []}
    token_file = tmp / "api.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    data["api"] = {"tokens": [{"name": "oncall", "token": f"file:{token_file}"}]}
    path = tmp / "api.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def cli(*args: str, token: str | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HELIOS_API_TOKEN"}
    if token is not None:
        env["HELIOS_API_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.cli",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def same_plan(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["kind"] == b["kind"]
    assert a["old_primary"]["node"] == b["old_primary"]["node"]
    assert a["candidate"]["node"] == b["candidate"]["node"]
    assert [(s["name"], s["action"]) for s in a["steps"]] == [
        (s["name"], s["action"]) for s in b["steps"]
    ]
    assert [(c["provider"], c["new"]) for c in a["dns"]] == [
        (c["provider"], c["new"]) for c in b["dns"]
    ]


async def test_api_and_cli_drive_the_daemon(fresh_sandbox: Any, tmp_path: Path) -> None:
    sb = fresh_sandbox
    token = secrets.token_hex(24)
    path = api_config(sb, tmp_path, token)
    cfg: Config = load_config(path)
    auth = {"Authorization": f"Bearer {token}"}
    async with daemon(cfg) as rec, httpx.AsyncClient(timeout=30) as http:
        url = f"http://127.0.0.1:{rec.port}"

        # The API's dry-run plan is the CLI's.
        got = await http.get(f"{url}/v1/plan", params={"kind": "switchover", "to": "us-west"})
        assert got.status_code == 200, got.text
        api_plan = got.json()["plan"]
        code, out, err = await cli(
            "switchover", "-c", str(path), "--to", "us-west", "--dry-run", "-o", "json"
        )
        assert code == 0, err
        same_plan(api_plan, json.loads(out)["plan"])
        assert api_plan["candidate"]["node"] == "us-west-1"

        # A dry run through the API changes nothing.
        dry = await http.post(f"{url}/v1/switchover", json={"to": "us-west"}, headers=auth)
        assert dry.status_code == 200 and dry.json()["dry_run"] is True
        await asyncio.sleep(3 * INTERVAL)
        assert rec.last.primary == "us-east-1"

        # A stale checksum is refused; nothing moves.
        stale = await http.post(
            f"{url}/v1/switchover",
            json={"to": "us-west", "execute": True, "checksum": "0" * 16},
            headers=auth,
        )
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "STALE_PLAN"

        # Executed: 202 at once, the run goes on in the daemon; a second request is refused.
        run = await http.post(
            f"{url}/v1/switchover", json={"to": "us-west", "execute": True}, headers=auth
        )
        assert run.status_code == 202, run.text
        accepted = run.json()
        second = await http.post(
            f"{url}/v1/switchover", json={"to": "eu", "execute": True}, headers=auth
        )
        assert second.status_code == 409 and second.json()["error"]["code"] == "BUSY"
        inc = await poll(http, url + accepted["links"]["incident"], "closed_at", 60)
        assert inc["status"] == "failed_over", inc
        assert inc["new_primary"] == "us-west-1"
        assert any("requested by oncall through the control API" in n for n in inc["notes"])
        await rec.until(lambda a: a.primary == "us-west-1" and a.reason == "ALL_HEALTHY", 20)
        listed = (await http.get(f"{url}/v1/incidents")).json()["incidents"]
        assert listed[0]["id"] == accepted["incident"]

        # The CLI drives the daemon: switchover back, token from $HELIOS_API_TOKEN.
        code, out, err = await cli(
            "switchover", "-c", str(path), "--to", "us-east", "--daemon", url, token=token
        )
        assert code == 0, out + err
        assert "accepted by the daemon" in out and ": failed_over" in out
        await rec.until(lambda a: a.primary == "us-east-1" and a.reason == "ALL_HEALTHY", 20)

        # Without a token, the CLI gets the daemon's 401 as a usage error (exit 2).
        bare = tmp_path / "bare.yaml"
        doc = yaml.safe_load(path.read_text())
        doc.pop("api")
        bare.write_text(yaml.safe_dump(doc))
        code, out, err = await cli("pause", "-c", str(bare), "--daemon", url)
        assert code == 2 and "(401)" in err and token not in err

        # pause through the daemon: dry run, then for real (the config's token is used).
        code, out, _ = await cli("pause", "-c", str(path), "--daemon", url, "--dry-run")
        assert code == 0 and "would pause" in out
        controls = Path(cfg.state_dir) / "controls.json"
        assert not controls.exists() or not json.loads(controls.read_text())["paused"]
        code, out, _ = await cli("pause", "-c", str(path), "--daemon", url, "--reason", "test")
        assert code == 0
        assert json.loads(controls.read_text())["paused"]
        code, out, _ = await cli("resume", "-c", str(path), "--daemon", url)
        assert code == 0

        # A drill run by the daemon at the CLI's request: switchover to us-west and back.
        code, out, err = await cli(
            "drill", "-c", str(path), "--daemon", url, "--to", "us-west", "--failback", token=token
        )
        assert code == 0, out + err
        assert "accepted by the daemon" in out and "PASSED" in out.upper()
        await rec.until(lambda a: a.primary == "us-east-1", timeout=15)
    assert token not in out + err


async def poll(http: httpx.AsyncClient, url: str, field: str, timeout: float) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        doc: dict[str, Any] = (await http.get(url)).json()
        if doc.get(field) is not None:
            return doc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{url}: {field} not set within {timeout}s: {doc}")
        await asyncio.sleep(0.3)
