"""Automatic failover end to end on the sandbox, under a write load through the service name."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from daemon_helpers import INTERVAL, THRESHOLD, daemon, fast_config

from orchestrator.config import load_config
from orchestrator.controls import load_memory
from orchestrator.incidents import IncidentStore

pytestmark = pytest.mark.sandbox
EXE = Path(sys.executable).with_name("orchestrator")


@dataclass
class Load:
    """Single-row commits through the service name; every acknowledged commit is recorded."""

    sandbox: Any
    acked: list[tuple[int, float, str]] = field(default_factory=list)
    errors: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    addr = await asyncio.to_thread(self.sandbox.resolve_service)
                    async with asyncio.timeout(3):
                        conn = await psycopg.AsyncConnection.connect(
                            host=addr,
                            port=self.sandbox.service_port,
                            dbname="postgres",
                            user="helios",
                            password=self.sandbox.password(),
                            autocommit=True,
                            connect_timeout=2,
                        )
                    where = addr
                async with asyncio.timeout(2):
                    cur = await conn.execute("INSERT INTO load(at) VALUES (now()) RETURNING id")
                    row = await cur.fetchone()
                assert row is not None
                self.acked.append((int(row[0]), time.monotonic(), where))
            except (psycopg.Error, OSError, TimeoutError):
                self.errors += 1
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.pgconn.finish()
                conn = None
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.005)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def setup_load_table(sb: Any) -> None:
    with psycopg.connect(sb.dsn("us-east"), password=sb.password(), autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS load(id bigserial PRIMARY KEY, at timestamptz)")


def ids_on(sb: Any, region: str) -> set[int]:
    with psycopg.connect(sb.dsn(region), password=sb.password(), autocommit=True) as c:
        return {r[0] for r in c.execute("SELECT id FROM load").fetchall()}


def served(config: str) -> set[str]:
    out = subprocess.run(
        [str(EXE), "dns", "status", "--config", config, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return {",".join(r["serves"] or []) for r in json.loads(out.stdout)["records"]}


async def until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout}s")


@pytest.mark.parametrize("failure", ["kill", "hang"])
async def test_lost_primary_fails_over_under_write_load(fresh_sandbox: Any, failure: str) -> None:
    sb = fresh_sandbox
    setup_load_table(sb)
    cfg = fast_config(sb, automatic=True)
    config = str(sb.config_path())
    store = IncidentStore(cfg.state_dir)
    load = Load(sb)
    async with daemon(cfg) as rec:
        writer = asyncio.create_task(load.run())
        try:
            await until(lambda: len(load.acked) > 100, 20, "write load")
            t_fail = time.monotonic()
            await asyncio.to_thread(sb.kill if failure == "kill" else sb.hang, "us-east")
            await rec.until(
                lambda a: (
                    a.primary == "us-west-1" and a.node("us-west-1").verdict.value == "healthy"
                ),
                timeout=60,
            )
            await until(
                lambda: any(
                    at > t_fail and w == sb.host("us-west") for _, at, w in load.acked[-50:]
                ),
                30,
                "writes resuming through the service name",
            )
        finally:
            load.stop.set()
            await writer
        # the run ends after writes resume (verify_write, notify): let it finish first
        await until(
            lambda: load_memory(cfg.state_dir).state.value != "failing_over",
            30,
            "the failover run to finish",
        )
        # a second loss inside the cooldown is escalated, not failed over
        await asyncio.to_thread(sb.kill, "us-west")
        await rec.until(
            lambda a: a.reason == "PRIMARY_DOWN" and a.primary == "us-west-1", timeout=20
        )
        await asyncio.sleep(3 * INTERVAL)
        mem = load_memory(cfg.state_dir)
        assert mem.state.value == "hold" and mem.reason == "IN_COOLDOWN", mem
        await asyncio.to_thread(sb.start, "us-west")

    inc = next(i for i in store.all() if i.run_id)
    assert inc.status == "failed_over", inc
    assert inc.primary == "us-east-1" and inc.new_primary == "us-west-1"
    events = [e["event"] for e in inc.timeline]
    for e in (
        "first_failure",
        "confirmed",
        "fenced",
        "promoted",
        "dns_switched",
        "first_verified_write",
    ):
        assert e in events, events
    assert inc.rto_seconds is not None and inc.rto_seconds < 30
    assert inc.rpo_seconds is not None and inc.rpo_seconds <= cfg.objectives.rpo
    # DNS on every provider, and the old primary can never write again as primary
    assert served(config) == {sb.host("us-west")}
    assert (Path(sb.data_dir("us-east")) / "standby.signal").exists()
    # writes: every acknowledged commit older than the reported loss window survived
    on_new = await asyncio.to_thread(ids_on, sb, "us-west")
    lost = [(i, at) for i, at, _ in load.acked if at < t_fail and i not in on_new]
    window = inc.rpo_seconds + INTERVAL * THRESHOLD + 1.0
    assert all(t_fail - at <= window for _, at in lost), (len(lost), window)
    last_before = max(at for _, at, w in load.acked if at < t_fail)
    first_after = min(at for _, at, w in load.acked if at > t_fail and w == sb.host("us-west"))
    print(
        f"\n[{failure}] write unavailability {first_after - last_before:.2f}s, "
        f"RTO {inc.rto_seconds:.2f}s, RPO {inc.rpo_seconds:.2f}s, lost {len(lost)} of "
        f"{len(load.acked)} acknowledged commits"
    )


async def test_blip_shorter_than_threshold_does_not_fail_over(fresh_sandbox: Any) -> None:
    sb = fresh_sandbox
    cfg = fast_config(sb, automatic=True)
    async with daemon(cfg) as rec:
        t0 = time.monotonic()
        await asyncio.to_thread(sb.hang, "us-east")
        await asyncio.sleep(INTERVAL * (THRESHOLD - 1))
        await asyncio.to_thread(sb.unhang, "us-east")
        await rec.until(lambda a: a.reason == "ALL_HEALTHY", timeout=20, after=t0 + 0.5)
        seen = [a for t, _, a in rec.ticks if t >= t0]
        assert any(a.node("us-east-1").verdict.value == "suspect" for a in seen)
        assert all(a.primary == "us-east-1" for a in seen)
    assert load_memory(cfg.state_dir).last_failover_at is None
    incidents = IncidentStore(cfg.state_dir).all()
    assert incidents and incidents[-1].status == "recovered" and incidents[-1].run_id is None


async def test_lag_beyond_rpo_holds_then_accept_data_loss(fresh_sandbox: Any) -> None:
    """The replicas stop receiving WAL (replication cut) while writes go on for longer than the
    RPO; then the primary dies: no automatic promotion (HOLD), an operator overrides."""
    sb = fresh_sandbox
    setup_load_table(sb)
    cfg_path = Path(sb.config_path()).with_name("rpo.yaml")
    data = yaml.safe_load(Path(sb.config_path()).read_text())
    data["objectives"]["rpo"] = "2s"
    data["probes"].update({"interval": INTERVAL, "timeout": 0.3, "failure_threshold": THRESHOLD})
    data["listen"]["port"] = 0
    cfg_path.write_text(yaml.safe_dump(data))
    cfg = load_config(cfg_path)
    load = Load(sb)
    async with daemon(cfg) as rec:
        writer = asyncio.create_task(load.run())
        try:
            await until(lambda: len(load.acked) > 50, 20, "write load")
            for region in ("us-west", "eu"):  # cut replication: point at a closed port
                with psycopg.connect(sb.dsn(region), password=sb.password(), autocommit=True) as c:
                    c.execute(
                        "ALTER SYSTEM SET primary_conninfo = "
                        "'host=127.0.0.1 port=1 user=replicator'"
                    )
                    c.execute("SELECT pg_reload_conf()")
            await rec.until(
                lambda a: (
                    (a.node("us-west-1").lag_seconds or 0) > 3
                    and (a.node("eu-1").lag_seconds or 0) > 3
                ),
                timeout=30,
            )
        finally:
            load.stop.set()
            await writer
        await asyncio.to_thread(sb.kill, "us-east")
        await rec.until(
            lambda a: a.reason == "PRIMARY_DOWN" and a.primary_loss_confirmed, timeout=20
        )
        await asyncio.sleep(4 * INTERVAL)
        mem = load_memory(cfg.state_dir)
        assert (mem.state.value, mem.reason) == ("hold", "RPO_EXCEEDED")
        assert rec.last.primary == "us-east-1"  # nothing was promoted
        assert (rec.last.node("us-west-1").lag_seconds or 0) > 2
        # without the override the CLI refuses; with it the failover completes
        refused = await asyncio.to_thread(
            subprocess.run,
            [str(EXE), "failover", "--config", str(cfg_path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert "accept-data-loss" in refused.stderr
        done = await asyncio.to_thread(
            subprocess.run,
            [str(EXE), "failover", "--accept-data-loss", "--config", str(cfg_path)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        await rec.until(lambda a: a.primary == "us-west-1", timeout=30)
    inc = next(i for i in IncidentStore(cfg.state_dir).all() if i.run_id)
    assert inc.status == "failed_over"
    assert any("accept_data_loss=True" in n for n in inc.notes)
    assert inc.rpo_seconds is not None and inc.rpo_seconds > 2


def test_dry_run_changes_nothing(sandbox: Any) -> None:
    config = str(sandbox.config_path())
    state_dir = Path(load_config(config).state_dir)
    journal = state_dir / "journal.jsonl"
    before = journal.read_bytes() if journal.exists() else None
    refused = subprocess.run(
        [str(EXE), "failover", "--dry-run", "--config", config],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 4
    assert "switchover" in refused.stderr  # the primary is healthy
    out = subprocess.run(
        [str(EXE), "failover", "--dry-run", "--force", "--config", config, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)["plan"]
    assert plan["candidate"]["node"] == "us-west-1"
    assert [s["name"] for s in plan["steps"]][:2] == ["fence", "promote"]
    assert {d["provider"] for d in plan["dns"]} == {"route53", "cloudflare", "gcloud"}
    assert plan["budget"]["rto_seconds"] == 300
    assert len(plan["checksum"]) == 16
    text = subprocess.run(
        [str(EXE), "switchover", "--to", "eu", "--dry-run", "--config", config],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert text.returncode == 0, text.stderr
    assert "SWITCHOVER plan" in text.stdout and "nothing was changed" in text.stdout
    # nothing changed anywhere
    assert served(config) == {"127.0.0.1"}
    with psycopg.connect(sandbox.dsn("us-east"), password=sandbox.password()) as c:
        assert c.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    assert (journal.read_bytes() if journal.exists() else None) == before


async def test_switchover_loses_nothing_and_rejoins_the_old_primary(fresh_sandbox: Any) -> None:
    sb = fresh_sandbox
    setup_load_table(sb)
    cfg = fast_config(sb, automatic=True)
    config = str(sb.config_path())
    load = Load(sb)
    async with daemon(cfg) as rec:
        writer = asyncio.create_task(load.run())
        try:
            await until(lambda: len(load.acked) > 100, 20, "write load")
            t0 = time.monotonic()
            out = await asyncio.to_thread(
                subprocess.run,
                [str(EXE), "switchover", "--to", "us-west", "--config", config],
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            took = time.monotonic() - t0
            assert out.returncode == 0, out.stdout + out.stderr
            await until(
                lambda: any(at > t0 and w == sb.host("us-west") for _, at, w in load.acked[-50:]),
                30,
                "writes resume",
            )
        finally:
            load.stop.set()
            await writer
        await rec.until(
            lambda a: a.primary == "us-west-1" and a.reason == "ALL_HEALTHY", timeout=40
        )
    on_new = await asyncio.to_thread(ids_on, sb, "us-west")
    lost = [i for i, _, _ in load.acked if i not in on_new]
    assert lost == []
    with psycopg.connect(sb.dsn("us-east"), password=sb.password(), autocommit=True) as c:
        assert c.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        row = c.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
        assert row == ("streaming",)
    assert served(config) == {sb.host("us-west")}
    inc = next(i for i in IncidentStore(cfg.state_dir).all() if i.kind == "switchover")
    assert inc.status == "failed_over" and inc.new_primary == "us-west-1"
    before = max(at for _, at, w in load.acked if at < t0)
    after = min(at for _, at, w in load.acked if at > t0 and w == sb.host("us-west"))
    print(
        f"\n[switchover] command {took:.2f}s, write gap {after - before:.2f}s, "
        f"{len(load.acked)} acknowledged commits, 0 lost"
    )


async def test_fenced_old_primary_never_writes_again_and_rejoins(fresh_sandbox: Any) -> None:
    sb = fresh_sandbox
    cfg = fast_config(sb, automatic=True)
    async with daemon(cfg) as rec:
        await asyncio.to_thread(sb.kill, "us-east")
        await rec.until(lambda a: a.primary == "us-west-1", timeout=40)
        # the old primary is started again by someone: it comes back as a standby
        await asyncio.to_thread(sb.start, "us-east")
        with psycopg.connect(sb.dsn("us-east"), password=sb.password(), autocommit=True) as c:
            assert c.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                c.execute("CREATE TABLE split_brain(x int)")
        # ... and the daemon rewinds it and makes it follow the new primary
        await rec.until(
            lambda a: (
                a.node("us-east-1").verdict.value == "healthy"
                and a.node("us-east-1").role.value == "replica"
            ),
            timeout=60,
        )
        assert rec.last.primary == "us-west-1"
        assert not any(a.reason == "SPLIT_BRAIN" for _, _, a in rec.ticks)
    with psycopg.connect(sb.dsn("us-east"), password=sb.password(), autocommit=True) as c:
        assert c.execute("SELECT status FROM pg_stat_wal_receiver").fetchone() == ("streaming",)


def test_daemon_killed_mid_runbook_resumes_on_restart(fresh_sandbox: Any, tmp_path: Path) -> None:
    sb = fresh_sandbox
    books = tmp_path / "runbooks"
    books.mkdir()
    repo_books = Path(__file__).resolve().parents[2] / "runbooks"
    (books / "switchover.yaml").write_text((repo_books / "switchover.yaml").read_text())
    failover = yaml.safe_load((repo_books / "failover.yaml").read_text())
    at = [s["name"] for s in failover["steps"]].index("promote") + 1
    failover["steps"].insert(
        at, {"name": "hold_on", "action": "pause", "params": {"seconds": 8}, "timeout": "20s"}
    )
    (books / "failover.yaml").write_text(yaml.safe_dump(failover))
    data = yaml.safe_load(Path(sb.config_path()).read_text())
    data["probes"].update({"interval": INTERVAL, "timeout": 0.3})
    data["failover"]["runbooks_dir"] = str(books)
    cfg_path = tmp_path / "helios.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    cfg = load_config(cfg_path)
    journal = Path(cfg.state_dir) / "journal.jsonl"

    logs = tmp_path / "daemon.log"

    def start() -> subprocess.Popen[bytes]:
        with logs.open("ab") as log:
            return subprocess.Popen(
                [str(EXE), "run", "--config", str(cfg_path)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def journal_has(kind: str, step: str | None = None) -> bool:
        if not journal.exists():
            return False
        for line in journal.read_text().splitlines():
            rec = json.loads(line)
            if rec["kind"] == kind and (step is None or rec.get("step") == step):
                return True
        return False

    def wait(pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} not within {timeout}s")

    def daemon_healthy() -> bool:
        try:
            doc = httpx.get(f"http://127.0.0.1:{cfg.listen.port}/v1/status", timeout=1).json()
        except (httpx.HTTPError, ValueError):
            return False
        return bool(doc.get("reason") == "ALL_HEALTHY" and doc.get("cycle", 0) >= 3)

    first = start()
    try:
        wait(daemon_healthy, 60, "the daemon to see every region healthy")
        sb.kill("us-east")
        wait(lambda: journal_has("step_started", "hold_on"), 40, "the runbook to reach hold_on")
        first.kill()  # SIGKILL: no clean shutdown, the run is left unfinished
        first.wait(timeout=10)
        assert not journal_has("run_finished")
        assert served(str(cfg_path)) == {sb.host("us-east")}  # DNS not switched yet
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    second = start()
    try:
        wait(lambda: journal_has("run_finished"), 60, "the resumed run to finish")
        assert served(str(cfg_path)) == {sb.host("us-west")}
    finally:
        second.terminate()
        second.wait(timeout=40)
    assert second.returncode == 0, logs.read_text()[-2000:]
    records = [json.loads(x) for x in journal.read_text().splitlines()]
    runs = {r["run"] for r in records if r["kind"] == "run_started"}
    assert len(runs) == 1  # the same run was resumed, not a new one started
    assert [r["step"] for r in records if r["kind"] == "step_finished"].count("promote") == 1
    assert any(r["kind"] == "note" and r.get("event") == "resumed" for r in records)
    inc = next(i for i in IncidentStore(cfg.state_dir).all() if i.run_id)
    assert inc.status == "failed_over"
    assert any("resumed" in n for n in inc.notes)
