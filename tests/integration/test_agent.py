"""The node agent against real parts: a fresh three-region sandbox, a real etcd member, and the
agent as a child process (``python -m orchestrator.cli_agent``), stopped with SIGTERM.

* Quorum lost for longer than ``fence_after``: the us-east primary stops taking writes within
  ``fence_after + interval`` plus the fence command's time; an outage shorter than
  ``fence_after`` that heals leaves it alone.
* After us-west is promoted and published as the current primary, a restarted agent brings the
  fenced us-east back only as a streaming replica of us-west.
* Without quorum at start, and without a fence_command, the agent stops PostgreSQL itself
  (standby.signal, SIGKILL): the node comes back, if started, only as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from etcd_cluster import EtcdCluster, EtcdUnavailable, etcd_cluster, free_ports

from orchestrator.agent import run_agent
from orchestrator.config import Config, load_config
from orchestrator.coord.etcd import EtcdCoordinator
from orchestrator.sandbox import Sandbox

FENCE_AFTER = 3.0
INTERVAL = 0.5
COORD_TIMEOUT = 0.5
PREFIX = "/helios-agent-test/"
FENCE_SLACK = 4.0
"""The fence command's time (a Python process: `orchestrator sandbox fence`) plus polling."""


# --- helpers -------------------------------------------------------------------------------


def write_config(
    sb: Sandbox, path: Path, endpoints: list[str], *, drop_fence_of: str | None = None
) -> Path:
    """The sandbox's generated config plus a coordination section and the agent's timing."""
    doc = yaml.safe_load(sb.config_path().read_text())
    doc["coordination"] = {
        "endpoints": endpoints,
        "prefix": PREFIX,
        "ttl": "3s",
        "timeout": f"{COORD_TIMEOUT * 1000:.0f}ms",
    }
    doc["agent"] = {
        "enabled": True,
        "fence_after": f"{FENCE_AFTER:g}s",
        "interval": f"{INTERVAL * 1000:.0f}ms",
        "fence_timeout": "20s",
        "rejoin_timeout": "90s",
    }
    for region in doc["regions"]:
        for node in region["nodes"]:
            if node["name"] == drop_fence_of:
                del node["fence_command"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    load_config(path)
    return path


class Agent:
    """``python -m orchestrator.cli_agent`` as a child process, its JSON logs in a file."""

    def __init__(self, config: Path, node: str, state_dir: Path, log: Path, *extra: str) -> None:
        self.log = log
        self.state_file = state_dir / f"{node}.json"
        argv = [sys.executable, "-m", "orchestrator.cli_agent", "--config", str(config)]
        argv += ["--node", node, "--state-dir", str(state_dir), *extra]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    out.append(doc)
        return out

    def reasons(self) -> list[str]:
        return [str(d.get("reason")) for d in self.lines()]

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM; its exit status (the test fails if it does not exit in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the agent did not stop within {timeout:g}s of SIGTERM")

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def running_agent(*args: Any) -> Iterator[Agent]:
    agent = Agent(*args)
    try:
        yield agent
    finally:
        agent.kill()  # no-op once stopped


@contextlib.contextmanager
def one_member() -> Iterator[EtcdCluster]:
    try:
        with etcd_cluster(1, prefix="helios-agent-etcd-") as cluster:
            yield cluster
    except EtcdUnavailable as exc:
        pytest.fail(f"etcd not available: {exc}")


def etcd(endpoints: list[str], work: Callable[[EtcdCoordinator], Any]) -> Any:
    async def go() -> Any:
        coord = EtcdCoordinator(endpoints, prefix=PREFIX, timeout=2.0)
        try:
            return await work(coord)
        finally:
            await coord.aclose()

    return asyncio.run(go())


def publish_primary(endpoints: list[str], service: str, node: str, region: str, epoch: int) -> None:
    doc = {"node": node, "region": region, "epoch": epoch, "at": time.time()}
    etcd(endpoints, lambda c: c.publish(f"{service}/primary", doc, 300))


def agent_doc(endpoints: list[str], service: str, node: str) -> dict[str, Any] | None:
    key = f"{service}/agents/{node}"
    pubs = etcd(endpoints, lambda c: c.read_prefix(key))
    return dict(pubs[key].document) if key in pubs else None


def connect(sb: Sandbox, region: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        sb.dsn(region), password=sb.password(), autocommit=True, connect_timeout=1
    )


def writable(sb: Sandbox, region: str) -> bool:
    """A write (DDL and an insert, each committed) succeeds on the region's node."""
    try:
        with connect(sb, region) as conn:
            conn.execute("SET statement_timeout = '1s'")
            conn.execute("CREATE TABLE IF NOT EXISTS agent_probe (at float8)")
            conn.execute("INSERT INTO agent_probe VALUES (%s)", (time.time(),))
        return True
    except psycopg.Error:
        return False


def replica_of(sb: Sandbox, region: str) -> tuple[bool, str | None, str | None]:
    """(in recovery, WAL receiver status, sender host) of the region's node."""
    with connect(sb, region) as conn:
        rec = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        wal = conn.execute("SELECT status, sender_host FROM pg_stat_wal_receiver").fetchone()
    return bool(rec and rec[0]), (wal[0] if wal else None), (wal[1] if wal else None)


def wait(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout:g}s (last: {last!r})")


def promote(sb: Sandbox, region: str) -> None:
    with connect(sb, region) as conn:
        row = conn.execute("SELECT pg_promote(true, 30)").fetchone()
    assert row and row[0], f"{region} was not promoted"
    wait(lambda: not replica_of(sb, region)[0], 30, f"{region} out of recovery")


# --- tests ---------------------------------------------------------------------------------


@pytest.mark.sandbox
@pytest.mark.etcd
def test_agent_fences_after_quorum_loss_and_rejoins_as_replica(
    fresh_sandbox: Sandbox, tmp_path: Path
) -> None:
    sb = fresh_sandbox
    service = yaml.safe_load(sb.config_path().read_text())["service"]
    state_dir = tmp_path / "agent-state"
    with one_member() as cluster:
        endpoints = cluster.endpoints
        config = write_config(sb, tmp_path / "agent.yaml", endpoints)
        publish_primary(endpoints, service, "us-east-1", "us-east", 1)  # as the leader would

        with running_agent(config, "us-east-1", state_dir, tmp_path / "agent-1.log") as agent:

            def confirmed() -> bool:
                doc = agent_doc(endpoints, service, "us-east-1")
                return bool(
                    doc and doc["role"] == "primary" and doc["reason"] == "PRIMARY_CONFIRMED"
                )

            wait(confirmed, 15, "the agent publishes its confirmed primary")
            assert writable(sb, "us-east")

            # A short outage (below fence_after) heals: the primary keeps taking writes.
            cluster.pause(0)
            time.sleep(FENCE_AFTER - 1.8)
            cluster.resume(0)
            watch_until = time.monotonic() + FENCE_AFTER + 2 * INTERVAL
            while time.monotonic() < watch_until:
                assert writable(sb, "us-east"), "fenced by an outage shorter than fence_after"
                time.sleep(0.2)
            reasons = agent.reasons()
            assert "QUORUM_LOST" in reasons and "QUORUM_REGAINED" in reasons
            assert "SELF_FENCED" not in reasons

            # A long outage: fenced within fence_after + interval + the fence command's time.
            cluster.pause(0)
            lost = time.monotonic()
            while writable(sb, "us-east"):
                assert time.monotonic() - lost < FENCE_AFTER + INTERVAL + FENCE_SLACK, (
                    f"still writable {time.monotonic() - lost:.1f}s after quorum loss"
                )
                time.sleep(0.05)
            fenced_after = time.monotonic() - lost
            print(f"\nus-east stopped taking writes {fenced_after:.2f}s after quorum loss")
            assert fenced_after >= FENCE_AFTER - INTERVAL, "fenced before fence_after"
            fence_logs = wait(
                lambda: [d for d in agent.lines() if d.get("reason") == "SELF_FENCED"],
                FENCE_SLACK,
                "the fence logged with reason SELF_FENCED",
            )
            assert fence_logs[0]["level"] == "warning"
            print(f"agent log: {fence_logs[0]['event']} (took {fence_logs[0]['took']}s)")
            status = {r.region: r for r in sb.status().regions}["us-east"]
            assert status.state == "stopped"
            assert (sb.data_dir("us-east") / "standby.signal").exists()
            record = json.loads(agent.state_file.read_text())
            assert record["fenced"] is True and record["fence_reason"] == "SELF_FENCED"

            # Once it can publish again, the heartbeat says so.
            cluster.resume(0)
            wait(
                lambda: (agent_doc(endpoints, service, "us-east-1") or {}).get("fenced"),
                10,
                "the heartbeat shows the fence",
            )
            doc = agent_doc(endpoints, service, "us-east-1")
            assert doc is not None and doc["role"] == "down"
            # The leader still names us-east-1: the agent never restarts it as a primary.
            time.sleep(2 * INTERVAL)
            assert not writable(sb, "us-east")
            assert agent.stop() == 0

        # The leader fails over to us-west and publishes it; the restarted agent rejoins
        # us-east as us-west's replica.
        promote(sb, "us-west")
        publish_primary(endpoints, service, "us-west-1", "us-west", 2)
        started = time.monotonic()
        with running_agent(config, "us-east-1", state_dir, tmp_path / "agent-2.log") as agent:

            def streaming_from_west() -> bool:
                rec, status, sender = replica_of(sb, "us-east")
                return rec and status == "streaming" and sender == sb.host("us-west")

            wait(streaming_from_west, 60, "us-east streaming from us-west", every=0.25)
            print(f"us-east rejoined as a replica of us-west in {time.monotonic() - started:.1f}s")
            assert not writable(sb, "us-east")
            assert writable(sb, "us-west")
            wait(
                lambda: (
                    (agent_doc(endpoints, service, "us-east-1") or {}).get("reason") == "REPLICA_OK"
                ),
                10,
                "the heartbeat shows a streaming replica",
            )
            doc = agent_doc(endpoints, service, "us-east-1")
            assert doc is not None
            assert (doc["role"], doc["streaming"], doc["fenced"]) == ("replica", True, False)
            assert doc["primary"] == "us-west-1" and doc["epoch"] == 2
            reasons = agent.reasons()
            assert "REJOINED" in reasons and "SELF_FENCED" not in reasons
            assert json.loads(agent.state_file.read_text())["fenced"] is False

            # Split brain: us-east promoted beside the published us-west. The agent allows
            # fence_after (a just-promoted primary sees the old document for a moment), then
            # fences it and rejoins it to us-west again (pg_rewind discards its divergence).
            promote(sb, "us-east")
            promoted = time.monotonic()
            assert writable(sb, "us-east")
            wait(lambda: not writable(sb, "us-east"), FENCE_AFTER + 10, "us-east fenced")
            held = time.monotonic() - promoted
            print(f"the second primary was fenced {held:.1f}s after its promotion")
            assert held >= FENCE_AFTER - INTERVAL
            wait(streaming_from_west, 60, "us-east streaming from us-west again", every=0.25)
            wait(lambda: agent.reasons().count("REJOINED") == 2, 10, "the second rejoin logged")
            reasons = agent.reasons()
            assert "AGENT_SUPERSEDED_GRACE" in reasons and "SUPERSEDED" in reasons
            assert agent.stop() == 0


@pytest.mark.sandbox
@pytest.mark.parametrize("hung", [False, True], ids=["running", "hung"])
def test_agent_without_quorum_at_start_stops_postgres_itself(
    fresh_sandbox: Sandbox, tmp_path: Path, hung: bool
) -> None:
    """No quorum at start and no fence_command: the agent fences the primary at once with its
    own hard stop, also when the server is frozen (SIGSTOP: the probe sees it down, and a node
    never seen may have been the primary)."""
    sb = fresh_sandbox
    nobody = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens: no quorum, ever
    config = write_config(sb, tmp_path / "agent.yaml", [nobody], drop_fence_of="us-east-1")
    state_dir = tmp_path / "agent-state"
    data_dir = sb.data_dir("us-east")
    assert writable(sb, "us-east")
    if hung:
        sb.hang("us-east")

    def state() -> str:
        return {r.region: r for r in sb.status().regions}["us-east"].state

    with running_agent(
        config, "us-east-1", state_dir, tmp_path / "agent.log", "--data-dir", str(data_dir)
    ) as agent:
        started = time.monotonic()
        wait(lambda: state() == "stopped", 10, "us-east fenced at start", every=0.05)
        print(f"\nfenced {time.monotonic() - started:.2f}s after the agent started")
        assert not writable(sb, "us-east")
        signal_file = data_dir / "standby.signal"
        assert signal_file.stat().st_uid == data_dir.stat().st_uid
        fence_logs = wait(
            lambda: [d for d in agent.lines() if d.get("reason") == "SELF_FENCED"],
            5,
            "the fence logged with reason SELF_FENCED",
        )
        assert "killed" in fence_logs[0]["event"]
        # The record is written right after the fence (off the fence's path): wait for it.
        wait(
            lambda: (
                agent.state_file.is_file()
                and json.loads(agent.state_file.read_text())["fenced"] is True
            ),
            5,
            "the fence recorded in the agent's state file",
        )
        assert agent.stop() == 0
    # Whatever starts it next, it comes back as a standby, never as a primary.
    sb.start("us-east")
    assert replica_of(sb, "us-east")[0] is True
    assert not writable(sb, "us-east")


@pytest.mark.etcd
async def test_agent_in_process_fences_a_stopped_old_primary_and_rejoins_it(
    tmp_path: Path,
) -> None:
    """In process (the suite checks no task is left behind), with a real etcd member, a node
    whose server is not running, and commands that record how they were called: a stopped
    node that may have been the primary, while another is published, is left fence_after to
    the orchestrator, then fenced and rejoined with the upstream filled in from the config."""
    calls = tmp_path / "calls.log"
    record = f">> {calls}"
    with one_member() as cluster:
        endpoints = cluster.endpoints
        dead = free_ports(1)[0]
        doc = {
            "service": "helios-test",
            "regions": [
                {
                    "name": "r1",
                    "priority": 1,
                    "nodes": [
                        {
                            "name": "a-1",
                            "dsn": f"host=127.0.0.1 port={dead} user=helios connect_timeout=1",
                            "fence_command": ["/bin/sh", "-c", f"echo fence {{node}} {record}"],
                            "rejoin_command": [
                                "/bin/sh",
                                "-c",
                                "echo rejoin {node} {region} {upstream_node} {upstream_region} "
                                f"{{upstream_host}} {{upstream_port}} {record}",
                            ],
                        }
                    ],
                },
                {
                    "name": "r2",
                    "priority": 2,
                    "nodes": [{"name": "b-1", "dsn": "host=127.0.0.2 port=55999 user=helios"}],
                },
            ],
            "coordination": {"endpoints": endpoints, "prefix": PREFIX, "ttl": 3, "timeout": 0.5},
            "agent": {"fence_after": FENCE_AFTER, "interval": INTERVAL},
            "state_dir": str(tmp_path / "state"),
        }
        cfg = Config.model_validate(doc)
        coord = EtcdCoordinator(endpoints, prefix=PREFIX, timeout=2.0)
        stop = asyncio.Event()
        started = time.monotonic()  # the node is down from the agent's first probe on
        task = asyncio.create_task(run_agent(cfg, "a-1", state_dir=tmp_path, stop=stop))
        try:

            async def heartbeat() -> dict[str, Any]:
                pubs = await coord.read_prefix("helios-test/agents/a-1")
                pub = pubs.get("helios-test/agents/a-1")
                return dict(pub.document) if pub else {}

            async def until(check: Callable[[dict[str, Any]], bool], timeout: float) -> None:
                deadline = time.monotonic() + timeout
                while not check(await heartbeat()):
                    assert not task.done(), task
                    assert time.monotonic() < deadline, await heartbeat()
                    await asyncio.sleep(0.1)

            await until(lambda d: d.get("reason") == "NO_PRIMARY_DOC", 10)
            assert (await heartbeat())["role"] == "down"
            doc_b = {"node": "b-1", "region": "r2", "epoch": 3, "at": time.time()}
            await coord.publish("helios-test/primary", doc_b, 60)
            await until(lambda d: d.get("reason") == "STALE_PRIMARY_GRACE", 5)
            assert not calls.exists()  # left to the orchestrator while down < fence_after
            await until(lambda d: d.get("reason") == "DOWN_REPLICA", FENCE_AFTER + 5)
            assert time.monotonic() - started >= FENCE_AFTER
            assert calls.read_text().splitlines() == [
                "fence a-1",
                "rejoin a-1 r1 b-1 r2 127.0.0.2 55999",
            ]
            state = json.loads((tmp_path / "a-1.json").read_text())
            assert state["fenced"] is False and state["rejoined_at"] is not None
            assert (await heartbeat())["primary"] == "b-1"
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await coord.aclose()


def test_agent_refuses_a_node_it_cannot_fence(tmp_path: Path) -> None:
    """No fence_command and no --data-dir: exit 2 before anything runs."""
    doc = {
        "service": "helios-test",
        "regions": [
            {"name": "us-east", "priority": 1, "nodes": [{"name": "a-1", "dsn": "host=127.0.0.1"}]}
        ],
        "coordination": {"endpoints": ["http://127.0.0.1:1"], "ttl": "3s", "timeout": "500ms"},
        "agent": {"fence_after": "3s", "interval": "500ms"},
        "state_dir": str(tmp_path / "state"),
    }
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump(doc))
    argv = [sys.executable, "-m", "orchestrator.cli_agent", "-c", str(config), "--node", "a-1"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert "no fence_command: pass --data-dir" in out.stderr
    out = subprocess.run(
        [*argv[:-1], "zz-9"], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 2 and "no node named 'zz-9'" in out.stderr


@pytest.mark.sandbox
@pytest.mark.etcd
def test_the_leader_fence_request_is_obeyed_and_a_silent_agent_is_waited_out(
    fresh_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The leader's side: ``fence_via_agent`` returns once the agent reports the fence (it was
    asked through etcd, the node is reachable by nobody else), and for a node whose agent is
    silent only after the agent's whole guarantee (fence_after + interval + fence_timeout)."""
    from prometheus_client import CollectorRegistry

    from orchestrator.leadership import Elected

    sb = fresh_sandbox
    service = yaml.safe_load(sb.config_path().read_text())["service"]
    with one_member() as cluster:
        endpoints = cluster.endpoints
        path = write_config(sb, tmp_path / "agent.yaml", endpoints)
        doc = yaml.safe_load(path.read_text())
        doc["agent"]["fence_timeout"] = "3s"  # the silent case's bound: 3 + 0.5 + 3 + 0.5 s
        doc["coordination"]["instance_id"] = "leader-under-test"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        cfg: Config = load_config(path)
        publish_primary(endpoints, service, "us-east-1", "us-east", 1)
        bound = FENCE_AFTER + INTERVAL + 3.0 + COORD_TIMEOUT

        async def as_leader() -> tuple[str, float, str, float]:
            leadership = Elected.build(cfg, CollectorRegistry())
            leadership.elector.start()
            try:
                await asyncio.wait_for(leadership.elector.wait_for(lambda s: s.is_leader), 10)
                t0 = time.monotonic()
                obeyed = await leadership.fence_via_agent("us-east-1")
                took = time.monotonic() - t0
                t1 = time.monotonic()
                silent = await leadership.fence_via_agent("eu-1")  # no agent runs for eu-1
                waited = time.monotonic() - t1
                return obeyed, took, silent, waited
            finally:
                await leadership.elector.stop()
                await leadership.coordinator.aclose()

        with running_agent(
            path, "us-east-1", tmp_path / "agent-state", tmp_path / "agent.log"
        ) as agent:
            wait(
                lambda: (agent_doc(endpoints, service, "us-east-1") or {}).get("role") == "primary",
                15,
                "the agent publishes its primary",
            )
            assert writable(sb, "us-east")
            obeyed, took, silent, waited = asyncio.run(as_leader())
            assert "fenced by its agent" in obeyed, obeyed
            assert not writable(sb, "us-east"), "fence_via_agent returned before the fence"
            assert took < INTERVAL * 2 + FENCE_SLACK, took
            assert "FENCE_REQUESTED" in agent.reasons()
            assert "silent" in silent, silent
            assert bound <= waited < bound + 2.0, (waited, bound)
            assert writable(sb, "eu") is False  # a replica: it never took writes
