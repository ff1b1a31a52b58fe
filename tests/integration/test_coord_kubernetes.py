"""Leader election and published observations on Kubernetes Leases, against the local stand-in
of the API server (:class:`KubernetesStandIn`: real HTTP on loopback, resourceVersion
optimistic concurrency, Status objects, bearer token), never a mock of the coordinator.

The same behaviours as tests/integration/test_coord_etcd.py: electors run in this process (each
with its own client, as separate orchestrator instances would), except the leader killed with
SIGKILL, which runs in a child process. Every wait goes through :func:`watch`, which asserts at
every sample that at most one elector considers itself leader. The timing rules that need a
lease's whole duration to pass are checked with injected clocks, so the suite stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from orchestrator.coord import (
    CoordinationRejected,
    CoordinationUnavailable,
    Leadership,
    LostLeadership,
)
from orchestrator.coord.kubernetes import (
    ANN_DOCUMENT,
    ANN_KEY,
    LABEL_PREFIX,
    LABEL_ROLE,
    KubernetesCoordinator,
)
from orchestrator.lease import LeaderElector, LeaderStatus
from orchestrator.sandbox.standins.kubernetes import KubernetesStandIn, LeaseStore

TOKEN = "k8s-test-token-0123456789"
NAMESPACE = "helios"
TTL = 3.0  # renew every 1 s, step down 2.4 s after the last renewal was sent
TIMEOUT = 1.0  # one coordinator call, all API server URLs
ELECTION = "helios-db/leader"
LEASE = "helios-test.helios-db.leader"  # prefix /helios-test/ + the election's segments
REPO = Path(__file__).resolve().parents[2]


class ApiServers:
    """Stand-ins sharing one store (API servers in front of one etcd); each can be stopped and
    started again on its port."""

    def __init__(self, count: int) -> None:
        self.store = LeaseStore()
        self.servers = [self._new() for _ in range(count)]

    def _new(self, port: int = 0) -> KubernetesStandIn:
        srv = KubernetesStandIn(TOKEN, namespaces=[NAMESPACE], store=self.store, port=port)
        srv.start()
        return srv

    @property
    def urls(self) -> list[str]:
        return [s.base_url for s in self.servers]

    def down(self, i: int) -> int:
        port = self.servers[i].port
        self.servers[i].stop()
        return port

    def up(self, i: int, port: int) -> None:
        self.servers[i] = self._new(port)

    def lease(self, name: str = LEASE) -> dict[str, Any] | None:
        found = [x for x in self.store.leases(NAMESPACE) if x["metadata"]["name"] == name]
        return found[0] if found else None

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


@pytest.fixture
def api1() -> Iterator[ApiServers]:
    servers = ApiServers(1)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def api2() -> Iterator[ApiServers]:
    servers = ApiServers(2)
    try:
        yield servers
    finally:
        servers.stop()


def client(urls: list[str], **kwargs: Any) -> KubernetesCoordinator:
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("token", TOKEN)
    return KubernetesCoordinator(urls, namespace=NAMESPACE, prefix="/helios-test/", **kwargs)


class FakeTime:
    """A monotonic and a wall clock that move only when told."""

    def __init__(self, wall: float | None = None) -> None:
        self.mono = 1000.0
        self.wall = time.time() if wall is None else wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall


def faked(urls: list[str], clock: FakeTime) -> KubernetesCoordinator:
    return client(urls, clock=clock.monotonic, wall=clock.time)


@dataclass
class Instance:
    name: str
    coord: KubernetesCoordinator
    elector: LeaderElector
    registry: CollectorRegistry
    changes: list[tuple[float, LeaderStatus]] = field(default_factory=list)

    def metric(self, name: str) -> float | None:
        return self.registry.get_sample_value(name)


@contextlib.asynccontextmanager
async def instances(
    urls: list[str], count: int, ttl: float = TTL, timeout: float = TIMEOUT
) -> AsyncIterator[list[Instance]]:
    """``count`` started electors, each with its own client and registry; all stopped (and
    resigned) on exit."""
    out: list[Instance] = []
    try:
        for i in range(count):
            coord = client(urls, timeout=timeout)
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
) -> float:
    """Sample every 10 ms until ``until()`` is truthy (or for ``timeout`` when it is None),
    asserting at every sample that at most one instance is leader (and ``invariant()``).
    Returns the time waited."""
    start = time.monotonic()
    while True:
        both = [i.name for i in leaders(group)]
        assert len(both) <= 1, f"two leaders at once: {both}"
        assert invariant is None or invariant(), f"{what or 'invariant'} broken"
        waited = time.monotonic() - start
        if until is not None and until():
            return waited
        if waited > timeout:
            if until is None:
                return waited
            raise AssertionError(f"{what or 'condition'} not met within {timeout:g}s")
        await asyncio.sleep(0.01)


# --- electors on the real clock ---------------------------------------------------------------


async def test_one_leader_then_a_larger_epoch_after_resignation(api1: ApiServers) -> None:
    async with instances(api1.urls, 3) as group:
        await watch(group, lambda: leaders(group), what="a leader")
        await watch(group, timeout=2 * TTL)  # renewals keep exactly that one leader
        (old,) = leaders(group)
        old_epoch = old.elector.epoch
        assert old_epoch is not None
        assert old.metric("helios_leader") == 1.0
        assert old.metric("helios_leader_epoch") == old_epoch
        assert (old.metric("helios_lease_renew_seconds_count") or 0) >= 3
        assert all(i.metric("helios_leader") == 0.0 for i in group if i is not old)
        info = await group[0].coord.leader(ELECTION)
        assert info is not None and (info.candidate_id, info.epoch) == (old.name, old_epoch)
        lease = api1.lease()
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == old.name
        assert lease["spec"]["leaseTransitions"] == old_epoch
        assert lease["spec"]["leaseDurationSeconds"] == 3

        await old.elector.stop()  # resigns: clears holderIdentity, keeps leaseTransitions
        assert not old.elector.is_leader and old.metric("helios_leader") == 0.0
        took = await watch(group, lambda: leaders(group), timeout=TTL, what="a new leader")
        (new,) = leaders(group)
        print(f"\nleadership moved after resignation in {took:.2f}s")
        # A follower retries every retry interval (0.5 s here) and takes a free Lease at once,
        # without waiting for its duration.
        assert took < new.elector.timing.retry_interval + 1.0
        new_epoch = new.elector.epoch
        assert new is not old and new_epoch == old_epoch + 1
        assert await new.coord.check_epoch(ELECTION, new_epoch)
        assert not await new.coord.check_epoch(ELECTION, old_epoch)
        assert old.metric("helios_leader_changes_total") == 2.0


async def test_killed_leader_process_replaced_within_the_ttl(api1: ApiServers) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD_ELECTOR,
        api1.urls[0],
        str(TTL),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=REPO,
        start_new_session=True,
        env={**os.environ, "HELIOS_TEST_TOKEN": TOKEN},
    )
    try:
        assert child.stdout is not None
        child_epoch = await asyncio.wait_for(_child_leader_epoch(child.stdout), 15)
        async with instances(api1.urls, 2) as group:
            await watch(group, timeout=TTL)  # the child holds it: nobody here wins
            assert not leaders(group)
            killed_at = time.monotonic()
            os.kill(child.pid, signal.SIGKILL)
            took = await watch(group, lambda: leaders(group), timeout=2 * TTL, what="takeover")
            (new,) = leaders(group)
            print(f"\nleadership moved {took:.2f}s after SIGKILL of the leader (ttl {TTL:g}s)")
            # The followers saw the child's last renewal within a retry interval; they take the
            # Lease once it has stayed unchanged for its duration.
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
import asyncio, json, os, sys
import structlog
from orchestrator.coord.kubernetes import KubernetesCoordinator
from orchestrator.lease import LeaderElector

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

def report(status):
    print("EVENT " + json.dumps({"leader": status.is_leader, "epoch": status.epoch}), flush=True)

async def main():
    coord = KubernetesCoordinator([sys.argv[1]], namespace="helios", prefix="/helios-test/",
                                  token=os.environ["HELIOS_TEST_TOKEN"], timeout=1.0)
    elector = LeaderElector(coord, name="helios-db/leader", candidate_id="child",
                            ttl=float(sys.argv[2]), on_change=report)
    elector.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.parametrize("fault", ["hang", "down"])
async def test_cut_off_leader_steps_down_before_its_lease_can_expire(
    api1: ApiServers, fault: str
) -> None:
    async with instances(api1.urls, 2) as group:
        await watch(group, lambda: leaders(group), what="a leader")
        (old,) = leaders(group)
        old_epoch = old.elector.epoch
        assert old_epoch is not None
        await watch(group, timeout=1.5)  # at least one renewal
        cut_at = time.monotonic()
        port = 0
        if fault == "hang":
            api1.servers[0].faults.inject(hang=True, count=None)  # accepted, never answered
        else:
            port = api1.down(0)  # refused
        last_deadline = old.elector.status.deadline
        assert last_deadline is not None

        def stepped_down() -> bool:
            nonlocal last_deadline
            if old.elector.is_leader:
                last_deadline = old.elector.status.deadline
                return False
            return True

        await watch(group, stepped_down, timeout=TTL, what="local step-down")
        down_at = old.changes[-1][0]
        margin, ttl = old.elector.timing.margin, old.elector.timing.ttl
        assert last_deadline is not None
        # The last renewal was sent at last_deadline + margin - ttl: no other instance can
        # take the Lease before that + ttl. The leader gave up margin seconds earlier.
        assert down_at <= last_deadline + 0.05
        assert down_at < last_deadline + margin
        assert down_at - cut_at <= ttl - margin + 0.05
        print(f"\n{fault}: stepped down {down_at - cut_at:.2f}s after the cut (ttl {ttl:g}s)")
        assert old.changes[-1][1].reason == "renewal overdue"
        await watch(group, timeout=1.0)  # nobody else can win while the API is unreachable
        assert not leaders(group)

        if fault == "hang":
            api1.servers[0].faults.clear()  # hung requests (a late renewal too) now apply
        else:
            api1.up(0, port)
        await watch(group, lambda: leaders(group), timeout=3 * TTL, what="leadership again")
        (new,) = leaders(group)
        new_epoch = new.elector.epoch
        assert new_epoch is not None and new_epoch > old_epoch
        assert not await new.coord.check_epoch(ELECTION, old_epoch)


async def test_one_of_two_api_servers_lost_leadership_holds(api2: ApiServers) -> None:
    async with instances(api2.urls, 2) as group:
        await watch(group, lambda: leaders(group), what="a leader")
        (leader,) = leaders(group)
        epoch = leader.elector.epoch

        def holds() -> bool:
            return leader.elector.epoch == epoch

        # Every client starts on the first URL: hang it (timeouts), then refuse it.
        api2.servers[0].faults.inject(hang=True, count=None)
        await watch(group, timeout=TTL, invariant=holds, what="leadership (server 0 hung)")
        api2.servers[0].faults.clear()
        api2.down(1)
        await watch(group, timeout=TTL, invariant=holds, what="leadership (server 1 down)")
        failures = leader.registry.get_sample_value(
            "helios_lease_renew_failures_total", {"reason": "unavailable"}
        )
        assert not failures, "every renewal should have succeeded on the other API server"


# --- the protocol, call by call ---------------------------------------------------------------


async def test_calls_are_bounded_when_the_api_server_hangs_or_fails(api1: ApiServers) -> None:
    coord = client(api1.urls, timeout=0.5)
    try:
        assert await coord.leader(ELECTION) is None
        api1.servers[0].faults.inject(hang=True, count=None)
        started = time.monotonic()
        with pytest.raises(CoordinationUnavailable, match="timed out"):
            await coord.check_epoch(ELECTION, 1)
        assert time.monotonic() - started < 1.0
        api1.servers[0].faults.clear()
        api1.servers[0].faults.inject(status=503, count=1)
        with pytest.raises(CoordinationUnavailable, match="503"):
            await coord.campaign(ELECTION, "a", TTL)
        api1.servers[0].faults.inject(status=429, count=1, retry_after=1)
        with pytest.raises(CoordinationUnavailable, match="429"):
            await coord.read_prefix("")
        assert await coord.campaign(ELECTION, "a", TTL) is not None
    finally:
        await coord.aclose()


async def campaigns_at_once(
    srv: KubernetesStandIn, coords: list[KubernetesCoordinator]
) -> list[Leadership | None]:
    """Every coordinator campaigns; their GETs are held until all have arrived, then answered
    together, so that all of them read the same state before any writes."""
    srv.faults.inject(hang=True, methods={"GET"}, count=len(coords))
    tasks = [asyncio.create_task(c.campaign(ELECTION, f"c{i}", TTL)) for i, c in enumerate(coords)]
    try:
        for _ in range(500):
            if srv.faults.hung == len(coords):
                break
            await asyncio.sleep(0.01)
        assert srv.faults.hung == len(coords), "the GETs did not all arrive"
    finally:
        srv.faults.clear()
    return list(await asyncio.gather(*tasks))


async def test_concurrent_campaigns_have_one_winner_by_resource_version(
    api1: ApiServers,
) -> None:
    coords = [client(api1.urls, timeout=8.0) for _ in range(5)]
    srv = api1.servers[0]
    try:
        # All see "absent" and POST: one creates it, the others get 409 AlreadyExists.
        results = await campaigns_at_once(srv, coords)
        won = [r for r in results if r is not None]
        assert len(won) == 1 and won[0].epoch == 1
        posts = [r.status for r in srv.faults.requests if r.method == "POST"]
        assert posts.count(201) == 1 and set(posts) == {201, 409}

        winner = coords[results.index(won[0])]
        await winner.resign(won[0])
        lease = api1.lease()
        assert lease is not None
        assert "holderIdentity" not in lease["spec"] and lease["spec"]["leaseTransitions"] == 1
        # All read the same resourceVersion of the free Lease and PUT: one wins, the others
        # get 409 Conflict.
        srv.faults.reset_log()
        results = await campaigns_at_once(srv, coords)
        won = [r for r in results if r is not None]
        assert len(won) == 1 and won[0].epoch == 2
        puts = [r.status for r in srv.faults.requests if r.method == "PUT"]
        assert puts.count(200) == 1 and set(puts) == {200, 409}
        print(f"\n{len(posts)} concurrent creates, {len(puts)} concurrent takeovers: one won each")
        assert await coords[0].check_epoch(ELECTION, 2)
        assert not await coords[0].check_epoch(ELECTION, 1)
    finally:
        for c in coords:
            await c.aclose()


async def test_takeover_needs_the_lease_expired_and_unchanged_for_its_duration(
    api1: ApiServers,
) -> None:
    a_time, b_time = FakeTime(), FakeTime()
    b_time.wall += 3600  # b's wall clock is an hour ahead: renewTime alone would say "expired"
    a, b = faked(api1.urls, a_time), faked(api1.urls, b_time)
    try:
        held = await a.campaign(ELECTION, "a", TTL)
        assert held is not None and held.epoch == 1 and held.ttl == 3.0
        assert await b.campaign(ELECTION, "b", TTL) is None  # first sight of this version
        b_time.advance(2.9)
        assert await b.campaign(ELECTION, "b", TTL) is None
        a_time.advance(1.0)
        held = await a.renew(held)  # a new resourceVersion: b starts watching again
        b_time.advance(0.5)
        assert await b.campaign(ELECTION, "b", TTL) is None
        b_time.advance(2.9)
        assert await b.campaign(ELECTION, "b", TTL) is None
        b_time.advance(0.2)  # unchanged for 3 s by b's own clock: a crashed or was cut off
        taken = await b.campaign(ELECTION, "b", TTL)
        assert taken is not None and taken.epoch == 2

        # The deposed leader: its renewal conflicts, its epoch is no longer current.
        assert await b.check_epoch(ELECTION, 2)
        assert not await a.check_epoch(ELECTION, 1)
        with pytest.raises(LostLeadership, match="held by 'b' with epoch 2"):
            await a.renew(held)
        await a.resign(held)  # idempotent: resigning a lost leadership changes nothing
        info = await a.leader(ELECTION)
        assert info is not None and (info.candidate_id, info.epoch) == ("b", 2)

        # A holder whose clock runs behind the Lease's renewTime cannot be overtaken early
        # either: the wall clock must agree too.
        c_time = FakeTime(wall=b_time.wall - 3600)
        c = faked(api1.urls, c_time)
        try:
            assert await c.campaign(ELECTION, "c", TTL) is None
            c_time.mono += 10
            assert await c.campaign(ELECTION, "c", TTL) is None  # renewTime is in c's future
            c_time.wall += 3600 + 10
            taken = await c.campaign(ELECTION, "c", TTL)
            assert taken is not None and taken.epoch == 3
            assert await c.check_epoch(ELECTION, 3)
            # check_epoch judges by the wall clock: unrenewed for its duration, it is over.
            c_time.advance(TTL + 0.01)
            assert not await c.check_epoch(ELECTION, 3)
        finally:
            await c.aclose()
    finally:
        await a.aclose()
        await b.aclose()


async def test_every_renewal_is_a_write_even_with_a_frozen_wall_clock(api1: ApiServers) -> None:
    frozen = FakeTime()  # never advances: identical renewTimes would make no-op PUTs
    coord, watcher = faked(api1.urls, frozen), client(api1.urls)
    try:
        held = await coord.campaign(ELECTION, "a", TTL)
        assert held is not None
        versions = [held.lease_id]
        for _ in range(3):
            held = await coord.renew(held)
            versions.append(held.lease_id)
        assert versions == sorted(set(versions)), "a renewal left the resourceVersion alone"
        assert await watcher.check_epoch(ELECTION, 1)
    finally:
        await coord.aclose()
        await watcher.aclose()


async def test_a_deleted_lease_is_lost_leadership_and_its_epoch_never_returns(
    api1: ApiServers,
) -> None:
    a, b = client(api1.urls), client(api1.urls)
    try:
        held = await a.campaign(ELECTION, "orch", TTL)
        assert held is not None and held.epoch == 1
        # kubectl delete lease: outside the protocol. The count of transitions restarts.
        async with httpx.AsyncClient(base_url=api1.urls[0], trust_env=False) as http:
            resp = await http.delete(
                f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE}",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert resp.status_code == 200 and resp.json()["status"] == "Success"
        # Another instance, even under the same identity (a restarted pod), wins epoch 1 again.
        again = await b.campaign(ELECTION, "orch", TTL)
        assert again is not None and again.epoch == 1
        # The old holder's epoch 1 is not the current one: the term tells them apart.
        assert not await a.check_epoch(ELECTION, 1)
        assert await b.check_epoch(ELECTION, 1)
        with pytest.raises(LostLeadership):
            await a.renew(held)
        # A renewal by uid precondition never resurrects a deleted Lease.
        async with httpx.AsyncClient(base_url=api1.urls[0], trust_env=False) as http:
            await http.delete(
                f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE}",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
        with pytest.raises(LostLeadership, match="gone"):
            await b.renew(again)
        assert api1.lease() is None
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_campaign_whose_answer_was_lost_is_adopted(api1: ApiServers) -> None:
    coord, other = client(api1.urls, timeout=1.0), client(api1.urls)
    srv = api1.servers[0]
    try:
        # The POST hangs until the client has given up, and is applied after that.
        srv.faults.inject(hang=True, methods={"POST"})
        with pytest.raises(CoordinationUnavailable):
            await coord.campaign(ELECTION, "a", TTL)
        gave_up = time.monotonic()
        assert srv.faults.hung == 1
        srv.faults.clear()
        for _ in range(300):
            if api1.lease() is not None:
                break
            await asyncio.sleep(0.01)
        lease = api1.lease()
        assert lease is not None and lease["spec"]["holderIdentity"] == "a"
        assert await other.campaign(ELECTION, "b", TTL) is None
        held = await coord.campaign(ELECTION, "a", TTL)
        assert held is not None and held.epoch == 1
        assert held.valid_from < gave_up - 0.9  # taken before the lost request was sent
        assert await coord.check_epoch(ELECTION, 1)
        await coord.renew(held)
    finally:
        await coord.aclose()
        await other.aclose()


async def test_publish_and_read_prefix_with_expiry(api1: ApiServers) -> None:
    clock = FakeTime()
    coord = faked(api1.urls, clock)
    peer = faked(api1.urls, clock)
    other = KubernetesCoordinator(
        api1.urls, namespace=NAMESPACE, prefix="/elsewhere/", token=TOKEN, wall=clock.time
    )
    try:
        rev_east = await coord.publish("svc/vantage/us-east", {"at": 1.0, "primary": "up"}, 2)
        rev_west = await peer.publish("svc/vantage/us-west", {"at": 1.0, "primary": "down"}, 2)
        await coord.publish("svc/other/x", {"n": 1}, ttl=2)
        await other.publish("svc/vantage/eu", {"n": 2}, ttl=2)
        seen = await coord.read_prefix("svc/vantage/")
        assert set(seen) == {"svc/vantage/us-east", "svc/vantage/us-west"}
        assert seen["svc/vantage/us-west"].document == {"at": 1.0, "primary": "down"}
        assert seen["svc/vantage/us-east"].revision == rev_east < rev_west
        assert set(await other.read_prefix("")) == {"svc/vantage/eu"}

        # One Lease per key, labelled with the prefix, the document in an annotation.
        lease = api1.lease("helios-test.svc.vantage.us-east")
        assert lease is not None
        assert lease["metadata"]["labels"][LABEL_PREFIX] == "helios-test"
        assert lease["metadata"]["labels"][LABEL_ROLE] == "document"
        assert lease["metadata"]["annotations"][ANN_KEY] == "svc/vantage/us-east"
        assert json.loads(lease["metadata"]["annotations"][ANN_DOCUMENT])["primary"] == "up"

        # us-east keeps publishing; us-west stops and expires with its ttl.
        for _ in range(3):
            clock.advance(0.8)
            await coord.publish("svc/vantage/us-east", {"at": 2.0, "primary": "up"}, ttl=2)
        seen = await coord.read_prefix("svc/vantage/")
        assert set(seen) == {"svc/vantage/us-east"}
        assert seen["svc/vantage/us-east"].document["at"] == 2.0
        assert seen["svc/vantage/us-east"].revision > rev_west
        clock.advance(2.01)
        assert await coord.read_prefix("svc/vantage/") == {}

        # Two writers of one key: the one whose resourceVersion is stale reads and writes again.
        srv = api1.servers[0]
        srv.faults.reset_log()
        await peer.publish("svc/vantage/us-east", {"by": "peer"}, ttl=2)
        rev = await coord.publish("svc/vantage/us-east", {"by": "coord"}, ttl=2)
        seen = await peer.read_prefix("svc/vantage/us-east")
        assert seen["svc/vantage/us-east"].document == {"by": "coord"}
        assert seen["svc/vantage/us-east"].revision == rev
        assert 409 in [r.status for r in srv.faults.requests if r.method == "PUT"]

        with pytest.raises(CoordinationRejected, match="does not fit"):
            await coord.publish("svc/big", {"blob": "x" * 300_000}, ttl=2)
    finally:
        for c in (coord, peer, other):
            await c.aclose()


async def test_refusals_and_a_rotated_token(api1: ApiServers, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    coord = KubernetesCoordinator(
        api1.urls, namespace=NAMESPACE, prefix="/helios-test/", token_file=token_file
    )
    rotated = "rotated-token-9876543210"
    wrong = client(api1.urls, token="not-the-token")
    elsewhere = KubernetesCoordinator(api1.urls, namespace="kube-system", token=rotated)
    try:
        held = await coord.campaign(ELECTION, "a", TTL)
        assert held is not None
        # The kubelet rotates the projected token: the old one is refused, the file is new.
        api1.servers[0].token = rotated
        token_file.write_text(rotated + "\n")
        held = await coord.renew(held)
        assert await coord.check_epoch(ELECTION, held.epoch)
        with pytest.raises(CoordinationRejected, match="401 Unauthorized"):
            await wrong.leader(ELECTION)
        with pytest.raises(CoordinationRejected, match=r"403 Forbidden.*kube-system"):
            await elsewhere.read_prefix("")
        # Another application's Lease of the same name is never taken over.
        async with httpx.AsyncClient(base_url=api1.urls[0], trust_env=False) as http:
            resp = await http.post(
                f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases",
                headers={"Authorization": f"Bearer {rotated}"},
                json={"metadata": {"name": "helios-test.someone.else"}, "spec": {}},
            )
            assert resp.status_code == 201
        with pytest.raises(CoordinationRejected, match="not the election"):
            await coord.campaign("someone/else", "a", TTL)
    finally:
        for c in (coord, wrong, elsewhere):
            await c.aclose()
