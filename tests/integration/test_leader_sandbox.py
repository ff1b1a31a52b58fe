"""Two orchestrator instances (as in two regions, each with its own state dir) on the real
sandbox and a real etcd: exactly one leads and acts; a lost primary is failed over exactly once,
by the leader, after both vantage points saw it fail; when the leader stops, the other instance
takes over within the lease's ttl."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from daemon_helpers import Recorder
from etcd_cluster import EtcdCluster, EtcdUnavailable, etcd_cluster

from orchestrator.app import run_daemon
from orchestrator.config import Config, load_config
from orchestrator.incidents import IncidentStore

pytestmark = [pytest.mark.sandbox, pytest.mark.etcd]
TTL = 3.0
TOKEN = "t" * 8 + "0123456789abcdef"


@pytest.fixture
def etcd() -> Iterator[EtcdCluster]:
    try:
        with etcd_cluster(1) as cluster:
            yield cluster
    except EtcdUnavailable as exc:
        pytest.fail(f"etcd not available: {exc}")


def instance_config(sb: Any, tmp: Path, name: str, vantage: str, etcd: EtcdCluster) -> Config:
    data = yaml.safe_load(Path(sb.config_path()).read_text())
    data["probes"].update(
        {"interval": 0.5, "timeout": 0.3, "failure_threshold": 3, "recovery_threshold": 3}
    )
    data["listen"]["port"] = 0
    data["state_dir"] = str(tmp / name)
    data.setdefault("failover", {})["automatic"] = True
    data["notifications"] = {"channels": []}
    token = tmp / "api.token"
    token.write_text(TOKEN + "\n")
    data["api"] = {"tokens": [{"name": "oncall", "token": f"file:{token}"}]}
    data["coordination"] = {
        "endpoints": etcd.endpoints,
        "ttl": f"{TTL}s",
        "timeout": "1s",
        "instance_id": name,
        "vantage": vantage,
        "prefix": "/helios-test/",
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


@contextlib.asynccontextmanager
async def instance(cfg: Config) -> AsyncIterator[tuple[Recorder, asyncio.Event]]:
    rec = Recorder()
    stop = asyncio.Event()

    def listening(port: int) -> None:
        rec.port = port

    task = asyncio.create_task(run_daemon(cfg, stop=stop, on_cycle=rec, on_listening=listening))
    try:
        await rec.until(lambda a: a.reason == "ALL_HEALTHY", timeout=30)
        yield rec, stop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


async def leadership(http: httpx.AsyncClient, rec: Recorder) -> dict[str, Any]:
    doc = (await http.get(f"http://127.0.0.1:{rec.port}/v1/status")).json()
    return dict(doc["leadership"])


async def leader_gauge(http: httpx.AsyncClient, rec: Recorder) -> float:
    text = (await http.get(f"http://127.0.0.1:{rec.port}/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("helios_leader "))
    return float(line.split()[1])


async def wait_leaders(http: httpx.AsyncClient, recs: list[Recorder], timeout: float) -> list[int]:
    """Indexes of the instances that lead, once exactly one does."""
    deadline = time.monotonic() + timeout
    while True:
        leads = [i for i, r in enumerate(recs) if (await leadership(http, r))["leader"]]
        if len(leads) == 1:
            return leads
        assert time.monotonic() < deadline, f"leaders after {timeout}s: {leads}"
        await asyncio.sleep(0.1)


async def test_one_leader_acts_and_the_other_takes_over(
    fresh_sandbox: Any, etcd: EtcdCluster, tmp_path: Path
) -> None:
    sb = fresh_sandbox
    cfgs = [
        instance_config(sb, tmp_path, "orch-east", "us-east", etcd),
        instance_config(sb, tmp_path, "orch-west", "us-west", etcd),
    ]
    async with instance(cfgs[0]) as (rec_a, stop_a), httpx.AsyncClient(timeout=5) as http:
        await wait_until_leader(http, rec_a, TTL + 5)  # the first instance up leads
        async with instance(cfgs[1]) as (rec_b, _):
            recs = [rec_a, rec_b]
            assert await wait_leaders(http, recs, 5) == [0]
            assert [await leader_gauge(http, r) for r in recs] == [1.0, 0.0]
            epoch = (await leadership(http, rec_a))["epoch"]
            assert isinstance(epoch, int) and epoch > 0
            assert (await leadership(http, rec_b))["detail"]

            # The primary dies: both vantage points see it; only the leader fails over, once.
            sb.kill("us-east")
            await rec_a.until(lambda a: a.primary not in (None, "us-east-1"), timeout=45)
            await rec_b.until(lambda a: a.primary not in (None, "us-east-1"), timeout=15)
            await asyncio.sleep(2)
            incidents = [IncidentStore(c.state_dir).all() for c in cfgs]
            assert [len(x) for x in incidents] == [1, 0]
            inc = incidents[0][0]
            assert inc.status == "failed_over" and inc.new_primary is not None
            journal = (Path(cfgs[0].state_dir) / "journal.jsonl").read_text()
            assert f'"epoch":{epoch}' in journal.replace(" ", "")
            assert not (Path(cfgs[1].state_dir) / "journal.jsonl").exists()

            # pause is shared: set on the leader, seen by the follower (the next leader).
            resp = await http.post(
                f"http://127.0.0.1:{rec_a.port}/v1/pause",
                json={"execute": True, "reason": "shared"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert resp.status_code == 200, resp.text
            refused = await http.post(
                f"http://127.0.0.1:{rec_b.port}/v1/resume",
                json={"execute": True},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert refused.status_code == 409 and "not the leader" in refused.text
            deadline = time.monotonic() + 5
            while not ((await leadership(http, rec_b)).get("shared_controls") or {}).get("paused"):
                assert time.monotonic() < deadline, "the follower never saw the shared pause"
                await asyncio.sleep(0.2)

            # The leader stops (resigning its lease): the other instance leads within the ttl.
            t0 = time.monotonic()
            stop_a.set()
            await wait_until_leader(http, rec_b, TTL + 2)
            assert time.monotonic() - t0 < TTL
            assert (await leadership(http, rec_b))["epoch"] > epoch
            assert await leader_gauge(http, rec_b) == 1.0
            await rec_b.until(lambda a: True, timeout=5)  # a tick as leader: it is paused
            status = (await http.get(f"http://127.0.0.1:{rec_b.port}/v1/status")).json()
            assert status["leadership"]["shared_controls"]["paused"] is True
            deadline = time.monotonic() + 5
            while (
                "helios_paused 1.0"
                not in (await http.get(f"http://127.0.0.1:{rec_b.port}/metrics")).text
            ):
                assert time.monotonic() < deadline, "the new leader is not paused"
                await asyncio.sleep(0.2)


async def wait_until_leader(http: httpx.AsyncClient, rec: Recorder, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (await leadership(http, rec))["leader"]:
        assert time.monotonic() < deadline, f"no leadership within {timeout}s"
        await asyncio.sleep(0.1)


async def test_no_failover_until_a_quorum_of_vantage_points_sees_the_primary_fail(
    fresh_sandbox: Any, etcd: EtcdCluster, tmp_path: Path
) -> None:
    sb = fresh_sandbox
    east = instance_config(sb, tmp_path, "orch-east", "us-east", etcd)
    west = instance_config(sb, tmp_path, "orch-west", "us-west", etcd)
    async with instance(east) as (rec_a, _), httpx.AsyncClient(timeout=5) as http:
        await wait_until_leader(http, rec_a, TTL + 5)
        sb.kill("us-east")
        # The leader alone sees the primary DOWN and the replicas confirm it, but one vantage
        # point is not a quorum (2 of 2 configured by default): no failover.
        await rec_a.until(lambda a: a.primary_loss_confirmed, timeout=15)
        await asyncio.sleep(4)
        assert rec_a.last.primary in (None, "us-east-1")
        assert IncidentStore(east.state_dir).all() == [] or all(
            i.new_primary is None for i in IncidentStore(east.state_dir).all()
        )
        # A second vantage point agrees: the leader fails over.
        async with instance_seeing_down(west) as rec_b:
            await rec_a.until(lambda a: a.primary not in (None, "us-east-1"), timeout=30)
            assert rec_b.ticks
        # The run goes on after the promotion (DNS, verification, notification).
        deadline = time.monotonic() + 60
        while not all(i.closed_at for i in IncidentStore(east.state_dir).all()):
            assert time.monotonic() < deadline, "the failover run did not finish"
            await asyncio.sleep(0.2)
        [inc] = IncidentStore(east.state_dir).all()
        assert inc.status == "failed_over"


@contextlib.asynccontextmanager
async def instance_seeing_down(cfg: Config) -> AsyncIterator[Recorder]:
    """An instance started while the primary is down (it never sees ALL_HEALTHY)."""
    rec = Recorder()
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(cfg, stop=stop, on_cycle=rec))
    try:
        yield rec
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def held_runbooks(tmp: Path, hold: float) -> Path:
    """The product runbooks, with a pause after the failover's promotion (a window in which
    the leader can be killed with the run half done)."""
    import shutil

    src = Path(__file__).resolve().parents[2] / "runbooks"
    dst = tmp / "runbooks"
    shutil.copytree(src, dst)
    book = yaml.safe_load((dst / "failover.yaml").read_text())
    at = next(i for i, s in enumerate(book["steps"]) if s["name"] == "promote") + 1
    book["steps"].insert(
        at,
        {
            "name": "hold",
            "action": "pause",
            "params": {"seconds": hold},
            "timeout": f"{hold + 10:g}s",
            "on_failure": "continue",
        },
    )
    (dst / "failover.yaml").write_text(yaml.safe_dump(book, sort_keys=False))
    return dst


def journal_records(cfg: Config) -> list[dict[str, Any]]:
    import json

    path = Path(cfg.state_dir) / "journal.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_a_run_in_flight_is_finished_exactly_once_by_the_next_leader(
    fresh_sandbox: Any, etcd: EtcdCluster, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    sb = fresh_sandbox
    books = held_runbooks(tmp_path, hold=8.0)
    cfgs, paths, procs = [], [], []
    for name, vantage in (("orch-east", "us-east"), ("orch-west", "us-west")):
        instance_config(sb, tmp_path, name, vantage, etcd)  # writes <name>.yaml
        doc = yaml.safe_load(Path(tmp_path / f"{name}.yaml").read_text())
        doc["failover"]["runbooks_dir"] = str(books)
        doc["listen"]["port"] = free_port()
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        cfgs.append(load_config(path))
        paths.append(path)
    logs = [tmp_path / "east.log", tmp_path / "west.log"]
    try:
        for path, log in zip(paths, logs, strict=True):
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "orchestrator.cli", "run", "-c", str(path)],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
            await asyncio.sleep(1.5)  # the first one up leads
        urls = [f"http://127.0.0.1:{c.listen.port}" for c in cfgs]
        async with httpx.AsyncClient(timeout=5) as http:

            async def lead(i: int) -> bool:
                try:
                    doc = (await http.get(f"{urls[i]}/v1/status")).json()
                    return bool(doc["leadership"]["leader"])
                except (httpx.HTTPError, KeyError, ValueError):
                    return False

            deadline = time.monotonic() + 20
            while not (await lead(0) and not await lead(1)):
                assert time.monotonic() < deadline, "orch-east did not lead"
                await asyncio.sleep(0.2)
            sb.kill("us-east")
            # Wait until the leader's run has promoted and sits in the held step, then kill it.
            deadline = time.monotonic() + 40
            while not any(
                r["kind"] == "step_started" and r.get("step") == "hold"
                for r in journal_records(cfgs[0])
            ):
                assert procs[0].poll() is None, logs[0].read_text()[-3000:]
                assert time.monotonic() < deadline, logs[0].read_text()[-3000:]
                await asyncio.sleep(0.1)
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
            killed_at = time.monotonic()
            deadline = killed_at + 60
            while not any(r["kind"] == "run_finished" for r in journal_records(cfgs[1])):
                assert procs[1].poll() is None, logs[1].read_text()[-3000:]
                assert time.monotonic() < deadline, logs[1].read_text()[-4000:]
                await asyncio.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    east, west = journal_records(cfgs[0]), journal_records(cfgs[1])
    run = next(r["run"] for r in east if r["kind"] == "run_started")
    assert not any(r["kind"] == "run_finished" for r in east)
    mine = [r for r in west if r["run"] == run]
    started = [r["step"] for r in mine if r["kind"] == "step_started"]
    finished = [r["step"] for r in mine if r["kind"] == "step_finished"]
    # Everything the first leader did is adopted; nothing it finished is done again.
    assert started.count("fence") == 1 and started.count("promote") == 1, started
    assert finished.count("promote") == 1, finished
    assert [r["kind"] for r in mine].count("run_finished") == 1
    assert any(r["kind"] == "note" and r.get("event") == "resumed" for r in mine)
    epochs = {r["step"]: r.get("epoch") for r in mine if r["kind"] == "step_started"}
    assert epochs["promote"] is not None and epochs["switch_dns"] > epochs["promote"], epochs
    assert "RUN_ADOPTED" in logs[1].read_text()
