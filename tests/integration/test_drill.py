"""DR drills on the real sandbox, through ``orchestrator drill`` (run in a thread: the CLI runs
its own event loop). Every test gets a sandbox of its own: drills move the primary."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client import CollectorRegistry

from orchestrator import cli
from orchestrator.config import Config, load_config
from orchestrator.controls import active_drill
from orchestrator.drillrecord import DrillStore
from orchestrator.incidents import IncidentStore
from orchestrator.journal import Journal
from orchestrator.observability.drill_metrics import DrillMetrics
from orchestrator.providers.db_postgres import HeartbeatWriter

pytestmark = pytest.mark.sandbox


def drill_config(sb: Any, **objectives: Any) -> tuple[str, Config]:
    """The sandbox's generated config (with its drill section) and fast probes."""
    data = yaml.safe_load(Path(sb.config_path()).read_text())
    data["probes"].update({"interval": "500ms", "timeout": "300ms"})
    data["objectives"].update(objectives)
    path = Path(sb.config_path()).with_name("drill.yaml")
    path.write_text(yaml.safe_dump(data))
    return str(path), load_config(path)


async def drill(config: str, *args: str) -> int:
    return await asyncio.to_thread(cli.main, ["drill", "--config", config, *args])


def sql(sb: Any, region: str, query: str) -> Any:
    with psycopg.connect(sb.dsn(region), password=sb.password(), autocommit=True) as c:
        row = c.execute(query.encode()).fetchone()
    return row[0] if row else None


def journal_steps(cfg: Config, run_id: str) -> list[dict[str, Any]]:
    """The run's steps as the journal holds them (independently of the drill's own reading)."""
    run = Journal.in_state_dir(cfg.state_dir).runs()[run_id]
    steps: dict[str, dict[str, Any]] = {}
    for r in run.records:
        if r["kind"] == "step_started":
            steps[r["step"]] = {
                "name": r["step"],
                "action": r["action"],
                "status": "running",
                "started_at": r["at"],
                "finished_at": None,
                "duration": None,
            }
        elif r["kind"] in ("step_finished", "step_failed"):
            s = steps[r["step"]]
            s["status"] = "ok" if r["kind"] == "step_finished" else "failed"
            s["finished_at"], s["duration"] = r["at"], r["duration"]
    return list(steps.values())


def assert_leg_matches_journal(cfg: Config, leg: dict[str, Any], first: str) -> None:
    steps = journal_steps(cfg, leg["run_id"])
    assert leg["phases"] == [{k: v for k, v in s.items() if k != "duration"} for s in steps]
    assert all(p["status"] == "ok" for p in leg["phases"]), leg["phases"]
    assert leg["started_at"] <= leg["phases"][0]["started_at"]
    assert leg["phases"][-1]["finished_at"] <= leg["finished_at"]
    names = [s["name"] for s in steps]
    between = steps[names.index(first) : names.index("verify_write")]
    assert leg["rto_seconds"] >= sum(s["duration"] for s in between)
    verify = steps[names.index("verify_write")]
    inc = IncidentStore(cfg.state_dir).load(leg["incident_id"])
    assert inc.rto_seconds == leg["rto_seconds"] and inc.status == "failed_over"
    assert inc.run_id == leg["run_id"] and inc.drill_id is not None
    written = inc.when("first_verified_write")
    assert written is not None and verify["started_at"] <= written <= verify["finished_at"]
    assert leg["rto_seconds"] == pytest.approx(written - inc.opened_at, abs=0.002)


async def test_switchover_drill_with_failback_passes(fresh_sandbox: Any) -> None:
    sb = fresh_sandbox
    config, cfg = drill_config(sb)
    assert await drill(config, "--kind", "switchover", "--to", "us-west", "--failback") == 0

    record = DrillStore(cfg.state_dir).last()
    assert record is not None and record["result"] == "passed", record["reasons"]
    assert record["reasons"] == [] and not record["dry_run"] and record["trigger"] == "manual"
    assert all(c["ok"] for c in record["prechecks"])
    assert [leg["name"] for leg in record["legs"]] == ["us-east -> us-west", "us-west -> us-east"]
    for leg in record["legs"]:
        assert leg["passed"] and leg["reasons"] == [], leg["reasons"]
        assert leg["rto_seconds"] is not None and 0 < leg["rto_seconds"] <= 300
        assert leg["rpo_seconds"] == 0.0 and leg["lost_commits"] == 0
        assert leg["acked_commits"] > 0 and leg["write_unavailable_seconds"] is not None
        assert {d["provider"] for d in leg["dns"]} == {"route53", "cloudflare", "gcloud"}
        assert all(d["ok"] for d in leg["dns"]) and all(c["ok"] for c in leg["smoke"])
        assert_leg_matches_journal(cfg, leg, first="stop_writes")
    assert record["legs"][0]["finished_at"] <= record["legs"][1]["started_at"]
    assert record["load"]["acked"] >= sum(leg["acked_commits"] for leg in record["legs"])

    # The report the command wrote holds the same measured figures, phase by phase.
    reports_dir = Path(cfg.state_dir) / "reports"
    doc = json.loads((reports_dir / f"{record['id']}.json").read_text())
    assert doc["verdict"] == "passed"
    for leg, shown in zip(record["legs"], doc["legs"], strict=True):
        assert shown["rto"]["used_seconds"] == leg["rto_seconds"]
        assert shown["rpo"]["used_seconds"] == leg["rpo_seconds"]
        assert shown["lost_commits"] == leg["lost_commits"] == 0
        steps = journal_steps(cfg, leg["run_id"])
        assert [p["name"] for p in shown["phases"]] == [s["name"] for s in steps]
        for p, s in zip(shown["phases"], steps, strict=True):
            journaled = s["finished_at"] - s["started_at"]
            assert p["duration"] == pytest.approx(journaled, abs=0.001)
        assert (reports_dir / f"{leg['incident_id']}.html").is_file()  # each leg's incident
    html = (reports_dir / f"{record['id']}.html").read_text()
    assert "<svg" in html and record["id"] in html

    # The primary is back in the original region, DNS follows it, the lock is gone.
    assert sql(sb, "us-east", "SELECT pg_is_in_recovery()") is False
    assert sql(sb, "us-west", "SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert await asyncio.to_thread(sb.resolve_service) == sb.host("us-east")
    assert active_drill(cfg.state_dir) is None
    reg = CollectorRegistry()
    DrillMetrics(reg).load(cfg.state_dir)
    assert reg.get_sample_value("helios_drill_last_result", {"result": "passed"}) == 1.0
    assert reg.get_sample_value("helios_drill_last_rto_seconds") == max(
        leg["rto_seconds"] for leg in record["legs"]
    )
    print(
        "\n[drill switchover+failback] "
        + "; ".join(
            f"{leg['name']}: RTO {leg['rto_seconds']:.2f}s, RPO {leg['rpo_seconds']:.2f}s, "
            f"writes unavailable {leg['write_unavailable_seconds']:.2f}s, lost "
            f"{leg['lost_commits']} of {leg['acked_commits']}"
            for leg in record["legs"]
        )
    )


async def test_drill_refused_when_a_replica_lags_beyond_the_rpo(fresh_sandbox: Any) -> None:
    sb = fresh_sandbox
    config, cfg = drill_config(sb, rpo="2s")
    # A heartbeat every replica has replayed, then us-west stops applying what follows.
    writer = HeartbeatWriter(cfg.service, sb.dsn("us-east"), sb.password(), 2.0)
    try:
        seq = await writer.write(time.time())
    finally:
        await writer.aclose()
    deadline = time.monotonic() + 10
    while await asyncio.to_thread(heartbeat_seq, sb, "us-west") < seq:
        assert time.monotonic() < deadline, "the heartbeat never reached us-west"
        await asyncio.sleep(0.1)
    journal = Path(cfg.state_dir) / "journal.jsonl"
    before = journal.read_bytes() if journal.exists() else None
    pid = sb.postmaster_pid("us-east")
    await asyncio.to_thread(set_apply_delay, sb, "60s")
    try:
        await asyncio.sleep(3.0)  # longer than the RPO behind, from now on
        assert await drill(config) == 4
    finally:
        await asyncio.to_thread(set_apply_delay, sb, None)

    record = DrillStore(cfg.state_dir).last()
    assert record is not None and record["result"] == "refused" and record["legs"] == []
    failed = {c["name"]: c["detail"] for c in record["prechecks"] if not c["ok"]}
    assert "lag_within_rpo" in failed and "us-west-1 lags" in failed["lag_within_rpo"], failed
    assert "eu-1" not in failed["lag_within_rpo"]
    assert any("lag_within_rpo" in r for r in record["reasons"])
    assert record["load"]["acked"] == 0
    # Nothing changed: same primary (same process), no run journaled, no lock, no incident.
    assert sb.postmaster_pid("us-east") == pid
    assert sql(sb, "us-east", "SELECT pg_is_in_recovery()") is False
    assert (journal.read_bytes() if journal.exists() else None) == before
    assert active_drill(cfg.state_dir) is None
    assert not (Path(cfg.state_dir) / "drill.json").exists()
    assert IncidentStore(cfg.state_dir).all() == []
    assert await asyncio.to_thread(sb.resolve_service) == sb.host("us-east")


def heartbeat_seq(sb: Any, region: str) -> int:
    """The newest heartbeat ``region`` has replayed (0 before the table reached it)."""
    try:
        return int(sql(sb, region, "SELECT coalesce(max(seq), 0) FROM helios.heartbeat"))
    except psycopg.errors.UndefinedTable:
        return 0


def set_apply_delay(sb: Any, value: str | None) -> None:
    with psycopg.connect(sb.dsn("us-west"), password=sb.password(), autocommit=True) as c:
        if value is None:
            c.execute("ALTER SYSTEM RESET recovery_min_apply_delay")
        else:
            c.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{value}'".encode())
        c.execute("SELECT pg_reload_conf()")


async def test_failover_drill_kills_the_primary_and_fails_over(fresh_sandbox: Any) -> None:
    sb = fresh_sandbox
    config, cfg = drill_config(sb)
    old_pid = sb.postmaster_pid("us-east")
    assert await drill(config, "--kind", "failover", "--no-failback") == 0

    record = DrillStore(cfg.state_dir).last()
    assert record is not None and record["result"] == "passed", record["reasons"]
    assert record["kind"] == "failover"
    (leg,) = record["legs"]
    assert leg["passed"], leg["reasons"]
    assert (leg["from_node"], leg["from_region"]) == ("us-east-1", "us-east")
    assert leg["to_region"] != "us-east" and leg["to_node"] == f"{leg['to_region']}-1"
    assert leg["rto_seconds"] is not None and 0 < leg["rto_seconds"] <= 300
    assert leg["rpo_seconds"] is not None and leg["rpo_seconds"] <= 60
    assert [p["name"] for p in leg["phases"]][:2] == ["fence", "promote"]
    assert_leg_matches_journal(cfg, leg, first="fence")
    # The incident is opened by the kill, as a real outage's would be.
    inc = IncidentStore(cfg.state_dir).load(leg["incident_id"])
    events = {e["event"]: e for e in inc.timeline}
    assert "sandbox kill us-east" in events["first_failure"]["detail"]
    assert inc.opened_at == events["first_failure"]["at"] >= leg["started_at"]
    assert events["confirmed"]["at"] <= events["promoted"]["at"]
    # The old primary was killed, then brought back as a replica of the new primary.
    new_region = leg["to_region"]
    assert sb.postmaster_pid("us-east") not in (None, old_pid)
    assert sql(sb, "us-east", "SELECT pg_is_in_recovery()") is True
    sender = sql(sb, "us-east", "SELECT sender_host FROM pg_stat_wal_receiver")
    assert sender == sb.host(new_region)
    assert sql(sb, new_region, "SELECT pg_is_in_recovery()") is False
    assert await asyncio.to_thread(sb.resolve_service) == sb.host(new_region)
    assert active_drill(cfg.state_dir) is None
    print(
        f"\n[drill failover] {leg['name']}: RTO {leg['rto_seconds']:.2f}s, RPO "
        f"{leg['rpo_seconds']:.2f}s, writes unavailable {leg['write_unavailable_seconds']:.2f}s,"
        f" lost {leg['lost_commits']} of {leg['acked_commits']}"
    )
