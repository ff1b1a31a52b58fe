"""The daemon follows the business continuity plan end to end on the sandbox: a lost primary is
classified (Level 2, partial outage, VP Engineering), the plan's audiences are told on their
channels (Slack failing -> Discord), PagerDuty and Statuspage follow the incident, the incident's
report is written with the Appendix C checklist, and a scheduled drill runs and passes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from daemon_helpers import daemon

from orchestrator.config import Config, load_config
from orchestrator.drillrecord import DrillStore
from orchestrator.incidents import Incident, IncidentStore
from orchestrator.sandbox.standins.receiver import NotifyReceiver

pytestmark = pytest.mark.sandbox
SP_KEY = "sandbox-statuspage-key"
PAGE = "helios-test-page"


def bcp_config(sb: Any, receiver: NotifyReceiver, tmp: Path, **extra: Any) -> Config:
    """The sandbox config with fast ticks, automatic failover, and every channel on
    ``receiver`` (the webhook URLs and keys as secret files, as in production)."""
    data = yaml.safe_load(Path(sb.config_path()).read_text())
    data["probes"].update(
        {"interval": 0.5, "timeout": 0.3, "failure_threshold": 3, "recovery_threshold": 3}
    )
    data["listen"]["port"] = 0
    data.setdefault("failover", {})["automatic"] = True
    secrets = {
        "slack.url": receiver.slack_url("T1/B1/secret-slack-hook"),
        "discord.url": receiver.discord_url("42/secret-discord-hook"),
        "pd.key": "p" * 32,
        "sp.key": SP_KEY,
    }
    for name, value in secrets.items():
        (tmp / name).write_text(value + "\n")
    quick = {"timeout": "2s", "retry": {"attempts": 2, "initial_delay": "100ms"}}
    data["notifications"] = {
        "monitoring_period": "2s",
        "channels": [
            {
                "name": "slack",
                "kind": "slack",
                "webhook_url": f"file:{tmp / 'slack.url'}",
                "backup": "discord",
                **quick,
            },
            {
                "name": "discord",
                "kind": "discord",
                "webhook_url": f"file:{tmp / 'discord.url'}",
                **quick,
            },
            {
                "name": "pagerduty",
                "kind": "pagerduty",
                "routing_key": f"file:{tmp / 'pd.key'}",
                "url": receiver.pagerduty_url,
                **quick,
            },
            {
                "name": "statuspage",
                "kind": "statuspage",
                "api_key": f"file:{tmp / 'sp.key'}",
                "page_id": PAGE,
                "base_url": receiver.statuspage_base,
                **quick,
            },
            {"name": "execs", "kind": "webhook", "url": receiver.webhook_url("execs"), **quick},
        ],
        "audiences": [
            {"name": "bcp-team", "channels": ["slack", "pagerduty"]},
            {"name": "engineering", "channels": ["slack"], "update_interval": "1h"},
            {"name": "executives", "channels": ["execs"]},
            {"name": "customers", "channels": ["statuspage"], "template": "customer"},
        ],
    }
    data.update(extra)
    path = tmp / "bcp.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


async def get(port: int | None, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


async def wait_incident(cfg: Config, pred: Any, timeout: float) -> Incident:
    store = IncidentStore(cfg.state_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for inc in await asyncio.to_thread(store.all):
            if pred(inc):
                return inc
        await asyncio.sleep(0.2)
    found = [(i.id, i.status, [e["event"] for e in i.timeline]) for i in store.all()]
    raise AssertionError(f"no incident matched within {timeout}s: {found}")


async def test_lost_primary_is_classified_notified_and_reported(
    fresh_sandbox: Any, tmp_path: Path
) -> None:
    sb = fresh_sandbox
    receiver = NotifyReceiver(statuspage_key=SP_KEY)
    receiver.start()
    try:
        receiver.faults.inject(status=500, count=None, path_contains="/slack/")
        cfg = bcp_config(sb, receiver, tmp_path)
        async with daemon(cfg) as rec:
            status = (await get(rec.port, "/v1/status")).json()
            assert status["bcp"]["level"] == 0 and status["bcp"]["authority"] == "Automated"
            await asyncio.to_thread(sb.kill, "us-east")
            inc = await wait_incident(cfg, lambda i: i.when("resolved") is not None, 90)
            metrics = (await get(rec.port, "/metrics")).text
    finally:
        receiver.stop()

    # Classification: the primary lost while replicas answer is the plan's partial outage.
    assert inc.status == "failed_over" and inc.new_primary == "us-west-1"
    assert 2 in [lv["level"] for lv in inc.levels]
    level2 = next(lv for lv in inc.levels if lv["level"] == 2)
    assert level2["authority"] == "VP Engineering"

    # Slack failed (500) on every message; each reached Discord instead, same text.
    slack = [r for r in inc.notifications if r["channel"] == "slack"]
    assert slack and all(not r["ok"] and r["via"] == "discord" for r in slack)
    slack_texts = [r["json"]["text"] for r in receiver.recorded("slack")]
    discord_texts = [
        r["json"]["content"] for r in receiver.recorded("discord") if r["status"] < 300
    ]
    assert slack_texts and all(t in discord_texts for t in slack_texts)
    assert any(inc.id in t and "Level 2" in t for t in discord_texts)

    # PagerDuty: one alert for the incident, triggered then resolved under one dedup key.
    key = f"helios-{cfg.service}-{inc.id}"
    alerts = receiver.pagerduty_alerts()
    assert key in alerts, alerts.keys()
    actions = alerts[key]["actions"]
    assert actions[0] == "trigger" and actions[-1] == "resolve"
    pd_keys = {r["json"]["dedup_key"] for r in receiver.recorded("pagerduty")}
    assert pd_keys == {key}

    # Statuspage: one public incident whose status follows ours, ending resolved.
    sp = receiver.statuspage_incidents(PAGE)
    assert len(sp) == 1
    statuses = [u["status"] for u in reversed(sp[0]["incident_updates"])]
    order = ["investigating", "identified", "monitoring", "resolved"]
    assert statuses == sorted(statuses, key=order.index), statuses
    assert "monitoring" in statuses and statuses[-1] == "resolved"
    assert all("Level" not in u["body"] for u in sp[0]["incident_updates"])  # customers' words
    # Executives (Level 3+) were never paged for a Level 2 outage.
    assert receiver.recorded("webhook") == []

    # The report, with the plan's checklist ticked where the orchestrator acted.
    reports = Path(cfg.state_dir) / "reports"
    for ext in ("md", "json", "html"):
        assert (reports / f"{inc.id}.{ext}").is_file()
    doc = json.loads((reports / f"{inc.id}.json").read_text())
    ticked = {
        item["item"]: item["done"] for section in doc["checklist"] for item in section["items"]
    }
    for done in (
        "Incident confirmed",
        "BCP team notified",
        "Level determined",
        "Customer communication",
        "Verification complete",
        "Services restored",
    ):
        assert ticked[done] is True, done
    for people in ("Resource coordination", "Lessons learned meeting", "Training needs assessed"):
        assert ticked[people] is False, people
    assert "Lessons learned" in (reports / f"{inc.id}.md").read_text()

    # Metrics: sent/failed per channel, and the level gauge.
    assert 'helios_notifications_failed_total{channel="slack"' in metrics
    assert 'helios_notifications_sent_total{channel="discord"' in metrics
    assert "helios_incident_level" in metrics and "helios_activation_level" in metrics
    # The secrets never reached the report or the incident record.
    text = (reports / f"{inc.id}.html").read_text() + json.dumps(inc.notifications)
    for secret in ("secret-slack-hook", "secret-discord-hook", SP_KEY, "p" * 32):
        assert secret not in text


async def test_daemon_runs_a_scheduled_drill(fresh_sandbox: Any, tmp_path: Path) -> None:
    sb = fresh_sandbox
    receiver = NotifyReceiver(statuspage_key=SP_KEY)
    receiver.start()
    try:
        base = yaml.safe_load(Path(sb.config_path()).read_text())
        drill = {**base["drill"], "schedule": "* * * * *", "settle": "30s"}
        cfg = bcp_config(sb, receiver, tmp_path, drill=drill)
        # The schedule was first seen two minutes ago: the drill is due at once.
        Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.state_dir) / "drill-schedule.json").write_text(
            json.dumps({"since": time.time() - 120, "last_attempt": None})
        )
        store = DrillStore(cfg.state_dir)
        async with daemon(cfg) as rec:
            deadline = time.monotonic() + 150
            record = None
            while time.monotonic() < deadline and record is None:
                done = [r for r in await asyncio.to_thread(store.all) if r.get("finished_at")]
                record = done[-1] if done else None
                await asyncio.sleep(0.5)
            assert record is not None, "no scheduled drill finished"
            metrics = (await get(rec.port, "/metrics")).text
            status = (await get(rec.port, "/v1/status")).json()
    finally:
        receiver.stop()
    assert record["trigger"] == "scheduled"
    assert record["result"] == "passed", record["reasons"]
    assert len(record["legs"]) == 2 and all(leg["passed"] for leg in record["legs"])
    assert record["legs"][1]["to_region"] == "us-east"  # failed back
    assert 'helios_drill_last_result{result="passed"} 1.0' in metrics
    assert status["drills"]["last"]["id"] == record["id"]
    # The drill was announced to the BCP team (Slack), never to customers.
    assert any(
        record["id"] in (r["json"] or {}).get("text", "") for r in receiver.recorded("slack")
    )
    assert receiver.statuspage_incidents(PAGE) == []
    # Its report and its legs' incident reports were written by the daemon.
    reports_dir = Path(cfg.state_dir) / "reports"
    assert (reports_dir / f"{record['id']}.html").is_file()
    for leg in record["legs"]:
        assert (reports_dir / f"{leg['incident_id']}.md").is_file()
    # No incident was opened by the daemon for the drill's own switchovers.
    assert all(i.drill_id == record["id"] for i in IncidentStore(cfg.state_dir).all())
