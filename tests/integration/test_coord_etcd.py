"""Leader election and published observations against real etcd members (never a mock).

Each test starts its own 1- or 3-member cluster on free loopback ports
(:mod:`etcd_cluster`); the electors run in this process (each with its own client, as separate
orchestrator instances would), except where a leader is killed with SIGKILL: that one runs in
a child process. Every wait goes through :func:`watch`, which asserts at every sample that at
most one elector considers itself leader.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from etcd_cluster import EtcdCluster, EtcdUnavailable, etcd_cluster
from prometheus_client import CollectorRegistry

from orchestrator.coord import CoordinationRejected, CoordinationUnavailable
from orchestrator.coord.etcd import EtcdCoordinator
from orchestrator.lease import LeaderElector, LeaderStatus

pytestmark = pytest.mark.etcd

TTL = 3.0  # renew every 1 s, step down 2.4 s after the last renewal was sent
TIMEOUT = 1.0  # one coordinator call, all endpoints
ELECTION = "orchestrator"
REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def cluster_of(size: int, extra_args: tuple[str, ...] = ()) -> Iterator[EtcdCluster]:
    try:
        with etcd_cluster(size, extra_args=extra_args) as cluster:
            yield cluster
    except EtcdUnavailable as exc:
        pytest.fail(f"etcd not available: {exc}")


@pytest.fixture
def etcd1() -> Iterator[EtcdCluster]:
    with cluster_of(1) as cluster:
        yield cluster


@pytest.fixture
def etcd3() -> Iterator[EtcdCluster]:
    with cluster_of(3) as cluster:
        yield cluster


@dataclass
class Instance:
    name: str
    coord: EtcdCoordinator
    elector: LeaderElector
    registry: CollectorRegistry
    changes: list[tuple[float, LeaderStatus]] = field(default_factory=list)

    def metric(self, name: str) -> float | None:
        return self.registry.get_sample_value(name)


@contextlib.asynccontextmanager
async def instances(
    endpoints: list[str], count: int, ttl: float = TTL, timeout: float = TIMEOUT
) -> AsyncIterator[list[Instance]]:
    """``count`` started electors, each with its own client and registry; all stopped (and
    resigned) on exit."""
    out: list[Instance] = []
    try:
        for i in range(count):
            coord = EtcdCoordinator(endpoints, prefix="/helios-test/", timeout=timeout)
            registry = CollectorRegistry()
            elector = LeaderElector(
                coord, name=ELECTION, candidate_id=f"orch-{i}", ttl=ttl, registry=registry
            )
            inst = Instance(f"orch-{i}", coord, elector, registry)
            elector.add_callback(
                lambda s, inst=inst: inst.changes.append((time.monotonic(), s))  # type: ignore[misc]
            )
            out.append(inst)
            elector.start()
        yield out
    finally:
        for inst in out:
            await inst.elector.stop()
            await inst.coord.aclose()


def leaders(group: list[Instance]) -> list[Instance]:
    return [i for i in group if i.elector.is_leader]


async def watch(
    group: list[Instance],
    until: Callable[[], object] | None = None,
    timeout: float = 10.0,
    what: str = "",
    invariant: Callable[[], object] | None = None,
    exclusive: bool = True,
) -> float:
    """Sample every 10 ms until ``until()`` is truthy (or for ``timeout`` when it is None),
    asserting at every sample that at most one instance is leader (and ``invariant()``, if
    given). Returns the time waited."""
    start = time.monotonic()
    while True:
        both = [i.name for i in leaders(group)]
        assert len(both) <= 1 or not exclusive, f"two leaders at once: {both}"
        assert invariant is None or invariant(), f"{what or 'invariant'} broken"
        waited = time.monotonic() - start
        if until is not None and until():
            return waited
        if waited > timeout:
            if until is None:
                return waited
            raise AssertionError(f"{what or 'condition'} not met within {timeout:g}s")
        await asyncio.sleep(0.01)


async def test_one_leader_then_a_larger_epoch_after_resignation(etcd1: EtcdCluster) -> None:
    async with instances(etcd1.endpoints, 3) as group:
        await watch(group, lambda: leaders(group), what="a leader")
        await watch(group, timeout=2 * TTL)  # renewals keep exactly that one leader
        (old,) = leaders(group)
        old_epoch = old.elector.epoch
        assert old_epoch is not None
        assert old.metric("helios_leader") == 1.0
        assert old.metric("helios_leader_epoch") == old_epoch
        assert (old.metric("helios_lease_renew_seconds_count") or 0) >= 3
        assert all(i.metric("helios_leader") == 0.0 for i in group if i is not old)
        info = await old.coord.leader(ELECTION)
        assert info is not None and (info.candidate_id, info.epoch) == (old.name, old_epoch)

        await old.elector.stop()
        assert not old.elector.is_leader and old.metric("helios_leader") == 0.0
        took = await watch(group, lambda: leaders(group), timeout=TTL, what="a new leader")
        (new,) = leaders(group)
        print(f"\nleadership moved after resignation in {took:.2f}s")
        new_epoch = new.elector.epoch
        assert new is not old and new_epoch is not None and new_epoch > old_epoch
        assert await new.coord.check_epoch(ELECTION, new_epoch)
        assert not await new.coord.check_epoch(ELECTION, old_epoch)
        assert old.metric("helios_leader_changes_total") == 2.0


async def test_killed_leader_process_replaced_within_the_ttl(etcd1: EtcdCluster) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD_ELECTOR,
        ",".join(etcd1.endpoints),
        str(TTL),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        child_epoch = await asyncio.wait_for(_child_leader_epoch(child.stdout), 15)
        async with instances(etcd1.endpoints, 2) as group:
            await watch(group, timeout=TTL)  # the child holds it: nobody here wins
            assert not leaders(group)
            killed_at = time.monotonic()
            os.kill(child.pid, signal.SIGKILL)
            took = await watch(group, lambda: leaders(group), timeout=2 * TTL, what="takeover")
            (new,) = leaders(group)
            print(f"\nleadership moved {took:.2f}s after SIGKILL of the leader (ttl {TTL:g}s)")
            # The lease expires at most ttl after the child's last renewal; a follower retries
            # every retry interval, and its campaign takes a few calls.
            assert time.monotonic() - killed_at < TTL + new.elector.timing.retry_interval + 1
            new_epoch = new.elector.epoch
            assert new_epoch is not None and new_epoch > child_epoch
            assert not await new.coord.check_epoch(ELECTION, child_epoch)
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        await child.wait()


async def _child_leader_epoch(stdout: asyncio.StreamReader) -> int:
    while True:
        line = await stdout.readline()
        if not line:
            raise AssertionError("the child elector exited")
        if line.startswith(b"EVENT "):
            event = json.loads(line[6:])
            if event["leader"]:
                return int(event["epoch"])


CHILD_ELECTOR = """
import asyncio, json, sys
import structlog
from orchestrator.coord.etcd import EtcdCoordinator
from orchestrator.lease import LeaderElector

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

def report(status):
    print("EVENT " + json.dumps({"leader": status.is_leader, "epoch": status.epoch}), flush=True)

async def main():
    coord = EtcdCoordinator(sys.argv[1].split(","), prefix="/helios-test/", timeout=1.0)
    elector = LeaderElector(coord, name="orchestrator", candidate_id="child",
                            ttl=float(sys.argv[2]), on_change=report)
    elector.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.parametrize("fault", ["pause", "kill"])
async def test_cut_off_leader_steps_down_before_its_lease_can_expire(
    etcd1: EtcdCluster, fault: str
) -> None:
    async with instances(etcd1.endpoints, 2) as group:
        await watch(group, lambda: leaders(group), what="a leader")
        (old,) = leaders(group)
        old_epoch = old.elector.epoch
        assert old_epoch is not None
        await watch(group, timeout=1.5)  # at least one renewal
        cut_at = time.monotonic()
        if fault == "pause":
            etcd1.pause(0)  # hangs: connections accepted, nothing answered
        else:
            etcd1.kill(0)  # refused
        last_deadline = old.elector.status.deadline
        assert last_deadline is not None

        def stepped_down() -> bool:
            nonlocal last_deadline
            if old.elector.is_leader:
                last_deadline = old.elector.status.deadline
                return False
            return True

        await watch(group, stepped_down, timeout=TTL, what="local step-down")
        # is_leader turns false at the deadline by itself; the elector's task records the
        # change when it runs (later on a loaded machine): the step-down is the earlier one.
        await watch(
            group,
            lambda: not old.changes[-1][1].is_leader,
            timeout=2.0,
            what="the step-down recorded",
        )
        assert last_deadline is not None
        down_at = min(old.changes[-1][0], last_deadline)
        margin, ttl = old.elector.timing.margin, old.elector.timing.ttl
        # The last renewal was sent at last_deadline + margin - ttl: etcd cannot expire the
        # lease before that + ttl. The leader gave up margin seconds earlier.
        assert down_at <= last_deadline + 0.05
        assert down_at < last_deadline + margin
        assert down_at - cut_at <= ttl - margin + 0.05
        print(f"\n{fault}: stepped down {down_at - cut_at:.2f}s after the cut (ttl {ttl:g}s)")
        assert old.changes[-1][1].reason == "renewal overdue"
        await watch(group, timeout=1.0)  # nobody else can win while etcd is unreachable
        assert not leaders(group)

        if fault == "pause":
            etcd1.resume(0)
        else:
            await asyncio.to_thread(etcd1.restart, 0)
        await watch(group, lambda: leaders(group), timeout=3 * TTL, what="leadership again")
        (new,) = leaders(group)
        new_epoch = new.elector.epoch
        assert new_epoch is not None and new_epoch > old_epoch
        assert not await new.coord.check_epoch(ELECTION, old_epoch)


async def test_one_of_three_members_lost_leadership_holds(etcd3: EtcdCluster) -> None:
    ttl = 6.0  # room for a raft election when the lost member led the cluster
    async with instances(etcd3.endpoints, 2, ttl=ttl, timeout=1.5) as group:
        await watch(group, lambda: leaders(group), what="a leader")
        (leader,) = leaders(group)
        epoch = leader.elector.epoch

        def holds() -> bool:
            return leader.elector.epoch == epoch

        # Every client starts on the first endpoint: lose it (refused), bring it back, then
        # hang the second one (timeouts), each for a whole ttl.
        etcd3.kill(0)
        await watch(group, timeout=ttl, invariant=holds, what="leadership (member 0 killed)")
        await asyncio.to_thread(etcd3.restart, 0)
        etcd3.pause(1)
        await watch(group, timeout=ttl, invariant=holds, what="leadership (member 1 hung)")
        etcd3.resume(1)
        failures = leader.registry.get_sample_value(
            "helios_lease_renew_failures_total", {"reason": "unavailable"}
        )
        print(f"\nrenewals that failed (then succeeded on a retry): {failures or 0:g}")

        etcd3.kill(2)  # for good, now: the rest of the test runs on two members
        await watch(group, timeout=ttl, invariant=holds, what="leadership (member 2 killed)")
        await leader.elector.stop()
        (other,) = [i for i in group if i is not leader]
        took = await watch(group, lambda: other.elector.is_leader, timeout=ttl, what="takeover")
        print(f"leadership moved in {took:.2f}s with two of three members")
        new_epoch = other.elector.epoch
        assert new_epoch is not None and new_epoch > (epoch or 0)


async def test_calls_are_bounded_when_etcd_hangs(etcd1: EtcdCluster) -> None:
    coord = EtcdCoordinator(etcd1.endpoints, timeout=0.5)
    try:
        assert await coord.leader(ELECTION) is None
        etcd1.pause(0)
        started = time.monotonic()
        with pytest.raises(CoordinationUnavailable):
            await coord.check_epoch(ELECTION, 1)
        assert time.monotonic() - started < 1.0
    finally:
        etcd1.resume(0)
        await coord.aclose()


async def test_publish_and_read_prefix_with_expiry(etcd3: EtcdCluster) -> None:
    coord = EtcdCoordinator(etcd3.endpoints, prefix="/helios-test/", timeout=TIMEOUT)
    other = EtcdCoordinator(etcd3.endpoints[::-1], prefix="/elsewhere/", timeout=TIMEOUT)
    try:
        rev_east = await coord.publish("vantage/us-east", {"at": 1.0, "primary": "up"}, ttl=2)
        rev_west = await coord.publish("vantage/us-west", {"at": 1.0, "primary": "down"}, ttl=2)
        await coord.publish("other/x", {"n": 1}, ttl=2)
        await other.publish("vantage/eu", {"n": 2}, ttl=2)
        seen = await coord.read_prefix("vantage/")
        assert set(seen) == {"vantage/us-east", "vantage/us-west"}
        assert seen["vantage/us-west"].document == {"at": 1.0, "primary": "down"}
        assert seen["vantage/us-east"].revision == rev_east < rev_west
        assert set(await other.read_prefix("")) == {"vantage/eu"}

        # us-east keeps publishing; us-west stops and expires with its ttl.
        for _ in range(4):
            await asyncio.sleep(0.8)
            await coord.publish("vantage/us-east", {"at": 2.0, "primary": "up"}, ttl=2)
        seen = await coord.read_prefix("vantage/")
        assert set(seen) == {"vantage/us-east"}
        assert seen["vantage/us-east"].document["at"] == 2.0
        assert seen["vantage/us-east"].revision > rev_west
        await asyncio.sleep(3.0)
        assert await coord.read_prefix("vantage/") == {}
    finally:
        await coord.aclose()
        await other.aclose()


async def test_authenticated_client_logs_in_again_when_its_token_expires() -> None:
    # Simple tokens live --auth-token-ttl seconds: the client must log in again by itself.
    with cluster_of(1, extra_args=("--auth-token-ttl", "1")) as cluster:
        async with httpx.AsyncClient(base_url=cluster.endpoints[0], trust_env=False) as http:
            for path, body in [
                ("/v3/auth/role/add", {"name": "root"}),
                ("/v3/auth/user/add", {"name": "root", "password": "s3cret"}),
                ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                ("/v3/auth/enable", {}),
            ]:
                (await http.post(path, json=body)).raise_for_status()
        coord = EtcdCoordinator(cluster.endpoints, username="root", password="s3cret")
        wrong = EtcdCoordinator(cluster.endpoints, username="root", password="wrong")
        anonymous = EtcdCoordinator(cluster.endpoints)
        try:
            held = await coord.campaign(ELECTION, "a", 5)
            assert held is not None
            await asyncio.sleep(2.5)  # the token has expired
            held = await coord.renew(held)
            assert await coord.check_epoch(ELECTION, held.epoch)
            with pytest.raises(CoordinationRejected, match="authentication failed"):
                await wrong.leader(ELECTION)
            with pytest.raises(CoordinationRejected, match="user name is empty"):
                await anonymous.leader(ELECTION)
            await coord.resign(held)
            assert await coord.leader(ELECTION) is None
        finally:
            for c in (coord, wrong, anonymous):
                await c.aclose()


async def test_a_deleted_leader_key_is_lost_leadership_at_the_next_renewal(
    etcd1: EtcdCluster,
) -> None:
    async with instances(etcd1.endpoints, 2) as group:
        await watch(group, lambda: leaders(group), what="a leader")
        (old,) = leaders(group)
        old_epoch = old.elector.epoch
        assert old_epoch is not None
        key = base64.b64encode(f"/helios-test/election/{ELECTION}".encode()).decode()
        async with httpx.AsyncClient(base_url=etcd1.endpoints[0], trust_env=False) as http:
            (await http.post("/v3/kv/deleterange", json={"key": key})).raise_for_status()
        # Deleting the key by hand is outside the protocol: until its next renewal the old
        # leader still believes, and another may already have won. check_epoch is the fence.
        assert not await old.coord.check_epoch(ELECTION, old_epoch)
        await watch(
            group, lambda: not old.elector.is_leader, TTL, what="step-down", exclusive=False
        )
        assert old.changes[-1][1].reason == "lease lost"
        lost = old.registry.get_sample_value(
            "helios_lease_renew_failures_total", {"reason": "lost"}
        )
        assert lost == 1.0
        await watch(group, lambda: leaders(group), timeout=TTL, what="a new leader")
        (new,) = leaders(group)
        new_epoch = new.elector.epoch
        assert new_epoch is not None and new_epoch > old_epoch
