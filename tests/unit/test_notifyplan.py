"""Notification routing (pure): who is told at each BCP level, periodic updates, the customer
status an incident shows, and the PagerDuty vocabulary."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import notifyplan as plan
from orchestrator.config import Config, parse_config
from orchestrator.incidents import Incident

T0 = 1_800_000_000.0
HOUR = 3600.0


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_HOOK", "http://127.0.0.1:9/hook/secret")
    monkeypatch.setenv("T_KEY", "k" * 32)


def plan_config(**notifications: Any) -> Config:
    """The plan's communication tables as audiences: BCP team in real time on Slack and
    PagerDuty, engineering hourly, executives as needed, customers on the status page."""
    hook, key = "env:T_HOOK", "env:T_KEY"
    doc: dict[str, Any] = {
        "channels": [
            {"name": "slack", "kind": "slack", "webhook_url": hook, "backup": "discord"},
            {"name": "discord", "kind": "discord", "webhook_url": hook},
            {"name": "slack-eng", "kind": "slack", "webhook_url": hook},
            {"name": "pagerduty", "kind": "pagerduty", "routing_key": key},
            {"name": "statuspage", "kind": "statuspage", "api_key": key, "page_id": "p1"},
        ],
        "audiences": [
            {"name": "bcp-team", "channels": ["slack", "pagerduty"]},
            {"name": "engineering", "channels": ["slack-eng"], "update_interval": "1h"},
            {"name": "executives", "channels": ["slack"]},
            {
                "name": "customers",
                "channels": ["statuspage"],
                "template": "customer",
                "update_interval": "30m",
            },
        ],
        **notifications,
    }
    return parse_config(
        {
            "service": "helios-db",
            "regions": [
                {"name": "us-east", "priority": 1, "nodes": [{"name": "e1", "dsn": "host=a"}]},
                {"name": "us-west", "priority": 2, "nodes": [{"name": "w1", "dsn": "host=b"}]},
            ],
            "notifications": doc,
        }
    )


def incident(level: int = 0, **changes: Any) -> Incident:
    inc = Incident(id="inc-1", opened_at=T0, primary="e1", region="us-east", level=level)
    for k, v in changes.items():
        setattr(inc, k, v)
    return inc


def told(inc: Incident, audience: str, at: float, event: str = "opened") -> None:
    inc.notifications.append(
        {
            "at": at,
            "event": event,
            "audience": audience,
            "channel": "x",
            "ok": True,
            "via": None,
            "detail": "",
        }
    )


def routes(
    cfg: Config, inc: Incident, event: str, now: float = T0
) -> set[tuple[str, str, tuple[str, ...]]]:
    return {
        (r.channel, r.template, r.audiences)
        for r in plan.routes(inc, event, cfg.notifications, cfg.levels, now)
    }


# --- audiences by level (the plan's activation and communication tables) ----------------------

LEVELS = [
    (0, []),
    (1, ["bcp-team"]),
    (2, ["bcp-team", "engineering", "customers"]),
    (3, ["bcp-team", "engineering", "executives", "customers"]),
    (4, ["bcp-team", "engineering", "executives", "customers"]),
]


@pytest.mark.parametrize(("level", "audiences"), LEVELS)
def test_audiences_at_each_level(level: int, audiences: list[str]) -> None:
    cfg = plan_config()
    got = plan.audiences_for(incident(level), "opened", cfg.notifications, cfg.levels, T0)
    assert got == audiences


ROUTES = [
    (0, set()),
    (1, {("slack", "internal", ("bcp-team",)), ("pagerduty", "internal", ("bcp-team",))}),
    (
        2,
        {
            ("slack", "internal", ("bcp-team",)),
            ("pagerduty", "internal", ("bcp-team",)),
            ("slack-eng", "internal", ("engineering",)),
            ("statuspage", "customer", ("customers",)),
        },
    ),
    (
        3,
        {
            # bcp-team and executives share the Slack channel: one message for both
            ("slack", "internal", ("bcp-team", "executives")),
            ("pagerduty", "internal", ("bcp-team",)),
            ("slack-eng", "internal", ("engineering",)),
            ("statuspage", "customer", ("customers",)),
        },
    ),
]


@pytest.mark.parametrize(("level", "expected"), ROUTES)
def test_routes_when_an_incident_opens(level: int, expected: set[Any]) -> None:
    assert routes(plan_config(), incident(level), "opened") == expected


def test_acknowledgement_is_internal_only() -> None:
    got = routes(plan_config(), incident(2), "acknowledged")
    assert got == {
        ("slack", "internal", ("bcp-team",)),
        ("pagerduty", "internal", ("bcp-team",)),
        ("slack-eng", "internal", ("engineering",)),
    }


def test_whoever_was_told_hears_how_it_ends_after_a_deescalation() -> None:
    inc = incident(1)
    told(inc, "customers", T0)
    told(inc, "engineering", T0)
    got = plan.audiences_for(inc, "resolved", plan_config().notifications, plan_config().levels, T0)
    assert got == ["bcp-team", "customers", "engineering"]


def test_the_communication_test_is_not_an_incident_event() -> None:
    cfg = plan_config()
    with pytest.raises(ValueError, match="not an incident event"):
        plan.routes(incident(2), "test", cfg.notifications, cfg.levels, T0)


# --- drills ------------------------------------------------------------------------------------


def test_a_drill_leg_never_reaches_customers_or_the_status_page() -> None:
    got = routes(plan_config(), incident(3, drill_id="drill-1"), "opened")
    assert ("statuspage", "customer", ("customers",)) not in got
    assert ("slack", "internal", ("bcp-team", "executives")) in got
    ctx = plan.incident_context(
        incident(3, drill_id="drill-1"),
        "opened",
        service="helios-db",
        settings=plan_config().notifications,
        levels=plan_config().levels,
        rto=300,
        now=T0,
    )
    assert ctx["prefix"] == "[DRILL] "


def test_drills_are_silent_when_send_drills_is_off() -> None:
    cfg = plan_config(send_drills=False)
    assert routes(cfg, incident(3, drill_id="drill-1"), "opened") == set()
    assert plan.drill_routes("drill_started", cfg.notifications) == []


def test_drill_announcements_go_to_the_bcp_team_without_paging() -> None:
    got = plan.drill_routes("drill_finished", plan_config().notifications)
    assert got == [plan.Route("slack", "drill_finished", ("bcp-team",))]


# --- periodic updates --------------------------------------------------------------------------


def test_due_updates_follow_each_audiences_interval() -> None:
    cfg = plan_config()
    inc = incident(2)
    assert plan.due_updates(inc, cfg.notifications, T0 + 10 * HOUR) == []  # nobody told yet
    for name in ("bcp-team", "engineering", "customers"):
        told(inc, name, T0)
    assert plan.due_updates(inc, cfg.notifications, T0 + 29 * 60) == []
    assert plan.due_updates(inc, cfg.notifications, T0 + 30 * 60) == ["customers"]
    told(inc, "customers", T0 + 30 * 60, "update")
    assert plan.due_updates(inc, cfg.notifications, T0 + HOUR) == ["engineering", "customers"]
    # bcp-team is real time (no interval): never due; a closed incident gets no updates
    inc.close("recovered", T0 + HOUR)
    assert plan.due_updates(inc, cfg.notifications, T0 + 5 * HOUR) == []


def test_update_routes_only_the_due_audiences() -> None:
    cfg = plan_config()
    inc = incident(2)
    for name in ("bcp-team", "engineering", "customers"):
        told(inc, name, T0)
    assert routes(cfg, inc, "update", T0 + 45 * 60) == {("statuspage", "customer", ("customers",))}


# --- customer status ---------------------------------------------------------------------------


def _with(status: str, events: list[str], closed: bool = False) -> Incident:
    inc = incident(2, status=status)
    for i, name in enumerate(events):
        inc.event(name, T0 + i)
    if closed:
        inc.closed_at = T0 + 100
    return inc


STATUSES = [
    ("open, unconfirmed", _with("open", ["first_failure"]), "investigating"),
    ("confirmed", _with("open", ["first_failure", "confirmed"]), "identified"),
    ("held", _with("held", ["first_failure", "confirmed", "hold"]), "identified"),
    ("failover running", _with("open", ["confirmed", "fenced", "promoted"]), "identified"),
    ("failed over, not verified", _with("failed_over", ["confirmed", "promoted"]), "identified"),
    (
        "failed over and verified",
        _with("failed_over", ["confirmed", "promoted", "first_verified_write"], closed=True),
        "monitoring",
    ),
    ("failover failed", _with("failed", ["confirmed", "fenced"], closed=True), "identified"),
    ("recovered by itself", _with("recovered", ["first_failure", "recovered"]), "monitoring"),
    (
        "recovered and closed",
        _with("recovered", ["first_failure", "recovered"], closed=True),
        "resolved",
    ),
    (
        "resolved after monitoring",
        _with("failed_over", ["confirmed", "first_verified_write", "resolved"], closed=True),
        "resolved",
    ),
]


@pytest.mark.parametrize(("case", "inc", "expected"), STATUSES, ids=[s[0] for s in STATUSES])
def test_customer_status(case: str, inc: Incident, expected: str) -> None:
    assert plan.customer_status(inc) == expected
    assert expected in plan.CUSTOMER_STATUSES


def test_component_status_by_status_and_level() -> None:
    assert plan.component_status(_with("open", ["first_failure"])) == "partial_outage"
    assert plan.component_status(incident(3)) == "major_outage"
    assert plan.component_status(incident(1)) == "degraded_performance"
    assert plan.component_status(STATUSES[-1][1]) == "operational"


# --- PagerDuty -----------------------------------------------------------------------------------

ACTIONS = [
    ("opened", "trigger"),
    ("level_changed", "trigger"),
    ("update", "trigger"),
    ("status_changed", "trigger"),
    ("acknowledged", "acknowledge"),
    ("resolved", "resolve"),
    ("test", None),
    ("drill_started", None),
    ("drill_finished", None),
]


@pytest.mark.parametrize(("event", "action"), ACTIONS)
def test_pagerduty_action(event: str, action: str | None) -> None:
    assert plan.pagerduty_action(event) == action


@pytest.mark.parametrize(
    ("level", "severity"),
    [(0, "info"), (1, "warning"), (2, "error"), (3, "critical"), (4, "critical")],
)
def test_pagerduty_severity(level: int, severity: str) -> None:
    assert plan.pagerduty_severity(level) == severity


def test_dedup_keys_are_stable_per_incident() -> None:
    assert plan.dedup_key("helios-db", "inc-1") == "helios-helios-db-inc-1"
    assert plan.dedup_key("helios-db", "inc-1") == plan.dedup_key("helios-db", "inc-1")
    assert plan.dedup_key("helios-db", "inc-2") != plan.dedup_key("helios-db", "inc-1")
    assert plan.comms_test_dedup_key("helios-db", T0) != plan.dedup_key("helios-db", "inc-1")


# --- message facts -------------------------------------------------------------------------------


def test_rto_clock() -> None:
    inc = incident(2)
    assert plan.rto_clock(inc, 300, T0 + 100)["state"] == "running"
    assert plan.rto_clock(inc, 300, T0 + 400)["state"] == "missed"
    inc.event("first_verified_write", T0 + 42)
    assert plan.rto_clock(inc, 300, T0 + 1000) == {"elapsed": 42, "objective": 300, "state": "met"}


def test_customer_facts_follow_the_status() -> None:
    inc = incident(2)
    facts = plan.customer_facts(inc, 300, T0 + 10)
    assert facts["status"] == "investigating"
    assert "us-east" in facts["description"]
    assert facts["eta"].startswith("Service is expected to be restored by")
    inc.event("recovered", T0 + 50)
    inc.event("resolved", T0 + 60)
    inc.close("recovered", T0 + 60)
    facts = plan.customer_facts(inc, 300, T0 + 70)
    assert facts["status"] == "resolved"
    assert facts["eta"].startswith("Resolved at")


def test_a_status_page_never_carries_an_internal_message() -> None:
    audiences: list[dict[str, Any]] = [
        {"name": "bcp-team", "channels": ["slack", "statuspage"]},  # internal
        *({"name": n, "channels": ["slack"]} for n in ("engineering", "executives", "customers")),
    ]
    cfg = plan_config(audiences=audiences)
    got = plan.routes(incident(1), "opened", cfg.notifications, cfg.levels, T0)
    assert [r.channel for r in got] == ["slack"]
