"""Notifications against the local receiver, which answers in each provider's documented shape
(Slack and Discord webhooks, PagerDuty Events API v2, Statuspage incidents, a JSON webhook)
and records every request."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import yaml
from prometheus_client import CollectorRegistry

from orchestrator.cli import main
from orchestrator.config import Config, parse_config
from orchestrator.errors import ConfigError
from orchestrator.incidents import Incident
from orchestrator.notify import Notifier
from orchestrator.observability.notify_metrics import NotifyMetrics
from orchestrator.sandbox.standins import NotifyReceiver

SERVICE = "helios-db"
SLACK_HOOK = "T0SECRET1/B0SECRET2/slackhooksecret42"
DISCORD_HOOK = "4242/discordhooksecret77"
ROUTING_KEY = "pdroutingkeysecret" + "0" * 14  # 32 characters
SP_KEY = "statuspage-api-key-secret"
WEBHOOK_TOKEN = "webhook-bearer-secret"
PAGE = "pg1"
SECRETS = (
    "slackhooksecret42",
    "discordhooksecret77",
    "T0SECRET1",
    ROUTING_KEY,
    SP_KEY,
    WEBHOOK_TOKEN,
)
T0 = 1_800_000_000.0
RECEIVER_MODULE = (sys.executable, "-m", "orchestrator.sandbox.standins.receiver")


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[NotifyReceiver]:
    r = NotifyReceiver(SP_KEY, webhook_token=WEBHOOK_TOKEN)
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch, receiver: NotifyReceiver) -> None:
    monkeypatch.setenv("T_SLACK_URL", receiver.slack_url(SLACK_HOOK))
    monkeypatch.setenv("T_DISCORD_URL", receiver.discord_url(DISCORD_HOOK))
    monkeypatch.setenv("T_PD_KEY", ROUTING_KEY)
    monkeypatch.setenv("T_SP_KEY", SP_KEY)
    monkeypatch.setenv("T_WEBHOOK_TOKEN", WEBHOOK_TOKEN)


def config_doc(receiver: NotifyReceiver, **notifications: Any) -> dict[str, Any]:
    retry = {"attempts": 3, "initial_delay": 0.01, "max_delay": 1.0}
    common = {"timeout": 2, "retry": retry}
    doc: dict[str, Any] = {
        "channels": [
            {
                "name": "slack",
                "kind": "slack",
                "webhook_url": "env:T_SLACK_URL",
                "backup": "discord",
                **common,
            },
            {"name": "discord", "kind": "discord", "webhook_url": "env:T_DISCORD_URL", **common},
            {
                "name": "pagerduty",
                "kind": "pagerduty",
                "routing_key": "env:T_PD_KEY",
                "url": receiver.pagerduty_url,
                **common,
            },
            {
                "name": "statuspage",
                "kind": "statuspage",
                "api_key": "env:T_SP_KEY",
                "page_id": PAGE,
                "base_url": receiver.statuspage_base,
                "component_ids": ["db"],
                **common,
            },
            {
                "name": "webhook",
                "kind": "webhook",
                "url": receiver.webhook_url("ops"),
                "token": "env:T_WEBHOOK_TOKEN",
                **common,
            },
        ],
        "audiences": [
            {"name": "bcp-team", "channels": ["slack", "pagerduty"]},
            {"name": "engineering", "channels": ["webhook"], "update_interval": "1h"},
            {"name": "executives", "channels": ["slack"]},
            {"name": "customers", "channels": ["statuspage"], "template": "customer"},
        ],
        **notifications,
    }
    return {
        "service": SERVICE,
        "regions": [
            {"name": "us-east", "priority": 1, "nodes": [{"name": "e1", "dsn": "host=a"}]},
            {"name": "us-west", "priority": 2, "nodes": [{"name": "w1", "dsn": "host=b"}]},
        ],
        "notifications": doc,
    }


class Sleeps:
    """Records the retry delays instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def make_notifier(
    receiver: NotifyReceiver, sleeps: Sleeps, registry: CollectorRegistry
) -> AsyncIterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(cfg: Config | None = None, **notifications: Any) -> Notifier:
        cfg = cfg or parse_config(config_doc(receiver, **notifications))
        n = Notifier(cfg, NotifyMetrics(registry), sleep=sleeps)
        made.append(n)
        return n

    yield make
    for n in made:
        await n.aclose()


def incident(level: int, inc_id: str = "inc-1", **changes: Any) -> Incident:
    inc = Incident(id=inc_id, opened_at=T0, primary="e1", region="us-east")
    inc.set_level(level, T0, "test", "Operations")
    inc.event("first_failure", T0)
    for k, v in changes.items():
        setattr(inc, k, v)
    return inc


def metric(registry: CollectorRegistry, name: str, channel: str, event: str) -> float:
    value = registry.get_sample_value(name, {"channel": channel, "event": event})
    return value or 0.0


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# --- backup channel ------------------------------------------------------------------------------


async def test_slack_500_the_same_message_reaches_discord(
    receiver: NotifyReceiver,
    make_notifier: Callable[..., Notifier],
    registry: CollectorRegistry,
    sleeps: Sleeps,
) -> None:
    receiver.faults.inject(status=500, count=None, path_contains="/slack/")
    inc = incident(1)
    records = await make_notifier().incident_event(inc, "opened", T0 + 5)

    slack = receiver.recorded("slack")
    assert [r["status"] for r in slack] == [500, 500, 500]  # the channel's three attempts
    assert len(sleeps.delays) == 2
    discord = receiver.delivered("discord")
    assert len(discord) == 1
    assert discord[0]["content"] == slack[0]["json"]["text"]
    assert discord[0]["content"].startswith(f"[{SERVICE}] Level 1")

    by_channel = {r["channel"]: r for r in records if r["audience"] == "bcp-team"}
    assert by_channel["slack"]["ok"] is False
    assert by_channel["slack"]["via"] == "discord"
    assert "HTTP 500" in by_channel["slack"]["detail"]
    assert by_channel["discord"]["ok"] is True
    assert by_channel["pagerduty"]["ok"] is True
    assert inc.notifications == records
    assert metric(registry, "helios_notifications_failed_total", "slack", "opened") == 1
    assert metric(registry, "helios_notifications_sent_total", "discord", "opened") == 1
    assert metric(registry, "helios_notifications_sent_total", "pagerduty", "opened") == 1


async def test_a_backup_already_routed_the_message_is_not_used_twice(
    receiver: NotifyReceiver, make_notifier: Callable[..., Notifier]
) -> None:
    receiver.faults.inject(status=500, count=None, path_contains="/slack/")
    doc = config_doc(receiver)
    doc["notifications"]["audiences"][0]["channels"] = ["slack", "discord"]
    inc = incident(1)
    records = await make_notifier(parse_config(doc)).incident_event(inc, "opened", T0)
    assert len(receiver.delivered("discord")) == 1
    slack = next(r for r in records if r["channel"] == "slack")
    assert slack["via"] is None
    assert "already gets this message" in slack["detail"]


# --- PagerDuty -----------------------------------------------------------------------------------


async def test_pagerduty_dedup_key_is_stable_per_incident(
    receiver: NotifyReceiver, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier()
    first = incident(1, "inc-a")
    for event in ("opened", "acknowledged", "resolved"):
        if event == "resolved":
            first.event("resolved", T0 + 60)
            first.close("recovered", T0 + 60)
        await notifier.incident_event(first, event, T0 + 60)
    second = incident(1, "inc-b")
    await notifier.incident_event(second, "opened", T0 + 70)

    events = receiver.delivered("pagerduty")
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve", "trigger"]
    keys = [e["dedup_key"] for e in events]
    assert keys[0] == keys[1] == keys[2] == f"helios-{SERVICE}-inc-a"
    assert keys[3] == f"helios-{SERVICE}-inc-b"
    assert "payload" in events[0] and "payload" not in events[1] and "payload" not in events[2]
    payload = events[0]["payload"]
    assert payload["severity"] == "warning"  # level 1
    assert payload["source"] == "e1"
    assert payload["summary"].startswith(f"[{SERVICE}] Level 1")
    assert events[0]["routing_key"] == ROUTING_KEY
    alerts = receiver.pagerduty_alerts()
    assert alerts[keys[0]]["actions"] == ["trigger", "acknowledge", "resolve"]
    assert alerts[keys[0]]["status"] == "resolved"
    assert alerts[keys[3]]["status"] == "triggered"


async def test_a_bad_routing_key_is_a_400_that_is_not_retried(
    receiver: NotifyReceiver,
    make_notifier: Callable[..., Notifier],
    monkeypatch: pytest.MonkeyPatch,
    sleeps: Sleeps,
) -> None:
    monkeypatch.setenv("T_PD_KEY", "short-key-secret")
    records = await make_notifier().incident_event(incident(1), "opened", T0)
    assert len(receiver.recorded("pagerduty")) == 1
    assert sleeps.delays == []
    pd = next(r for r in records if r["channel"] == "pagerduty")
    assert pd["ok"] is False
    assert pd["detail"].startswith("pagerduty (pagerduty): HTTP 400: Event object is invalid")
    assert "routing_key" in pd["detail"]
    assert "short-key-secret" not in pd["detail"]


# --- Statuspage ----------------------------------------------------------------------------------


async def test_statuspage_follows_the_incident_on_one_public_incident(
    receiver: NotifyReceiver, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier()
    inc = incident(2)
    await notifier.incident_event(inc, "opened", T0 + 1)  # investigating
    inc.event("confirmed", T0 + 3)
    await notifier.incident_event(inc, "status_changed", T0 + 3)  # identified
    for name in ("fenced", "promoted", "dns_switched", "first_verified_write"):
        inc.event(name, T0 + 20)
    inc.new_primary = "w1"
    inc.close("failed_over", T0 + 21)
    await notifier.incident_event(inc, "status_changed", T0 + 21)  # monitoring
    inc.event("resolved", T0 + 400)
    await notifier.incident_event(inc, "resolved", T0 + 400)  # resolved

    incidents = receiver.statuspage_incidents(PAGE)
    assert len(incidents) == 1
    public = incidents[0]
    assert inc.external == {"statuspage:statuspage": public["id"]}
    statuses = [u["status"] for u in reversed(public["incident_updates"])]
    assert statuses == ["investigating", "identified", "monitoring", "resolved"]
    assert public["status"] == "resolved"
    assert public["components"] == {"db": "operational"}
    assert public["name"] == "HeliosDB Service: database service interruption (us-east)"
    first_body = public["incident_updates"][-1]["body"]
    assert "Current Status: Investigating" in first_body
    assert "Updates: status.heliosdb.io" in first_body
    assert not first_body.startswith("Subject:")
    methods = [r["method"] for r in receiver.recorded("statuspage")]
    assert methods == ["POST", "PATCH", "PATCH", "PATCH"]
    assert all(
        r["headers"]["authorization"] == f"OAuth {SP_KEY}" for r in receiver.recorded("statuspage")
    )


async def test_a_wrong_statuspage_key_is_reported_without_the_key(
    receiver: NotifyReceiver,
    make_notifier: Callable[..., Notifier],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("T_SP_KEY", "wrong-statuspage-key-secret")
    inc = incident(2)
    records = await make_notifier().incident_event(inc, "opened", T0)
    sp = next(r for r in records if r["channel"] == "statuspage")
    assert sp["ok"] is False
    assert sp["detail"] == "statuspage (statuspage): HTTP 401: Could not authenticate"
    assert inc.external == {}


# --- retries ---------------------------------------------------------------------------------


async def test_429_retry_after_is_honoured(
    receiver: NotifyReceiver, make_notifier: Callable[..., Notifier], sleeps: Sleeps
) -> None:
    receiver.faults.inject(status=429, retry_after=0.7, path_contains="/slack/")
    records = await make_notifier().incident_event(incident(1), "opened", T0)
    assert sleeps.delays == [0.7]  # the hint, not the 0.01 s backoff
    assert [r["status"] for r in receiver.recorded("slack")] == [429, 200]
    assert receiver.recorded("discord") == []
    assert next(r for r in records if r["channel"] == "slack")["ok"] is True


async def test_discord_json_retry_after_is_honoured(
    receiver: NotifyReceiver, make_notifier: Callable[..., Notifier], sleeps: Sleeps
) -> None:
    receiver.faults.inject(status=429, retry_after=0.4, path_contains="/discord/")
    doc = config_doc(receiver)
    doc["notifications"]["audiences"][0]["channels"] = ["discord"]
    await make_notifier(parse_config(doc)).incident_event(incident(1), "opened", T0)
    first = receiver.recorded("discord")[0]
    assert first["status"] == 429
    assert sleeps.delays == [0.4]
    assert len(receiver.delivered("discord")) == 1


async def test_a_retry_after_beyond_max_delay_ends_the_retries(
    receiver: NotifyReceiver, make_notifier: Callable[..., Notifier], sleeps: Sleeps
) -> None:
    receiver.faults.inject(status=429, retry_after=600, path_contains="/slack/")
    records = await make_notifier().incident_event(incident(1), "opened", T0)
    assert len(receiver.recorded("slack")) == 1
    assert sleeps.delays == []
    slack = next(r for r in records if r["channel"] == "slack")
    assert "HTTP 429: rate_limited (retry after 600s)" in slack["detail"]
    assert slack["via"] == "discord"


async def test_a_400_is_not_retried_and_names_the_cause(
    receiver: NotifyReceiver, make_notifier: Callable[..., Notifier], sleeps: Sleeps
) -> None:
    receiver.faults.inject(status=400, path_contains="/slack/")
    records = await make_notifier().incident_event(incident(1), "opened", T0)
    assert len(receiver.recorded("slack")) == 1
    assert sleeps.delays == []
    slack = next(r for r in records if r["channel"] == "slack")
    assert slack["detail"].startswith("slack (slack): HTTP 400: invalid_payload")
    assert slack["via"] == "discord"


async def test_a_hung_channel_is_bounded_by_its_timeout(
    receiver: NotifyReceiver, make_notifier: Callable[..., Notifier], sleeps: Sleeps
) -> None:
    receiver.faults.inject(hang=True, count=None, path_contains="/slack/")
    doc = config_doc(receiver)
    doc["notifications"]["channels"][0].update(timeout=0.2, retry={"attempts": 2})
    try:
        records = await make_notifier(parse_config(doc)).incident_event(incident(1), "opened", T0)
    finally:
        receiver.faults.clear()
    slack = next(r for r in records if r["channel"] == "slack")
    assert slack["detail"].startswith("slack (slack): no answer within 0.2s")
    assert slack["via"] == "discord"
    assert len(sleeps.delays) == 1


async def test_an_unreachable_channel_is_recorded_not_raised(
    receiver: NotifyReceiver,
    make_notifier: Callable[..., Notifier],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("T_SLACK_URL", f"http://127.0.0.1:9/slack/{SLACK_HOOK}")
    monkeypatch.setenv("T_DISCORD_URL", f"http://127.0.0.1:9/discord/{DISCORD_HOOK}")
    records = await make_notifier().incident_event(incident(1), "opened", T0)
    failed = [r for r in records if not r["ok"]]
    assert {r["channel"] for r in failed} == {"slack", "discord"}
    assert all("cannot reach the service" in r["detail"] for r in failed)
    assert_no_secret(*(r["detail"] for r in records))


# --- periodic updates, drills ----------------------------------------------------------------


async def test_periodic_updates_go_to_due_audiences_only(
    receiver: NotifyReceiver, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier()
    inc = incident(2)
    await notifier.incident_event(inc, "opened", T0)
    assert await notifier.periodic(inc, T0 + 1800) == []
    records = await notifier.periodic(inc, T0 + 3600)
    assert {(r["audience"], r["channel"], r["event"]) for r in records} == {
        ("engineering", "webhook", "update")
    }
    docs = receiver.delivered("webhook")
    assert [d["event"] for d in docs] == ["opened", "update"]
    assert docs[1]["incident"]["id"] == "inc-1"
    assert docs[1]["level"] == 2
    assert docs[1]["status"] == "investigating"
    webhook = receiver.recorded("webhook")[0]
    assert webhook["headers"]["authorization"] == f"Bearer {WEBHOOK_TOKEN}"


async def test_drill_messages_are_marked_and_stay_internal(
    receiver: NotifyReceiver, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier()
    leg = incident(3, drill_id="drill-1")
    await notifier.incident_event(leg, "opened", T0)
    texts = [m["text"] for m in receiver.delivered("slack")]
    assert texts and all(t.startswith("[DRILL] ") for t in texts)
    assert receiver.recorded("statuspage") == []
    record: dict[str, Any] = {"id": "drill-1", "kind": "switchover", "result": "passed"}
    sent = await notifier.drill_event(record, "drill_finished", T0 + 100)
    assert [(r["audience"], r["channel"], r["ok"]) for r in sent] == [("bcp-team", "slack", True)]
    assert record["notifications"] == sent
    last = receiver.delivered("slack")[-1]["text"]
    assert last.startswith(f"[DRILL] [{SERVICE}] DR drill drill-1 passed")


async def test_without_channels_nothing_happens() -> None:
    cfg = parse_config({**config_doc_regions(), "notifications": {}})
    notifier = await Notifier.create(cfg)
    try:
        inc = incident(3)
        assert await notifier.incident_event(inc, "opened", T0) == []
        assert await notifier.periodic(inc, T0 + 86400) == []
        assert await notifier.drill_event({}, "drill_started", T0) == []
        assert await notifier.test() == []
        assert inc.notifications == []
    finally:
        await notifier.aclose()


def config_doc_regions() -> dict[str, Any]:
    return {
        "service": SERVICE,
        "regions": [{"name": "us-east", "priority": 1, "nodes": [{"name": "e1", "dsn": "host=a"}]}],
    }


# --- templates -------------------------------------------------------------------------------


async def test_an_operator_template_overrides_the_shipped_one(
    receiver: NotifyReceiver, make_notifier: Callable[..., Notifier], tmp_path: Path
) -> None:
    (tmp_path / "internal.txt.j2").write_text(
        "{% set title = 'custom title' %}Ops says: {{ incident.id }} is at {{ level_name }}\n"
    )
    notifier = make_notifier(templates_dir=str(tmp_path))
    inc = incident(2)
    await notifier.incident_event(inc, "opened", T0)
    assert [m["text"] for m in receiver.delivered("slack")] == ["Ops says: inc-1 is at Level 2"]
    assert receiver.delivered("pagerduty")[0]["payload"]["summary"] == "custom title"
    # the customer template was not overridden: the shipped one is used
    body = receiver.statuspage_incidents(PAGE)[0]["incident_updates"][0]["body"]
    assert "We apologize for any inconvenience." in body


@pytest.mark.parametrize(
    ("source", "line", "what"),
    [
        ("Hello\n{% if level %}\nno end\n", 3, "Unexpected end of template"),
        ("Hello\n\n{{ incident.idd }}\n", 3, "UndefinedError"),
        ("Hello\n{{ nope }}\n", 2, "'nope' is undefined"),
    ],
)
def test_a_broken_operator_template_is_a_config_error_naming_file_and_line(
    receiver: NotifyReceiver, tmp_path: Path, source: str, line: int, what: str
) -> None:
    path = tmp_path / "customer.txt.j2"
    path.write_text(source)
    cfg = parse_config(config_doc(receiver, templates_dir=str(tmp_path)))
    with pytest.raises(ConfigError) as info:
        Notifier(cfg)
    assert info.value.source == str(path)
    assert info.value.problems[0].startswith(f"line {line}: ")
    assert what in info.value.problems[0]


# --- the communication test (CLI) --------------------------------------------------------------


def write_config(tmp_path: Path, receiver: NotifyReceiver, **notifications: Any) -> Path:
    path = tmp_path / "helios.yaml"
    path.write_text(yaml.safe_dump(config_doc(receiver, **notifications)))
    return path


def test_notify_test_reports_the_failed_channel(
    receiver: NotifyReceiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver.faults.inject(status=503, count=None, path_contains="/discord/")
    path = write_config(tmp_path, receiver)
    with structlog.testing.capture_logs() as logs:
        code = main(["notify", "--test", "--config", str(path)])
    out, err = capsys.readouterr()
    assert code == 3
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "FAILED" in rows["discord"]
    assert "HTTP 503" in rows["discord"]
    for name in ("slack", "pagerduty", "statuspage", "webhook"):
        assert " ok " in rows[name], rows[name]
    assert "failed: discord" in out
    # each channel exercised on its own: Slack's backup was not used; no public incident
    assert len(receiver.delivered("slack")) == 1
    assert [r["method"] for r in receiver.recorded("statuspage")] == ["GET"]
    pd = receiver.delivered("pagerduty")
    assert [e["event_action"] for e in pd] == ["trigger", "resolve"]
    assert pd[0]["dedup_key"] == pd[1]["dedup_key"]
    assert pd[0]["dedup_key"].startswith(f"helios-{SERVICE}-test-")
    assert_no_secret(out, err, json.dumps(logs))


def test_notify_test_json_and_exit_codes(
    receiver: NotifyReceiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, receiver)
    assert (
        main(["notify", "--test", "--config", str(path), "--channel", "webhook", "-o", "json"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True
    assert [(c["name"], c["kind"], c["ok"]) for c in doc["channels"]] == [
        ("webhook", "webhook", True)
    ]

    receiver.faults.inject(status=500, count=None)
    assert main(["notify", "--test", "--config", str(path)]) == 1  # every channel failed
    out, err = capsys.readouterr()
    assert out.count("FAILED") == 5
    assert_no_secret(out, err)

    assert main(["notify", "--test", "--config", str(path), "--channel", "nope"]) == 2
    assert "no notification channel named 'nope'" in capsys.readouterr().err
    assert main(["notify", "--config", str(path)]) == 2
    assert "needs --test" in capsys.readouterr().err
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump(config_doc_regions()))
    assert main(["notify", "--test", "--config", str(empty)]) == 2
    assert "no notification channels" in capsys.readouterr().err


async def test_logs_never_show_a_secret(
    receiver: NotifyReceiver,
    make_notifier: Callable[..., Notifier],
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.faults.inject(status=500, count=None, path_contains="/slack/")
    caplog.set_level(logging.DEBUG)
    httpx_logger = logging.getLogger("httpx")
    level = httpx_logger.level
    httpx_logger.setLevel(logging.DEBUG)
    try:
        with structlog.testing.capture_logs() as logs:
            notifier = make_notifier()
            await notifier.incident_event(incident(3), "opened", T0)
            await notifier.test()
    finally:
        httpx_logger.setLevel(level)
    requests = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("POST http://127.0.0.1" in m for m in requests), requests
    assert any(log["reason"] == "NOTIFY_FAILED" for log in logs)
    assert_no_secret(*(r.getMessage() for r in caplog.records), json.dumps(logs))


# --- the receiver itself -----------------------------------------------------------------------


def test_the_receiver_answers_in_each_providers_shape(receiver: NotifyReceiver) -> None:
    with httpx.Client(timeout=5) as c:
        r = c.post(receiver.slack_url(), json={"blocks": []})
        assert (r.status_code, r.text) == (400, "invalid_payload")
        r = c.post(receiver.discord_url(), json={"username": "x"})
        assert r.status_code == 400
        assert r.json() == {"message": "Cannot send an empty message", "code": 50006}
        r = c.post(receiver.discord_url() + "?wait=true", json={"content": "hi"})
        assert r.status_code == 200 and r.json()["content"] == "hi"
        bad = {"routing_key": ROUTING_KEY, "event_action": "escalate"}
        r = c.post(receiver.pagerduty_url, json=bad)
        assert r.status_code == 400 and r.json()["status"] == "invalid event"
        trigger = {"routing_key": ROUTING_KEY, "event_action": "trigger", "payload": {}}
        errors = c.post(receiver.pagerduty_url, json=trigger).json()["errors"]
        assert "'payload.summary' is missing or blank" in errors
        page = f"{receiver.statuspage_base}/pages/{PAGE}"
        assert c.get(page).status_code == 401
        assert c.get(page, headers={"Authorization": "OAuth wrong"}).status_code == 401
        auth = {"Authorization": f"OAuth {SP_KEY}"}
        r = c.post(
            f"{page}/incidents", json={"incident": {"name": "x", "status": "bad"}}, headers=auth
        )
        assert r.status_code == 422
        assert c.post(receiver.webhook_url(), json={"a": 1}).status_code == 401
        recorded = c.get(f"{receiver.url}/_recorded").json()
    assert [r["kind"] for r in recorded] == [
        "slack",
        "discord",
        "discord",
        "pagerduty",
        "pagerduty",
        "statuspage",
        "statuspage",
        "statuspage",
        "webhook",
    ]
    assert recorded[0]["json"] == {"blocks": []}


def test_the_receiver_runs_as_a_module(tmp_path: Path) -> None:
    key = tmp_path / "sp.key"
    key.write_text(SP_KEY + "\n")
    argv = [*RECEIVER_MODULE, "--port", "0", "--statuspage-key-file", str(key)]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            auth = {"Authorization": f"OAuth {SP_KEY}"}
            with httpx.Client(timeout=5) as c:
                assert c.get(f"{info['statuspage']}/pages/{PAGE}", headers=auth).status_code == 200
                assert c.post(info["pagerduty"], json={}).status_code == 400
                assert len(c.get(info["recorded"]).json()) == 2
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
