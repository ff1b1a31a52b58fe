"""Incident communication: what the daemon says when, with a recording sender in place of the
channels (the channels themselves are tested against the receiver in tests/contract)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_decision import E, W, node, world

from orchestrator.comms import Comms
from orchestrator.config import Config, parse_config
from orchestrator.incidents import Incident, IncidentStore
from orchestrator.model import Verdict


class Recorder:
    """A sender that records (incident id, event, level) and the incident's notifications."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, int]] = []

    async def incident_event(self, inc: Incident, event: str, now: float) -> list[dict[str, Any]]:
        self.sent.append((inc.id, event, inc.level))
        record = {
            "at": now,
            "event": event,
            "audience": "bcp-team",
            "channel": "slack",
            "ok": True,
            "via": None,
            "detail": "",
        }
        inc.notifications.append(record)
        return [record]

    async def periodic(self, inc: Incident, now: float) -> list[dict[str, Any]]:
        return []

    async def aclose(self) -> None:
        return None


def config(tmp_path: Path) -> Config:
    return parse_config(
        {
            "service": "helios-db",
            "state_dir": str(tmp_path),
            "regions": [
                {
                    "name": r,
                    "priority": i + 1,
                    "nodes": [{"name": f"{r}-1", "dsn": f"host=10.0.0.{i + 1}"}],
                }
                for i, r in enumerate(("us-east", "us-west", "eu"))
            ],
        }
    )


async def drain(comms: Comms, until: Any, timeout: float = 10.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(comms.run(stop))
    deadline = time.monotonic() + timeout
    try:
        while not until() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
    assert until(), "condition not reached"


async def test_levels_drive_messages_and_a_recovery_resolves(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sender = Recorder()
    comms = Comms(cfg, IncidentStore(tmp_path), sender)
    now = 1000.0
    inc = Incident(id="inc-1", opened_at=now, primary="us-east-1", region="us-east")
    # first failed probe: level 0 (a component), the incident is opened
    c = comms.on_tick(
        replace(world("suspect"), at=now), None, inc, holding=False, busy=False, acked_at=None
    )
    assert c.level == 0 and inc.level == 0
    # DOWN and confirmed: partial outage (Level 2), VP Engineering
    c = comms.on_tick(
        replace(world("down"), at=now + 3), None, inc, holding=False, busy=False, acked_at=None
    )
    assert (c.level, c.authority) == (2, "VP Engineering")
    assert [lv["level"] for lv in inc.levels] == [0, 2]
    # the same level again: nothing new; an ack: "acknowledged"
    comms.on_tick(
        replace(world("down"), at=now + 4), None, inc, holding=False, busy=False, acked_at=None
    )
    comms.on_tick(
        replace(world("down"), at=now + 5), None, inc, holding=False, busy=False, acked_at=now + 5
    )
    # the engine holds (no candidate): full outage
    c = comms.on_tick(
        replace(world("down"), at=now + 6), None, inc, holding=True, busy=False, acked_at=now + 5
    )
    assert c.level == 3
    inc.event("recovered", now + 7, "back")
    inc.close("recovered", now + 7)
    comms.closed(inc)
    await drain(comms, lambda: any(e == "resolved" for _, e, _ in sender.sent))
    events = [e for _, e, _ in sender.sent]
    assert events == ["opened", "level_changed", "acknowledged", "level_changed", "resolved"]
    assert inc.when("resolved") is not None
    stored = IncidentStore(tmp_path).load("inc-1")
    assert stored.level == 3 and len(stored.notifications) == 5
    # the incident's report was written with the checklist
    assert (tmp_path / "reports" / "inc-1.json").is_file()
    report = (tmp_path / "reports" / "inc-1.md").read_text()
    assert "Incident confirmed" in report and "Lessons learned" in report


async def test_failover_is_monitored_then_resolved_when_healthy(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sender = Recorder()
    comms = Comms(cfg, IncidentStore(tmp_path), sender, monitoring_period=0.3)
    inc = Incident(id="inc-2", opened_at=1000.0, primary="us-east-1", region="us-east")
    inc.set_level(2, 1000.0, "lost", "VP Engineering")
    inc.event("promoted", 1002.0)
    inc.close("failed_over", 1004.0)
    comms.closed(inc)  # no status_changed since the promotion: customers must hear "monitoring"
    healthy = world("ok", west=node(W), eu=node(E))
    comms.on_tick(
        replace(healthy, at=time.time()), None, None, holding=False, busy=False, acked_at=None
    )
    await drain(comms, lambda: ("inc-2", "resolved", 2) in sender.sent)
    assert [e for _, e, _ in sender.sent] == ["status_changed", "resolved"]


async def test_unhealthy_service_is_not_announced_resolved(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sender = Recorder()
    comms = Comms(cfg, IncidentStore(tmp_path), sender, monitoring_period=0.2)
    inc = Incident(id="inc-3", opened_at=1000.0, primary="us-east-1", region="us-east")
    inc.event("promoted", 1002.0)
    inc.notifications.append(
        {
            "at": 1003.0,
            "event": "status_changed",
            "audience": "x",
            "channel": "slack",
            "ok": True,
            "via": None,
            "detail": "",
        }
    )
    inc.close("failed_over", 1004.0)
    comms.closed(inc)  # the runbook already told them: nothing queued now
    degraded = world("ok")
    degraded = replace(
        degraded,
        nodes=(replace(degraded.nodes[0], verdict=Verdict.DEGRADED), *degraded.nodes[1:]),
    )
    comms.on_tick(
        replace(degraded, at=time.time()), None, None, holding=False, busy=False, acked_at=None
    )
    stop = asyncio.Event()
    task = asyncio.create_task(comms.run(stop))
    await asyncio.sleep(1.5)
    stop.set()
    await task
    assert sender.sent == []


async def test_a_restarted_daemon_resumes_monitoring(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = IncidentStore(tmp_path)
    recent = Incident(id="inc-4", opened_at=time.time() - 60, primary="us-east-1", region="us-east")
    recent.close("failed_over", time.time() - 30)
    old = Incident(
        id="inc-5", opened_at=time.time() - 3 * 86400, primary="us-east-1", region="us-east"
    )
    old.close("failed_over", time.time() - 2 * 86400)
    drill = Incident(
        id="inc-6",
        opened_at=time.time() - 60,
        primary="us-east-1",
        region="us-east",
        drill_id="drill-x",
    )
    drill.close("failed_over", time.time() - 30)
    for inc in (recent, old, drill):
        store.save(inc)
    sender = Recorder()
    comms = Comms(cfg, store, sender, monitoring_period=0.2)
    healthy = world("ok", west=node(W), eu=node(E))
    stop = asyncio.Event()
    task = asyncio.create_task(comms.run(stop))
    try:
        deadline = time.monotonic() + 10
        while not sender.sent and time.monotonic() < deadline:
            comms.on_tick(
                replace(healthy, at=time.time()),
                None,
                None,
                holding=False,
                busy=False,
                acked_at=None,
            )
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    assert [(i, e) for i, e, _ in sender.sent] == [("inc-4", "resolved")]


@pytest.mark.parametrize("holding", [False, True])
def test_service_level_without_incident(tmp_path: Path, holding: bool) -> None:
    comms = Comms(config(tmp_path), IncidentStore(tmp_path), None)
    c = comms.on_tick(
        world("ok", west=node(W, lag=120.0)), None, None, holding=holding, busy=False, acked_at=None
    )
    assert (c.level, c.reason) == (1, "REPLICA_BEYOND_RPO")
    doc = comms.status_fields(None, 0.0)
    assert doc["level"] == 1 and doc["authority"] == "Operations" and doc["incident"] is None
