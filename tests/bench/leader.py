"""Leader election and fencing with the default production timing (``make bench`` part
``leader``).

Everything runs against one real three-member etcd cluster (:mod:`tests.etcd_cluster`, loopback
ports, data on /dev/shm), with the documented defaults: ``coordination.ttl`` 10 s (renewal every
ttl/3, local step-down ``step_down_margin`` = ttl/5 before the lease can lapse, a follower's
campaign retried every min(1 s, ttl/6)), ``coordination.timeout`` 2 s; ``agent.fence_after``
15 s, ``agent.interval`` 1 s, ``agent.fence_timeout`` 30 s. Every trial has a key prefix of its
own. Electors run in this process, each with its own etcd client whose preferred member differs
(as instances in three regions would), except the leader that is killed with SIGKILL: that one
runs in a child process.

1. ``clean``: three electors; after an idle window of renewals, the leader stops (steps down and
   revokes its lease): stop -> another elector leads; its epoch must be larger.
2. ``crash``: the leader in a child process is SIGKILLed at a spread of points after a renewal:
   kill -> another elector leads (bounded by ttl plus one retry), and last renewal sent -> new
   leader (never below ttl: the lease cannot lapse earlier).
   ``cut``: all three etcd members are SIGSTOPped at a spread of points after a renewal: the
   leader's local step-down must come ``step_down_margin`` before ttl after its last renewal was
   sent; after SIGCONT, the time until some elector leads again.
3. ``renew``: lease renewal latency, of the electors' own renewals in the idle windows (every
   ttl/3) and of back-to-back ``renew()`` calls; cross-checked with the
   ``helios_lease_renew_seconds`` histogram.
4. ``self-fence``: on a fresh sandbox, the node agent (``python -m orchestrator.cli_agent``)
   guards the us-east primary; all etcd members are SIGSTOPped; a write every 100 ms shows when
   the primary stops taking writes (expected fence_after + at most one interval + the fence
   command's time after the last quorum contact).
5. ``request``: on a fresh sandbox with the agent running, the leader's
   :meth:`orchestrator.leadership.Elected.fence_via_agent`: request -> the agent's reported
   fence (and -> writes stop).

Every process started here (etcd members, the child elector, agents, sandboxes) is stopped at
the end of its trial or part, also on failure and Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from prometheus_client import CollectorRegistry

from orchestrator.config import load_config
from orchestrator.config_agent import AgentSettings
from orchestrator.config_coord import CoordinationSettings
from orchestrator.coord import Coordinator, Leadership
from orchestrator.coord.etcd import EtcdCoordinator
from orchestrator.errors import HeliosError
from orchestrator.leadership import Elected
from orchestrator.lease import LeaderElector, LeaderStatus, LeaseTiming
from orchestrator.sandbox import Sandbox
from tests.bench.common import PRIMARY, PRIMARY_REGION, Dist, progress, sandbox_in_tmp, sec
from tests.etcd_cluster import EtcdCluster, etcd_cluster, find_etcd

RUNS = 3
MEMBERS = 3
ELECTORS = 3
ELECTION = "helios-bench/leader"
IDLE_RENEWALS = 6
"""Renewals of the leader awaited in the idle window of every clean-stop trial."""
RENEW_CALLS = 100
"""Back-to-back ``renew()`` calls per run (one client, its own lease)."""
SAMPLE = 0.01
"""Seconds between two samples of the electors' views."""
PROBE_EVERY = 0.1
"""Seconds between two write attempts on the guarded primary."""
ETCD_EXPIRY_SCAN = 0.5
"""etcd's lessor looks for expired leases every 500 ms (so a lease lapses 0-0.5 s after its
ttl; measured on this cluster: the leader key vanished 10.0-10.4 s after a keepalive)."""
CUT_HOLD = 1.0
"""Seconds the etcd cut lasts after the leader stepped down (nobody may lead meanwhile)."""
REPO = Path(__file__).resolve().parents[2]

# The documented defaults, read from the configuration models themselves.
COORD = CoordinationSettings(endpoints=["http://127.0.0.1:2379"])
AGENT = AgentSettings()
TTL = COORD.ttl
MARGIN = COORD.margin
TIMEOUT = COORD.timeout
RENEW_INTERVAL = COORD.renew_interval
RETRY = LeaseTiming(TTL, MARGIN).retry_interval
FENCE_AFTER = AGENT.fence_after
AGENT_INTERVAL = AGENT.interval
FENCE_TIMEOUT = AGENT.fence_timeout
AGENT_GUARANTEE = FENCE_AFTER + AGENT_INTERVAL + FENCE_TIMEOUT
"""The agent's promise: a primary cut off from the quorum is fenced within this."""
LEADER_POLL = min(0.25, AGENT_INTERVAL / 2)
"""How often ``fence_via_agent`` reads the agent's heartbeat."""


class TrialFailed(RuntimeError):
    """A trial could not complete (a wait timed out, a process died)."""


# --- etcd clients and electors ---------------------------------------------------------------


@dataclass(frozen=True)
class Renewal:
    sent: float
    """Monotonic instant taken before the keepalive was sent (the new ``valid_from``)."""
    took: float


class TimedEtcd(EtcdCoordinator):
    """The production etcd client, recording every successful ``renew`` (keepalive plus the
    linearizable read of the leader key)."""

    def __init__(self, endpoints: list[str], **kwargs: Any) -> None:
        super().__init__(endpoints, **kwargs)
        self.renewals: list[Renewal] = []

    async def renew(self, leadership: Leadership) -> Leadership:
        started = time.monotonic()
        renewed = await super().renew(leadership)
        self.renewals.append(Renewal(renewed.valid_from, time.monotonic() - started))
        return renewed


def rotated(endpoints: list[str], k: int) -> list[str]:
    """The endpoints starting with member ``k``: each instance prefers another member."""
    k %= len(endpoints)
    return endpoints[k:] + endpoints[:k]


def client(endpoints: list[str], prefix: str, k: int = 0) -> TimedEtcd:
    return TimedEtcd(rotated(endpoints, k), prefix=prefix, timeout=TIMEOUT)


@dataclass
class Instance:
    name: str
    coord: TimedEtcd
    elector: LeaderElector
    registry: CollectorRegistry
    changes: list[tuple[float, LeaderStatus]] = field(default_factory=list)

    def became_leader_after(self, t: float) -> float | None:
        return next((at for at, s in self.changes if s.is_leader and at >= t), None)


@contextlib.asynccontextmanager
async def electors(
    endpoints: list[str],
    prefix: str,
    count: int,
    first: int = 0,
    routes: Callable[[int], list[str]] | None = None,
    start: bool = True,
) -> AsyncIterator[list[Instance]]:
    """``count`` electors with the default timing (``LeaderElector.from_settings`` on a
    default ``coordination`` section), each with its own client and registry (instance ``i``
    reaches etcd through ``routes(i)``, by default the endpoints starting with member ``i``);
    started unless ``start`` is false (see :func:`lead_first`); stopped (and resigned) on
    exit."""
    group: list[Instance] = []
    try:
        for i in range(first, first + count):
            route = routes(i) if routes is not None else rotated(endpoints, i)
            coord = TimedEtcd(route, prefix=prefix, timeout=TIMEOUT)
            settings = CoordinationSettings(endpoints=route, prefix=prefix)
            registry = CollectorRegistry()
            elector = LeaderElector.from_settings(
                coord, settings, name=ELECTION, candidate_id=f"orch-{i}", registry=registry
            )
            inst = Instance(f"orch-{i}", coord, elector, registry)
            elector.add_callback(
                lambda s, inst=inst: inst.changes.append((time.monotonic(), s))  # type: ignore[misc]
            )
            group.append(inst)
            if start:
                elector.start()
        yield group
    finally:
        error: BaseException | None = None
        for inst in group:  # every one, even when a stop is interrupted
            try:
                await inst.elector.stop()
            except BaseException as exc:
                error = error or exc
            with contextlib.suppress(Exception):
                await inst.coord.aclose()
        if error is not None:
            raise error


def leaders(group: list[Instance]) -> list[Instance]:
    return [i for i in group if i.elector.is_leader]


@dataclass
class Watch:
    """Samples the electors every :data:`SAMPLE` seconds; counts samples in which more than one
    considered itself leader (never expected), counting ``external()`` (a leader elsewhere, e.g.
    in a child process) as one more."""

    group: list[Instance]
    external: Callable[[], bool] | None = None
    overlaps: int = 0

    async def until(
        self, cond: Callable[[], object] | None, timeout: float, what: str = ""
    ) -> float:
        """Wait until ``cond()`` (or for ``timeout`` when None); the time waited."""
        start = time.monotonic()
        while True:
            others = 1 if self.external is not None and self.external() else 0
            if len(leaders(self.group)) + others > 1:
                self.overlaps += 1
            waited = time.monotonic() - start
            if cond is not None and cond():
                return waited
            if waited > timeout:
                if cond is None:
                    return waited
                raise TrialFailed(f"{what or 'condition'} not met within {timeout:g}s")
            await asyncio.sleep(SAMPLE)


def follower_offset(index: int, runs: int) -> float:
    """When the followers start after the leader: spread across the retry interval over the
    runs. A follower campaigns every retry interval from its start, so this sets the phase of
    its campaigns against the leader's renewals and lease expiry (with every elector started
    at the same point of each trial, every run would sample the same phase)."""
    return (index + 0.5) / runs * RETRY


async def lead_first(group: list[Instance], w: Watch, offset: float) -> Instance:
    """Start the first elector, wait until it leads, then start the others ``offset`` seconds
    later; the leader."""
    first = group[0]
    first.elector.start()
    await w.until(lambda: first.elector.is_leader, TTL + 5, "a first leader")
    await w.until(None, offset)
    for inst in group[1:]:
        inst.elector.start()
    return first


# --- 1. clean stop ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanRun:
    index: int
    handover: float
    """``elector.stop()`` called -> another elector leads (its campaign returned)."""
    stop_call: float
    """How long ``stop()`` took (step down, cancel, revoke the lease)."""
    old_epoch: int
    new_epoch: int
    old_epoch_refused: bool
    """``check_epoch`` of the old epoch is false once the new leader leads."""
    overlaps: int
    renewals: tuple[float, ...]
    """The leader's renewals in the idle window (seconds each)."""
    hist_mean: float
    hist_count: int
    timed_mean: float
    timed_count: int


async def renew_calls(endpoints: list[str], prefix: str, n: int) -> list[float]:
    """``n`` back-to-back ``renew()`` calls on a lease of the default ttl (own election)."""
    coord = client(endpoints, prefix, 0)
    try:
        held = await coord.campaign("helios-bench/renew-probe", "bench", TTL)
        if held is None:
            raise TrialFailed("the renew probe's election was taken")
        for _ in range(n):
            held = await coord.renew(held)
        await coord.resign(held)
        return [r.took for r in coord.renewals]
    finally:
        await coord.aclose()


async def clean_trial(endpoints: list[str], prefix: str, index: int, runs: int) -> CleanRun:
    async with electors(endpoints, prefix, ELECTORS, start=False) as group:
        w = Watch(group)
        old = await lead_first(group, w, follower_offset(index, runs))
        n0 = len(old.coord.renewals)
        await w.until(
            lambda: len(old.coord.renewals) >= n0 + IDLE_RENEWALS,
            IDLE_RENEWALS * RENEW_INTERVAL + 2 * TIMEOUT + 2,
            f"{IDLE_RENEWALS} renewals of the leader",
        )
        window = tuple(r.took for r in old.coord.renewals[n0:])
        hist_sum = old.registry.get_sample_value("helios_lease_renew_seconds_sum") or 0.0
        hist_count = int(old.registry.get_sample_value("helios_lease_renew_seconds_count") or 0)
        timed = [r.took for r in old.coord.renewals]
        old_epoch = old.elector.epoch
        if old_epoch is None:
            raise TrialFailed("the leader lost its leadership in the idle window")
        t0 = time.monotonic()
        await old.elector.stop()
        stop_call = time.monotonic() - t0
        others = [i for i in group if i is not old]
        await w.until(lambda: leaders(others), TTL + 5, "a new leader after the stop")
        (new,) = leaders(others)
        at = new.became_leader_after(t0)
        new_epoch = new.elector.epoch
        if at is None or new_epoch is None:
            raise TrialFailed("the new leader's election was not recorded")
        refused = not await new.coord.check_epoch(ELECTION, old_epoch)
        return CleanRun(
            index=index + 1,
            handover=at - t0,
            stop_call=stop_call,
            old_epoch=old_epoch,
            new_epoch=new_epoch,
            old_epoch_refused=refused,
            overlaps=w.overlaps,
            renewals=window,
            hist_mean=hist_sum / hist_count if hist_count else math.nan,
            hist_count=hist_count,
            timed_mean=sum(timed) / len(timed) if timed else math.nan,
            timed_count=len(timed),
        )


# --- 2a. crash of the leader's process -------------------------------------------------------


CHILD_ELECTOR = """
import asyncio, sys
import structlog
from orchestrator.config_coord import CoordinationSettings
from orchestrator.coord.etcd import EtcdCoordinator
from orchestrator.lease import LeaderElector

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

def say(*words):
    print(*words, flush=True)

class Reporting(EtcdCoordinator):
    async def campaign(self, name, candidate_id, ttl):
        won = await super().campaign(name, candidate_id, ttl)
        if won is not None:
            say("WON", won.epoch, repr(won.valid_from))
        return won

    async def renew(self, leadership):
        renewed = await super().renew(leadership)
        say("RENEWED", renewed.epoch, repr(renewed.valid_from))
        return renewed

async def main():
    settings = CoordinationSettings(endpoints=sys.argv[1].split(","), prefix=sys.argv[2])
    coord = Reporting.from_settings(settings)
    elector = LeaderElector.from_settings(coord, settings, name=sys.argv[3],
                                          candidate_id="child")
    elector.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""
"""A leader in a process of its own (default timing), printing ``WON epoch valid_from`` and
``RENEWED epoch valid_from`` (its monotonic clock, the same as this process's on Linux)."""


@dataclass
class ChildLeader:
    proc: asyncio.subprocess.Process
    epoch: int | None = None
    sent: list[float] = field(default_factory=list)
    """``valid_from`` of the campaign and of every renewal, in order."""
    _news: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            words = line.decode(errors="replace").split()
            if len(words) == 3 and words[0] in ("WON", "RENEWED"):
                self.epoch = int(words[1])
                self.sent.append(float(words[2]))
                self._news.set()

    async def next_sent(self, after: int, timeout: float) -> float:
        """The ``valid_from`` of the first report after the first ``after``."""
        deadline = time.monotonic() + timeout
        while len(self.sent) <= after:
            if self.proc.returncode is not None:
                raise TrialFailed(f"the child elector exited ({self.proc.returncode})")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TrialFailed(f"the child elector reported nothing within {timeout:g}s")
            self._news.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.25)):
                    await self._news.wait()
        return self.sent[after]


@dataclass(frozen=True)
class CrashRun:
    index: int
    phase: float
    """Kill, seconds after the child's last renewal was sent."""
    handover: float
    """SIGKILL -> another elector leads."""
    from_renewal: float
    """The child's last renewal sent -> another elector leads (the lease lapses at ttl)."""
    old_epoch: int
    new_epoch: int
    overlaps: int


@contextlib.asynccontextmanager
async def child_leader(endpoints: list[str], prefix: str, log: Path) -> AsyncIterator[ChildLeader]:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD_ELECTOR,
            ",".join(endpoints),
            prefix,
            ELECTION,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            cwd=REPO,
            start_new_session=True,
        )
    child = ChildLeader(proc)
    reader = asyncio.create_task(child.read(), name="child-elector-reader")
    try:
        yield child
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def crash_trial(
    endpoints: list[str], prefix: str, index: int, runs: int, log: Path
) -> CrashRun:
    async with child_leader(endpoints, prefix, log) as child:
        await child.next_sent(0, 60)  # interpreter start-up included, on a loaded machine
        await asyncio.sleep(follower_offset(index, runs))
        async with electors(endpoints, prefix, ELECTORS - 1, first=1) as group:
            w = Watch(group, external=lambda: child.proc.returncode is None)
            await w.until(None, 1.0)  # the child holds the lease: nobody here may win
            # Kill at a point spread across the renew interval after a renewal was sent.
            seen = len(child.sent)
            sent = await child.next_sent(seen, RENEW_INTERVAL + 2 * TIMEOUT + 2)
            phase = (index + 0.5) / runs * RENEW_INTERVAL
            await w.until(lambda: time.monotonic() >= sent + phase, RENEW_INTERVAL + 1)
            if len(child.sent) != seen + 1:
                raise TrialFailed("the child renewed again before the kill")
            old_epoch = child.epoch
            assert old_epoch is not None
            killed = time.monotonic()
            os.killpg(child.proc.pid, signal.SIGKILL)
            await child.proc.wait()
            w.external = None
            await w.until(lambda: leaders(group), TTL + RETRY + 10, "a leader after the kill")
            (new,) = leaders(group)
            at = new.became_leader_after(killed)
            new_epoch = new.elector.epoch
            if at is None or new_epoch is None:
                raise TrialFailed("the new leader's election was not recorded")
            return CrashRun(
                index=index + 1,
                phase=killed - sent,
                handover=at - killed,
                from_renewal=at - sent,
                old_epoch=old_epoch,
                new_epoch=new_epoch,
                overlaps=w.overlaps,
            )


# --- 2b. leader cut off from etcd ------------------------------------------------------------


@dataclass(frozen=True)
class CutRun:
    index: int
    phase: float
    """The cut (first SIGSTOP), seconds after the leader's last renewal was sent."""
    step_down: float
    """Cut -> the leader's ``is_leader`` is false (sampled every 10 ms)."""
    from_renewal: float
    """Last renewal sent -> ``is_leader`` false (ttl - margin by design)."""
    event_delay: float
    """The deadline (last renewal sent + ttl - margin, where ``is_leader`` turns false) -> the
    elector's own step-down (callback, log, metrics)."""
    reason: str
    margin_left: float
    """Last renewal sent + ttl (the earliest etcd can let the lease lapse) - step-down."""
    others_led: int
    """Samples during the cut in which an elector considered itself leader after the step-down."""
    resume_to_leader: float
    """SIGCONT of the members -> some elector leads again."""
    old_epoch: int
    new_epoch: int
    same_instance: bool
    overlaps: int


async def cut_trial(
    cluster: EtcdCluster, prefix: str, index: int, runs: int
) -> tuple[CutRun, tuple[float, ...]]:
    """One cut; also returns the leader's renewals before the cut (idle, seconds each)."""
    endpoints = cluster.endpoints
    async with electors(endpoints, prefix, ELECTORS, start=False) as group:
        w = Watch(group)
        old = await lead_first(group, w, follower_offset(index, runs))
        n0 = len(old.coord.renewals)
        await w.until(
            lambda: len(old.coord.renewals) > n0,
            RENEW_INTERVAL + 2 * TIMEOUT + 2,
            "a renewal of the leader",
        )
        sent = old.coord.renewals[-1].sent
        phase = (index + 0.5) / runs * RENEW_INTERVAL
        await w.until(lambda: time.monotonic() >= sent + phase, RENEW_INTERVAL + 1)
        if len(old.coord.renewals) != n0 + 1 or not old.elector.is_leader:
            raise TrialFailed("the leader renewed again (or stepped down) before the cut")
        idle = tuple(r.took for r in old.coord.renewals)
        old_epoch = old.elector.epoch
        assert old_epoch is not None
        cut = time.monotonic()
        try:
            for i in range(len(cluster.members)):
                cluster.pause(i)
            await w.until(lambda: not old.elector.is_leader, TTL + 2, "the local step-down")
            down = time.monotonic()
            await w.until(lambda: old.changes[-1][0] >= cut, TTL, "the step-down event")
            event_at, status = old.changes[-1]
            others = 0
            hold_until = max(down + CUT_HOLD, sent + TTL + 0.5)
            while time.monotonic() < hold_until:
                others += len(leaders(group))
                await asyncio.sleep(SAMPLE)
        finally:
            for i in range(len(cluster.members)):
                cluster.resume(i)
        resumed = time.monotonic()
        await w.until(lambda: leaders(group), 3 * TTL, "a leader after the cut")
        (new,) = leaders(group)
        at = new.became_leader_after(resumed)
        new_epoch = new.elector.epoch
        if at is None or new_epoch is None:
            raise TrialFailed("the new leader's election was not recorded")
        run = CutRun(
            index=index + 1,
            phase=cut - sent,
            step_down=down - cut,
            from_renewal=down - sent,
            event_delay=event_at - (sent + TTL - MARGIN),
            reason=status.reason,
            margin_left=sent + TTL - down,
            others_led=others,
            resume_to_leader=at - resumed,
            old_epoch=old_epoch,
            new_epoch=new_epoch,
            same_instance=new is old,
            overlaps=w.overlaps,
        )
    await asyncio.to_thread(cluster.wait_healthy)
    return run, idle


# --- 2c. the leader alone cut off (a partition) ----------------------------------------------


class Blackhole:
    """A TCP forwarder in front of one etcd member, for one instance. :meth:`cut` stops the
    traffic both ways (bytes in flight are held, new connections are accepted and get nothing):
    a partition that drops packets, as seen by that instance only. :meth:`heal` lets it flow
    again."""

    def __init__(self, target: str) -> None:
        host_port = target.rsplit("/", 1)[-1]
        self._host, port = host_port.rsplit(":", 1)
        self._port = int(port)
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            await self._open.wait()
            dst.write(data)
            await dst.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._open.wait()
            up_reader, upstream = await asyncio.open_connection(self._host, self._port)
            pumps = {
                asyncio.create_task(self._pump(reader, upstream)),
                asyncio.create_task(self._pump(up_reader, writer)),
            }
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in pumps:
                    t.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()
            self._handlers.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._handlers):
            t.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


@dataclass(frozen=True)
class PartitionRun:
    index: int
    phase: float
    """The cut, seconds after the leader's last renewal was sent."""
    step_down: float
    """Cut -> the old leader's ``is_leader`` is false."""
    down_from_renewal: float
    """Last renewal sent -> the old leader steps down (ttl - margin by design)."""
    new_from_renewal: float
    """Last renewal sent -> another elector leads (not before ttl: etcd keeps the lease)."""
    handover: float
    """Cut -> another elector leads."""
    gap: float
    """Old leader's step-down -> the new leader's election: never negative (no overlap)."""
    reason: str
    old_epoch: int
    new_epoch: int
    overlaps: int


async def partition_trial(endpoints: list[str], prefix: str, index: int, runs: int) -> PartitionRun:
    holes = [[Blackhole(e) for e in rotated(endpoints, i)] for i in range(ELECTORS)]
    try:
        routes = [[await h.start() for h in mine] for mine in holes]
        async with electors(
            endpoints, prefix, ELECTORS, routes=lambda i: routes[i], start=False
        ) as group:
            w = Watch(group)
            old = await lead_first(group, w, follower_offset(index, runs))
            n0 = len(old.coord.renewals)
            await w.until(
                lambda: len(old.coord.renewals) > n0,
                RENEW_INTERVAL + 2 * TIMEOUT + 2,
                "a renewal of the leader",
            )
            sent = old.coord.renewals[-1].sent
            phase = (index + 0.5) / runs * RENEW_INTERVAL
            await w.until(lambda: time.monotonic() >= sent + phase, RENEW_INTERVAL + 1)
            if len(old.coord.renewals) != n0 + 1 or not old.elector.is_leader:
                raise TrialFailed("the leader renewed again (or stepped down) before the cut")
            old_epoch = old.elector.epoch
            assert old_epoch is not None
            mine = holes[group.index(old)]
            cut = time.monotonic()
            try:
                for h in mine:
                    h.cut()
                others = [i for i in group if i is not old]
                await w.until(lambda: not old.elector.is_leader, TTL + 2, "the local step-down")
                down = time.monotonic()
                await w.until(lambda: leaders(others), TTL + RETRY + 10, "another leader")
            finally:
                for h in mine:
                    h.heal()
            (new,) = leaders(others)
            at = new.became_leader_after(cut)
            new_epoch = new.elector.epoch
            if at is None or new_epoch is None:
                raise TrialFailed("the new leader's election was not recorded")
            status = next((s for t, s in old.changes if t >= cut), old.elector.status)
            return PartitionRun(
                index=index + 1,
                phase=cut - sent,
                step_down=down - cut,
                down_from_renewal=down - sent,
                new_from_renewal=at - sent,
                handover=at - cut,
                gap=at - down,
                reason=status.reason,
                old_epoch=old_epoch,
                new_epoch=new_epoch,
                overlaps=w.overlaps,
            )
    finally:
        for mine in holes:
            for h in mine:
                await h.close()


# --- 4./5. the node agent on a sandbox -------------------------------------------------------


class WriteProbe:
    """A write (one committed INSERT) every :data:`PROBE_EVERY` seconds on one node, in a
    thread of its own, reconnecting after an error; records ``(start, end, ok)`` of every
    attempt (monotonic)."""

    def __init__(self, dsn: str, password: str) -> None:
        self._dsn = dsn
        self._password = password
        self._stop = threading.Event()
        self.attempts: list[tuple[float, float, bool]] = []
        self._thread = threading.Thread(target=self._run, name="bench-write-probe", daemon=True)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self._dsn, password=self._password, autocommit=True, connect_timeout=1
        )
        conn.execute("SET statement_timeout = '1s'")
        return conn

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = self._connect()
                conn.execute("INSERT INTO bench_fence_probe VALUES (%s)", (time.time(),))
                ok = True
            except psycopg.Error:
                ok = False
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                    conn = None
            self.attempts.append((started, time.monotonic(), ok))
            self._stop.wait(max(0.0, started + PROBE_EVERY - time.monotonic()))
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def start(self) -> None:
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS bench_fence_probe (at float8)")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def stopped(self, after: float) -> tuple[float, float] | None:
        """(start of the first failed attempt after ``after`` from which on every attempt
        failed, end of the last successful attempt before it), or None while writes succeed."""
        attempts = [a for a in list(self.attempts) if a[0] >= after]
        last_ok = max((i for i, a in enumerate(attempts) if a[2]), default=-1)
        if last_ok + 1 >= len(attempts):
            return None
        before = attempts[last_ok][1] if last_ok >= 0 else math.nan
        return attempts[last_ok + 1][0], before

    def ok_after(self, t: float) -> int:
        return sum(1 for a in list(self.attempts) if a[0] >= t and a[2])


class Agent:
    """``python -m orchestrator.cli_agent`` for the us-east primary, as a child process in a
    session of its own, its JSON log in a file."""

    def __init__(self, config: Path, state_dir: Path, log: Path) -> None:
        self.log = log
        argv = [sys.executable, "-m", "orchestrator.cli_agent", "--config", str(config)]
        argv += ["--node", PRIMARY, "--state-dir", str(state_dir)]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=REPO,
                start_new_session=True,
            )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    out.append(doc)
        return out

    def first(
        self, reason: str, with_key: str | None = None, without_key: str | None = None
    ) -> dict[str, Any] | None:
        for d in self.lines():
            if d.get("reason") != reason:
                continue
            if with_key is not None and with_key not in d:
                continue
            if without_key is not None and without_key in d:
                continue
            return d
        return None

    def tail(self, n: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL of its whole session after 15 s; its exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                progress("WARNING: the agent ignored SIGTERM for 15 s; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(timeout=10)


@contextlib.contextmanager
def running_agent(config: Path, state_dir: Path, log: Path) -> Iterator[Agent]:
    agent = Agent(config, state_dir, log)
    try:
        yield agent
    finally:
        agent.stop()


def log_wall(doc: dict[str, Any] | None) -> float | None:
    """The wall-clock time of an agent log line (structlog's ISO ``timestamp``)."""
    if doc is None or not isinstance(doc.get("timestamp"), str):
        return None
    return dt.datetime.fromisoformat(str(doc["timestamp"]).replace("Z", "+00:00")).timestamp()


def agent_config(sb: Sandbox, endpoints: list[str], prefix: str) -> Path:
    """The sandbox's generated config with a ``coordination`` section and ``agent.enabled``,
    all timing left at the defaults."""
    doc = yaml.safe_load(sb.config_path().read_text())
    doc["coordination"] = {
        "endpoints": endpoints,
        "prefix": prefix,
        "instance_id": "bench-leader",
    }
    doc["agent"] = {"enabled": True}
    path = sb.config_path().with_name("bench-agent.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def publish_primary(coord: Coordinator, service: str, epoch: int) -> None:
    """The current-primary document, as the leader publishes it."""
    doc = {"node": PRIMARY, "region": PRIMARY_REGION, "epoch": epoch, "at": time.time()}
    await coord.publish(f"{service}/primary", doc, 300)


async def heartbeat(coord: Coordinator, service: str) -> dict[str, Any]:
    key = f"{service}/agents/{PRIMARY}"
    pubs = await coord.read_prefix(key)
    return dict(pubs[key].document) if key in pubs else {}


async def wait_heartbeat(
    coord: Coordinator,
    service: str,
    check: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
    agent: Agent,
) -> float:
    """Seconds until the agent's heartbeat satisfies ``check``."""
    start = time.monotonic()
    last: dict[str, Any] = {}
    while True:
        with contextlib.suppress(HeliosError, TimeoutError):
            async with asyncio.timeout(TIMEOUT + 1):
                last = await heartbeat(coord, service)
            if check(last):
                return time.monotonic() - start
        if agent.proc.poll() is not None:
            raise TrialFailed(f"the agent exited ({agent.proc.returncode}): {agent.tail()}")
        if time.monotonic() - start > timeout:
            raise TrialFailed(
                f"{what}: not within {timeout:g}s (heartbeat {last or 'none'}; agent log: "
                f"{agent.tail(3)})"
            )
        await asyncio.sleep(0.1)


def confirmed(doc: dict[str, Any]) -> bool:
    return doc.get("role") == "primary" and doc.get("reason") == "PRIMARY_CONFIRMED"


async def wait_writes_stop(probe: WriteProbe, after: float, timeout: float) -> tuple[float, float]:
    deadline = time.monotonic() + timeout
    while (found := probe.stopped(after)) is None:
        if time.monotonic() > deadline:
            raise TrialFailed(f"the primary still took writes {timeout:g}s later")
        await asyncio.sleep(0.05)
    # Confirm: the next attempts fail too (a lone failed write is not a fence).
    await asyncio.sleep(3 * PROBE_EVERY)
    again = probe.stopped(after)
    if again is None or again[0] != found[0]:
        return await wait_writes_stop(probe, after, max(1.0, deadline - time.monotonic()))
    return found


@dataclass(frozen=True)
class SelfFenceRun:
    index: int
    writes_stop: float
    """Cut (first SIGSTOP) -> the first failed write of the ones that kept failing."""
    last_write: float
    """Cut -> end of the last write that succeeded."""
    writes_after_cut: int
    contact_age: float | None
    """Agent: its last successful quorum check was sent this long before the fence started."""
    took: float | None
    """Agent: the fence (``fence_command``) took this long."""
    quorum_lost: float | None
    """Cut -> the agent logged QUORUM_LOST."""
    fence_logged: float | None
    """Cut -> the agent logged SELF_FENCED (the fence done; wall clock)."""
    heartbeat_fenced: float | None
    """SIGCONT of the members -> the agent's heartbeat shows ``fenced: true``."""
    agent_exit: int | None


async def self_fence_trial(
    sb: Sandbox, cluster: EtcdCluster, prefix: str, index: int
) -> SelfFenceRun:
    endpoints = cluster.endpoints
    config = agent_config(sb, endpoints, prefix)
    service = load_config(config).service
    coord = client(endpoints, prefix, 1)
    probe = WriteProbe(sb.dsn(PRIMARY_REGION), sb.password())
    try:
        await publish_primary(coord, service, 1)  # as the leader would
        with running_agent(
            config, sb.state_dir / "agent-state", sb.state_dir / "agent.log"
        ) as agent:
            await wait_heartbeat(coord, service, confirmed, 60, "the agent confirms", agent)
            await asyncio.to_thread(probe.start)
            await asyncio.sleep(1.0)
            if probe.ok_after(0.0) == 0:
                raise TrialFailed("the write probe never succeeded")
            cut_wall, cut = time.time(), time.monotonic()
            try:
                for i in range(len(cluster.members)):
                    cluster.pause(i)
                stop_at, last_ok = await wait_writes_stop(probe, cut, AGENT_GUARANTEE + 10)
            finally:
                for i in range(len(cluster.members)):
                    cluster.resume(i)
            resumed = time.monotonic()
            await asyncio.to_thread(cluster.wait_healthy)
            shown: float | None = None
            with contextlib.suppress(TrialFailed):
                await wait_heartbeat(
                    coord,
                    service,
                    lambda d: d.get("fenced") is True,
                    15,
                    "the heartbeat shows the fence",
                    agent,
                )
                shown = time.monotonic() - resumed
            fenced = agent.first("SELF_FENCED", with_key="took")
            lost = agent.first("QUORUM_LOST")
            lost_at, fenced_at = log_wall(lost), log_wall(fenced)
            exit_code = agent.stop()
        return SelfFenceRun(
            index=index + 1,
            writes_stop=stop_at - cut,
            last_write=last_ok - cut,
            writes_after_cut=probe.ok_after(cut),
            contact_age=_num(fenced, "contact_age"),
            took=_num(fenced, "took"),
            quorum_lost=None if lost_at is None else lost_at - cut_wall,
            fence_logged=None if fenced_at is None else fenced_at - cut_wall,
            heartbeat_fenced=shown,
            agent_exit=exit_code,
        )
    finally:
        await asyncio.to_thread(probe.stop)
        await coord.aclose()


def _num(doc: dict[str, Any] | None, key: str) -> float | None:
    value = doc.get(key) if doc else None
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class RequestRun:
    index: int
    returned: float
    """``fence_via_agent`` called -> returned."""
    result: str
    noticed: float | None
    """Request -> the agent logged that the leader asks for the fence (wall clock)."""
    fence_logged: float | None
    """Request -> the agent logged the fence done (wall clock)."""
    writes_stop: float
    """Request -> the first failed write of the ones that kept failing."""
    took: float | None
    """Agent: the fence command's time."""
    writes_after_return: int
    """Writes that succeeded after ``fence_via_agent`` returned (must be 0)."""
    agent_exit: int | None


async def request_trial(sb: Sandbox, cluster: EtcdCluster, prefix: str, index: int) -> RequestRun:
    endpoints = cluster.endpoints
    config = agent_config(sb, endpoints, prefix)
    cfg = load_config(config)
    leadership = Elected.build(cfg, CollectorRegistry())
    probe = WriteProbe(sb.dsn(PRIMARY_REGION), sb.password())
    leadership.elector.start()
    try:
        async with asyncio.timeout(TTL + 10):
            await leadership.elector.wait_for(lambda s: s.is_leader)
        epoch = leadership.elector.epoch
        assert epoch is not None
        await publish_primary(leadership.coordinator, cfg.service, epoch)
        with running_agent(
            config, sb.state_dir / "agent-state", sb.state_dir / "agent.log"
        ) as agent:
            await wait_heartbeat(
                leadership.coordinator, cfg.service, confirmed, 60, "the agent confirms", agent
            )
            await asyncio.to_thread(probe.start)
            await asyncio.sleep(1.0)
            if probe.ok_after(0.0) == 0:
                raise TrialFailed("the write probe never succeeded")
            t_wall, t0 = time.time(), time.monotonic()
            async with asyncio.timeout(AGENT_GUARANTEE + TIMEOUT + 30):
                result = await leadership.fence_via_agent(PRIMARY)
            t1 = time.monotonic()
            stop_at, _ = await wait_writes_stop(probe, t0, 10)
            await asyncio.sleep(0.5)
            after = probe.ok_after(t1)
            noticed = agent.first("FENCE_REQUESTED", without_key="took")
            fenced = agent.first("FENCE_REQUESTED", with_key="took")
            noticed_at, fenced_at = log_wall(noticed), log_wall(fenced)
            exit_code = agent.stop()
        return RequestRun(
            index=index + 1,
            returned=t1 - t0,
            result=result,
            noticed=None if noticed_at is None else noticed_at - t_wall,
            fence_logged=None if fenced_at is None else fenced_at - t_wall,
            writes_stop=stop_at - t0,
            took=_num(fenced, "took"),
            writes_after_return=after,
            agent_exit=exit_code,
        )
    finally:
        await asyncio.to_thread(probe.stop)
        try:
            await leadership.elector.stop()
        finally:
            await leadership.coordinator.aclose()


# --- the part --------------------------------------------------------------------------------


@dataclass
class LeaderPart:
    runs: int
    clean: list[CleanRun] = field(default_factory=list)
    crash: list[CrashRun] = field(default_factory=list)
    partition: list[PartitionRun] = field(default_factory=list)
    cut: list[CutRun] = field(default_factory=list)
    renew_idle: list[float] = field(default_factory=list)
    """Electors' own renewals in idle windows (seconds each)."""
    renew_calls: list[float] = field(default_factory=list)
    """Back-to-back ``renew()`` calls (seconds each)."""
    self_fence: list[SelfFenceRun] = field(default_factory=list)
    request: list[RequestRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    etcd_version: str = "?"
    load_start: float = math.nan
    load_end: float = math.nan


def etcd_version() -> str:
    try:
        out = subprocess.run(
            [find_etcd(), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return "?"
    first = out.stdout.strip().splitlines()
    return first[0].replace("etcd Version:", "").strip() if first else "?"


TRIAL_ERRORS = (RuntimeError, HeliosError, TimeoutError, OSError, psycopg.Error)
"""What fails one trial (RuntimeError: TrialFailed, an etcd member that died)."""


def _attempt(part: LeaderPart, label: str, work: Callable[[], None]) -> None:
    """Run one trial; a failure is recorded and the part goes on (Ctrl-C stops everything)."""
    try:
        work()
    except TRIAL_ERRORS as exc:
        progress(f"{label}: FAILED: {exc!r}")
        part.errors.append(f"{label}: {type(exc).__name__}: {exc}")


def run_part(runs: int = RUNS) -> LeaderPart:
    """All five measures, ``runs`` trials each, on one three-member etcd cluster (fresh
    sandboxes for the agent's trials)."""
    part = LeaderPart(runs, etcd_version=etcd_version(), load_start=os.getloadavg()[0])
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="helios-bench-leader-"))
    try:
        with etcd_cluster(MEMBERS, prefix="helios-bench-etcd-") as cluster:
            endpoints = cluster.endpoints
            progress(f"leader: etcd {part.etcd_version}, {MEMBERS} members on {endpoints}")
            for i in range(runs):
                label = f"leader clean stop #{i + 1}"

                def clean(i: int = i, label: str = label) -> None:
                    prefix = f"/helios-bench-clean-{i}/"
                    calls = asyncio.run(renew_calls(endpoints, prefix, RENEW_CALLS))
                    r = asyncio.run(clean_trial(endpoints, prefix, i, runs))
                    part.renew_calls.extend(calls)
                    part.renew_idle.extend(r.renewals)
                    part.clean.append(r)
                    progress(
                        f"{label}: new leader {r.handover:.2f}s after stop (epoch "
                        f"{r.old_epoch} -> {r.new_epoch}); idle renewals "
                        + ", ".join(f"{x * 1000:.1f}" for x in r.renewals)
                        + " ms"
                    )

                _attempt(part, label, clean)
            for i in range(runs):
                label = f"leader crash #{i + 1}"

                def crash(i: int = i, label: str = label) -> None:
                    log = scratch / f"child-{i}.log"
                    r = asyncio.run(
                        crash_trial(endpoints, f"/helios-bench-crash-{i}/", i, runs, log)
                    )
                    part.crash.append(r)
                    progress(
                        f"{label}: SIGKILL {r.phase:.2f}s after a renewal; new leader "
                        f"{r.handover:.2f}s after the kill, {r.from_renewal:.2f}s after the "
                        "last renewal"
                    )

                _attempt(part, label, crash)
            for i in range(runs):
                label = f"leader partitioned #{i + 1}"

                def partition(i: int = i, label: str = label) -> None:
                    prefix = f"/helios-bench-partition-{i}/"
                    r = asyncio.run(partition_trial(endpoints, prefix, i, runs))
                    part.partition.append(r)
                    progress(
                        f"{label}: cut {r.phase:.2f}s after a renewal; stepped down "
                        f"{r.down_from_renewal:.2f}s and another led {r.new_from_renewal:.2f}s "
                        f"after the last renewal (gap {r.gap:.2f}s; {r.handover:.2f}s after "
                        "the cut)"
                    )

                _attempt(part, label, partition)
            for i in range(runs):
                label = f"leader cut off #{i + 1}"

                def cut(i: int = i, label: str = label) -> None:
                    r, idle = asyncio.run(cut_trial(cluster, f"/helios-bench-cut-{i}/", i, runs))
                    part.cut.append(r)
                    part.renew_idle.extend(idle)
                    progress(
                        f"{label}: cut {r.phase:.2f}s after a renewal; stepped down "
                        f"{r.step_down:.2f}s after the cut, {r.from_renewal:.2f}s after the "
                        f"last renewal ({r.margin_left:.2f}s before the lease could lapse); "
                        f"a leader {r.resume_to_leader:.2f}s after SIGCONT"
                    )

                _attempt(part, label, cut)
            for i in range(runs):
                label = f"agent self-fence #{i + 1}"

                def fence(i: int = i, label: str = label) -> None:
                    with sandbox_in_tmp(f"{label}: ") as sb:
                        r = asyncio.run(
                            self_fence_trial(sb, cluster, f"/helios-bench-agent-{i}/", i)
                        )
                    part.self_fence.append(r)
                    progress(
                        f"{label}: writes stopped {r.writes_stop:.2f}s after etcd froze "
                        f"(fence started {_opt(r.contact_age)} after the last quorum contact, "
                        f"took {_opt(r.took)})"
                    )

                _attempt(part, label, fence)
            for i in range(runs):
                label = f"fence request #{i + 1}"

                def request(i: int = i, label: str = label) -> None:
                    with sandbox_in_tmp(f"{label}: ") as sb:
                        r = asyncio.run(
                            request_trial(sb, cluster, f"/helios-bench-request-{i}/", i)
                        )
                    part.request.append(r)
                    progress(
                        f"{label}: fence_via_agent returned after {r.returned:.2f}s, writes "
                        f"stopped after {r.writes_stop:.2f}s ({r.result})"
                    )

                _attempt(part, label, request)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    part.seconds = time.monotonic() - started
    part.load_end = os.getloadavg()[0]
    return part


# --- the report ------------------------------------------------------------------------------

CALL_SLACK = 0.5
"""For the etcd calls and the node probe on the way (milliseconds each when etcd is healthy)."""


def fence_bound(took: float | None) -> float:
    """Cut -> writes stop, at most: fence_after (the last quorum contact precedes the cut), one
    interval (the guard's tick and its probe of the node), the fence's own time, and the write
    probe's resolution."""
    return FENCE_AFTER + AGENT_INTERVAL + (took or 0.0) + PROBE_EVERY


def request_bound(took: float | None) -> float:
    """Request -> reported fence, at most: the agent's next quorum check (one interval), its
    guard's next tick (one interval), the fence, the next heartbeat (one interval), the leader's
    next poll, and :data:`CALL_SLACK`."""
    return 3 * AGENT_INTERVAL + (took or 0.0) + LEADER_POLL + CALL_SLACK


def _opt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f} s"


def _d(values: list[float | None] | list[float]) -> Dist:
    return Dist(tuple(v for v in values if v is not None and not math.isnan(v)))


def _ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x * 1000:.1f} ms"


def _count(flags: list[bool], what: str = "") -> str:
    k, n = sum(flags), len(flags)
    return f"{k}/{n}{' ' + what if what else ''}" + ("" if k == n else " **(not all)**")


@dataclass(frozen=True)
class Row:
    measure: str
    values: list[float | None]
    expected: str
    within: str = ""
    digits: int = 2
    p95: bool = False
    """Milliseconds, with the 95th percentile (the renewal rows)."""

    def render(self) -> str:
        d = _d(self.values)
        if self.p95:
            cells = f"{_ms(d.min)} | **{_ms(d.median)}** (p95 {_ms(d.p(0.95))}) | {_ms(d.max)}"
        else:
            cells = (
                f"{sec(d.min, self.digits)} | **{sec(d.median, self.digits)}** | "
                f"{sec(d.max, self.digits)}"
            )
        return f"| {self.measure} | {d.n} | {cells} | {self.expected} | {self.within} |"


def _rows(p: LeaderPart) -> list[Row]:
    rows: list[Row] = []
    add = rows.append
    if p.clean:
        hand = [r.handover for r in p.clean]
        stop = [r.stop_call for r in p.clean]
        add(
            Row(
                "clean stop: `stop()` -> another elector leads",
                [*hand],
                f"a follower's next campaign (every {RETRY:g} s); bound: ttl {TTL:g} s",
                _count([v <= TTL for v in hand]),
            )
        )
        add(
            Row(
                "clean stop: the `stop()` call (step down, revoke the lease)",
                [*stop],
                f"<= renew interval {RENEW_INTERVAL:.2f} s",
                _count([v <= RENEW_INTERVAL for v in stop]),
                3,
            )
        )
    if p.crash:
        hand = [r.handover for r in p.crash]
        fr = [r.from_renewal for r in p.crash]
        add(
            Row(
                "crash (SIGKILL of the leader's process): kill -> another elector leads",
                [*hand],
                f"<= ttl + one retry = {TTL + RETRY:g} s",
                _count([v <= TTL + RETRY for v in hand]),
            )
        )
        add(
            Row(
                "crash: the dead leader's last renewal -> another elector leads",
                [*fr],
                f">= ttl {TTL:g} s (etcd keeps the lease); + etcd's expiry scan (every "
                f"{ETCD_EXPIRY_SCAN:g} s) + a follower's next campaign (every {RETRY:g} s)",
                _count([v >= TTL for v in fr], ">= ttl"),
            )
        )
    if p.partition:
        pr = p.partition
        add(
            Row(
                "leader partitioned (its connections to all members blackholed): cut -> it "
                "steps down",
                [r.step_down for r in pr],
                f"ttl - margin ({TTL - MARGIN:g} s) after its last renewal",
                _count([r.reason == "renewal overdue" for r in pr], "`renewal overdue`"),
            )
        )
        add(
            Row(
                "partitioned: last renewal -> the old leader steps down",
                [r.down_from_renewal for r in pr],
                f"ttl - margin = {TTL - MARGIN:g} s, before ttl {TTL:g} s",
                _count([r.down_from_renewal < TTL for r in pr], "before ttl"),
                3,
            )
        )
        add(
            Row(
                "partitioned: last renewal -> another elector leads",
                [r.new_from_renewal for r in pr],
                f">= ttl {TTL:g} s; <= ttl + {ETCD_EXPIRY_SCAN:g} s scan + {RETRY:g} s retry + "
                "a campaign",
                _count([r.new_from_renewal >= TTL for r in pr], ">= ttl"),
            )
        )
        add(
            Row(
                "partitioned: old leader's step-down -> the new leader (no leader between)",
                [r.gap for r in pr],
                f">= margin {MARGIN:g} s: never two leaders",
                _count([r.gap >= MARGIN - 0.05 and not r.overlaps for r in pr], ">= margin"),
            )
        )
        add(
            Row(
                "partitioned: cut -> another elector leads",
                [r.handover for r in pr],
                f"<= ttl + one retry = {TTL + RETRY:g} s",
                _count([r.handover <= TTL + RETRY for r in pr]),
            )
        )
    if p.cut:
        cu = p.cut
        add(
            Row(
                "etcd frozen (all members SIGSTOPped): cut -> the leader steps down",
                [r.step_down for r in cu],
                f"ttl - margin ({TTL - MARGIN:g} s) after its last renewal",
                _count([r.reason == "renewal overdue" for r in cu], "`renewal overdue`"),
            )
        )
        add(
            Row(
                "etcd frozen: last renewal -> step-down",
                [r.from_renewal for r in cu],
                f"ttl - margin = {TTL - MARGIN:g} s, before ttl {TTL:g} s",
                _count([r.from_renewal < TTL for r in cu], "before ttl"),
                3,
            )
        )
        add(
            Row(
                "etcd frozen: step-down -> the earliest the lease could lapse",
                [r.margin_left for r in cu],
                f"margin {MARGIN:g} s (10 ms sampling)",
                _count([r.margin_left >= MARGIN - 0.05 for r in cu], ">= margin"),
                3,
            )
        )
        add(
            Row(
                "etcd frozen: the deadline -> the elector's own step-down event (log, metrics)",
                [r.event_delay for r in cu],
                "`is_leader` turns false at the deadline by itself; the event follows",
                "",
                3,
            )
        )
        add(
            Row(
                "etcd frozen: SIGCONT -> a leader again",
                [r.resume_to_leader for r in cu],
                "etcd's recovery, the stale lease revoked, a campaign",
                _count([r.new_epoch > r.old_epoch and not r.others_led for r in cu], "newer epoch"),
            )
        )
    for name, values in (
        ("lease renewal: the electors' own, idle cluster (every ttl/3)", p.renew_idle),
        (f"lease renewal: back-to-back `renew()` calls ({RENEW_CALLS} per run)", p.renew_calls),
    ):
        if values:
            add(
                Row(
                    name,
                    [*values],
                    f"call budget `timeout` {TIMEOUT:g} s",
                    _count([v < TIMEOUT / 2 for v in values], "< half of it"),
                    p95=True,
                )
            )
    took = _d([r.took for r in p.self_fence]).median
    if p.self_fence:
        sf = p.self_fence
        add(
            Row(
                "agent self-fence: etcd frozen -> the primary stops taking writes",
                [r.writes_stop for r in sf],
                f"<= fence_after + interval + fence time + {PROBE_EVERY:g} s probe = "
                f"{sec(fence_bound(took))} (median fence time); guarantee fence_after + "
                f"interval + fence_timeout = {AGENT_GUARANTEE:g} s",
                _count([r.writes_stop <= fence_bound(r.took) for r in sf])
                + "; "
                + _count([r.writes_stop <= AGENT_GUARANTEE for r in sf]),
            )
        )
        add(
            Row(
                "agent: last quorum contact -> its fence starts (agent's log)",
                [r.contact_age for r in sf],
                f"fence_after {FENCE_AFTER:g} s, + up to one interval",
                _count(
                    [
                        r.contact_age is not None
                        and FENCE_AFTER <= r.contact_age <= FENCE_AFTER + AGENT_INTERVAL
                        for r in sf
                    ]
                ),
                3,
            )
        )
        add(
            Row(
                "agent: the fence itself (`fence_command`, a new Python process)",
                [r.took for r in sf],
                f"<= fence_timeout {FENCE_TIMEOUT:g} s",
            )
        )
        add(
            Row(
                "agent: SIGCONT -> its heartbeat shows `fenced: true`",
                [r.heartbeat_fenced for r in sf],
                "etcd's recovery + the next check",
                _count([r.heartbeat_fenced is not None for r in sf]),
            )
        )
    if p.request:
        rq = p.request
        rtook = _d([r.took for r in rq]).median
        add(
            Row(
                "fence request: `fence_via_agent` -> returns (the agent reported the fence)",
                [r.returned for r in rq],
                f"<= 3 intervals + fence time + {LEADER_POLL:g} s poll + {CALL_SLACK:g} s "
                f"calls = {sec(request_bound(rtook))} (median fence time)",
                _count([r.returned <= request_bound(r.took) for r in rq]),
            )
        )
        add(
            Row(
                "fence request: request -> the agent notices it (agent's log)",
                [r.noticed for r in rq],
                f"its next quorum check: <= 1 interval ({AGENT_INTERVAL:g} s) + a call",
            )
        )
        add(
            Row(
                "fence request: request -> the primary stops taking writes",
                [r.writes_stop for r in rq],
                "before `fence_via_agent` returns",
                _count([r.writes_after_return == 0 for r in rq]),
            )
        )
        add(
            Row(
                "fence request: the fence itself (`fence_command`)",
                [r.took for r in rq],
                f"<= fence_timeout {FENCE_TIMEOUT:g} s",
            )
        )
    return rows


def render_section(p: LeaderPart) -> list[str]:
    lines: list[str] = []
    add = lines.append
    add("## 6. Leader election and fencing")
    add("")
    add(
        f"A real **{MEMBERS}-member etcd cluster** (etcd {p.etcd_version}; loopback ports, data "
        "on /dev/shm, heartbeat 100 ms, election timeout 1 s) and the **default production "
        f"timing**, read from the configuration models: `coordination.ttl` {TTL:g} s (renewal "
        f"every ttl/3 = {RENEW_INTERVAL:.2f} s; a leader counts itself leader until ttl - "
        f"`step_down_margin` = {TTL - MARGIN:g} s after its last renewal was sent, the margin "
        f"defaulting to ttl/5 = {MARGIN:g} s; a follower campaigns every {RETRY:g} s), "
        f"`coordination.timeout` {TIMEOUT:g} s; `agent.fence_after` {FENCE_AFTER:g} s, "
        f"`agent.interval` {AGENT_INTERVAL:g} s, `agent.fence_timeout` {FENCE_TIMEOUT:g} s. "
        f"Electors (`LeaderElector.from_settings`, {ELECTORS} per trial) run in the benchmark "
        "process, each with its own etcd client preferring another member (as one instance per "
        "region would); the leader that is killed runs in a child process (`python -c`, the "
        f"same elector). In the election trials the first elector leads alone and the followers "
        "start after it at an offset spread over the runs across the retry interval: the phase "
        "of their campaigns against the leader's renewals decides the last second of a "
        f"takeover. Every trial has its own key prefix; {p.runs} trial(s) per measure. The "
        f"part took {p.seconds:.0f} s (sandbox creation included); load average (1 min) at its "
        f"start / end: {p.load_start:.2f} / {p.load_end:.2f}."
    )
    add("")
    add(
        f"- **Clean stop**: after an idle window of {IDLE_RENEWALS} renewals the leader's "
        "`elector.stop()` (steps down, revokes its lease); until another elector's campaign "
        "returns.\n"
        "- **Crash**: the child leader is SIGKILLed at a point spread across the renew interval "
        "after its last renewal was sent; from the kill, and from that renewal (etcd cannot let "
        "the lease lapse less than ttl after it).\n"
        "- **Leader partitioned**: each elector reaches the members through TCP forwarders of "
        "its own; the leader's are cut (traffic held both ways, as a partition dropping "
        "packets) at a spread of points after a renewal, while the others still reach etcd. "
        "The electors' `is_leader` is sampled every 10 ms.\n"
        "- **etcd frozen**: all three members SIGSTOPped (the leader cut off from any quorum) "
        "at a spread of points after a renewal; the cut lasts until at least ttl after the last "
        f"renewal and {CUT_HOLD:g} s after the step-down, then SIGCONT.\n"
        "- **Lease renewal** (a keepalive plus a linearizable read of the leader key): the "
        "electors' own renewals in the idle windows (clean-stop and frozen trials, before any "
        f"fault), and {RENEW_CALLS} back-to-back `renew()` calls per run on a lease of their "
        "own.\n"
        "- **Agent self-fence**: a **fresh sandbox** per run; the current-primary document "
        f"names `{PRIMARY}` (as the leader publishes it); the node agent (`python -m "
        f"orchestrator.cli_agent --node {PRIMARY}`; the sandbox's `fence_command`, "
        "`orchestrator sandbox fence`) confirms its primary; a thread commits one INSERT every "
        f"{PROBE_EVERY * 1000:.0f} ms on it; then all etcd members are SIGSTOPped: until the "
        "first failed write of those that kept failing; SIGCONT afterwards.\n"
        "- **Fence request**: a **fresh sandbox** per run, the agent running, the same write "
        "probe; a leader (`Elected.build`, default timing) calls "
        f'`fence_via_agent("{PRIMARY}")` (publishes the request, then reads the agent\'s '
        f"heartbeat every {LEADER_POLL:g} s): until it returns, and until writes stop."
    )
    add("")
    add("| measure | n | min | **median** | max | expected / bound | within |")
    add("|---|---|---|---|---|---|---|")
    lines.extend(r.render() for r in _rows(p))
    add("")
    lines.extend(_per_trial(p))
    if p.errors:
        add(f"Failed trials: {'; '.join(p.errors)}.")
        add("")
    lines.extend(_analysis(p))
    return lines


def _per_trial(p: LeaderPart) -> list[str]:
    lines: list[str] = []
    add = lines.append
    if p.clean or p.crash or p.partition or p.cut:
        add('Per trial (elections; "old out": the old leader no longer counts itself leader):')
        add("")
        add(
            "| trial | # | fault after the last renewal | fault -> old out | last renewal -> "
            "old out | fault -> new leader | last renewal -> new leader | epochs | notes |"
        )
        add("|---|---|---|---|---|---|---|---|---|")
        for c in p.clean:
            add(
                f"| clean stop | {c.index} | - | {sec(c.stop_call, 3)} | - | {sec(c.handover)} | "
                f"- | {c.old_epoch} -> {c.new_epoch} | old epoch refused: "
                f"{'yes' if c.old_epoch_refused else '**no**'} |"
            )
        for k in p.crash:
            add(
                f"| crash | {k.index} | {sec(k.phase)} | (killed) | {sec(k.phase)} | "
                f"{sec(k.handover)} | {sec(k.from_renewal)} | {k.old_epoch} -> {k.new_epoch} | |"
            )
        for r in p.partition:
            add(
                f"| partitioned | {r.index} | {sec(r.phase)} | {sec(r.step_down)} | "
                f"{sec(r.down_from_renewal, 3)} | {sec(r.handover)} | {sec(r.new_from_renewal)} "
                f"| {r.old_epoch} -> {r.new_epoch} | no leader for {sec(r.gap)}; `{r.reason}` |"
            )
        for u in p.cut:
            add(
                f"| etcd frozen | {u.index} | {sec(u.phase)} | {sec(u.step_down)} | "
                f"{sec(u.from_renewal, 3)} | - | - | {u.old_epoch} -> {u.new_epoch} | "
                f"`{u.reason}`; a leader {sec(u.resume_to_leader)} after SIGCONT (the same "
                f"instance: {'yes' if u.same_instance else 'no'}) |"
            )
        add("")
    if p.self_fence:
        add("Per trial (agent self-fence; times from the cut, the agent's from its log):")
        add("")
        add(
            "| # | writes stop | last write ok | writes after the cut | `QUORUM_LOST` logged | "
            "last contact -> fence start | fence took | `SELF_FENCED` logged | SIGCONT -> "
            "heartbeat `fenced` |"
        )
        add("|---|---|---|---|---|---|---|---|---|")
        for s in p.self_fence:
            add(
                f"| {s.index} | {sec(s.writes_stop)} | {sec(s.last_write)} | "
                f"{s.writes_after_cut} | {_opt(s.quorum_lost)} | {_opt(s.contact_age, 3)} | "
                f"{_opt(s.took)} | {_opt(s.fence_logged)} | {_opt(s.heartbeat_fenced)} |"
            )
        add("")
    if p.request:
        add("Per trial (fence request; times from the request):")
        add("")
        add(
            "| # | agent notices | writes stop | fence took | fence logged | "
            "`fence_via_agent` returns | its answer |"
        )
        add("|---|---|---|---|---|---|---|")
        for q in p.request:
            add(
                f"| {q.index} | {_opt(q.noticed)} | {sec(q.writes_stop)} | {_opt(q.took)} | "
                f"{_opt(q.fence_logged)} | {sec(q.returned)} | {q.result} |"
            )
        add("")
    return lines


def _span(d: Dist, digits: int = 2) -> str:
    if d.n == 1:
        return sec(d.median, digits)
    return f"{sec(d.min, digits)} - {sec(d.max, digits)} (median {sec(d.median, digits)})"


def _analysis(p: LeaderPart) -> list[str]:
    out: list[str] = []
    if p.clean:
        d = _d([r.handover for r in p.clean])
        ok = sum(1 for r in p.clean if r.new_epoch > r.old_epoch and r.old_epoch_refused)
        out.append(
            f"- Clean stop: another elector led {_span(d)} after `stop()`. The stop revokes "
            f"the lease at once, so the wait is only a follower's next campaign (one every "
            f"{RETRY:g} s), far inside the ttl ({TTL:g} s). The new epoch was larger and "
            f"`check_epoch` refused the old one in {ok} of {len(p.clean)} trials."
        )
    if p.crash:
        d = _d([r.handover for r in p.crash])
        fr = _d([r.from_renewal for r in p.crash])
        ok = sum(1 for r in p.crash if r.new_epoch > r.old_epoch and not r.overlaps)
        out.append(
            f"- Crash: after SIGKILL of the leader's process another elector led "
            f'{_span(d)} after the kill, against the documented "within ttl (plus one retry)" '
            f"= {TTL + RETRY:g} s. From the dead leader's last renewal it took {_span(fr)}: "
            f"never less than the ttl ({TTL:g} s, etcd keeps the lease that long); the excess "
            f"({sec(fr.min - TTL)} - {sec(fr.max - TTL)}) is etcd's expiry scan (every "
            f"{ETCD_EXPIRY_SCAN:g} s) plus the wait for a follower's next campaign (every "
            f"{RETRY:g} s), and the kill's phase after the renewal makes up the rest. Counted "
            f"from the last renewal the worst case is ttl + {ETCD_EXPIRY_SCAN:g} + {RETRY:g} s "
            'plus a campaign, a little above "ttl plus one retry": that bound holds from the '
            "loss of the leader because the loss always comes after its last renewal. Larger "
            f"epoch, never two leaders: {ok} of {len(p.crash)}."
        )
    if p.partition:
        pr = p.partition
        down = _d([r.down_from_renewal for r in pr])
        new = _d([r.new_from_renewal for r in pr])
        gap = _d([r.gap for r in pr])
        hand = _d([r.handover for r in pr])
        overlaps = sum(r.overlaps for r in pr)
        out.append(
            f"- Leader partitioned (the others still reach etcd): the cut-off leader stopped "
            f"counting itself leader {_span(down, 3)} after its last renewal was sent (ttl - "
            f"margin = {TTL - MARGIN:g} s), another elector led {_span(new)} after it (not "
            f"before the ttl, {TTL:g} s), so between the two there was no leader for "
            f"{_span(gap)} and "
            + ("never two leaders" if not overlaps else f"**{overlaps} sample(s) with two**")
            + f" (the step-down margin, {MARGIN:g} s, is the least such gap). Counted from the "
            f"cut, another elector led after {_span(hand)} (bound: ttl + one retry, "
            f"{TTL + RETRY:g} s)."
        )
    if p.cut:
        fr = _d([r.from_renewal for r in p.cut])
        ml = _d([r.margin_left for r in p.cut])
        rs = _d([r.resume_to_leader for r in p.cut])
        others = sum(r.others_led for r in p.cut)
        out.append(
            f"- etcd frozen: the leader stepped down {_span(fr, 3)} after its last renewal was "
            f"sent, {_span(ml, 3)} before etcd could have let the lease lapse (margin "
            f"{MARGIN:g} s); {sum(1 for r in p.cut if r.from_renewal < TTL)} of {len(p.cut)} "
            "before the ttl. "
            + (
                "No elector counted itself leader for the rest of the cut (no quorum, no leader)"
                if not others
                else f"**{others} sample(s) showed a leader during the cut**"
            )
            + f"; after SIGCONT one led again after {_span(rs)} (etcd's own recovery, the old "
            "leader revoking the lease it abandoned, a campaign), under a larger epoch in "
            f"{sum(1 for r in p.cut if r.new_epoch > r.old_epoch)} of {len(p.cut)}."
        )
    ri, rc = _d(p.renew_idle), _d(p.renew_calls)
    if ri.n or rc.n:
        hist = [r for r in p.clean if r.hist_count and r.timed_count]
        cross = ""
        if hist:
            h_n = sum(r.hist_count for r in hist)
            h_mean = sum(r.hist_mean * r.hist_count for r in hist) / h_n
            t_n = sum(r.timed_count for r in hist)
            t_mean = sum(r.timed_mean * r.timed_count for r in hist) / t_n
            cross = (
                f" Cross-check on the clean-stop leaders: their `helios_lease_renew_seconds` "
                f"histograms average {_ms(h_mean)} over {h_n} renewals, the client-side timing "
                f"of the same renewals {_ms(t_mean)} over {t_n}."
            )
        worst = max(ri.p(0.95) if ri.n else 0.0, rc.p(0.95) if rc.n else 0.0)
        out.append(
            f"- Lease renewal on the idle cluster: the electors' own renewals took median "
            f"{_ms(ri.median)}, p95 {_ms(ri.p(0.95))}, max {_ms(ri.max)} ({ri.n} renewals); "
            f"back-to-back calls median {_ms(rc.median)}, p95 {_ms(rc.p(0.95))}, max "
            f"{_ms(rc.max)} ({rc.n} calls). At p95 that is {worst / TIMEOUT:.1%} of the "
            f"{TIMEOUT:g} s call budget and {worst / MARGIN:.1%} of the {MARGIN:g} s step-down "
            "margin: a renewal on a healthy cluster is nowhere near the deadline." + cross
        )
    if p.self_fence:
        sf = p.self_fence
        ws = _d([r.writes_stop for r in sf])
        ca = _d([r.contact_age for r in sf])
        tk = _d([r.took for r in sf])
        out.append(
            f"- Agent self-fence: the us-east primary stopped taking writes {_span(ws)} after "
            f"etcd froze. The agent started its fence {_span(ca, 3)} after its last successful "
            f"quorum check (fence_after {FENCE_AFTER:g} s, plus up to one {AGENT_INTERVAL:g} s "
            f"interval), and the fence (`fence_command`, a new Python process) took "
            f"{_span(tk)}: within fence_after + interval + fence time in "
            f"{sum(1 for r in sf if r.writes_stop <= fence_bound(r.took))} of {len(sf)} runs, "
            f"far inside the agent's guarantee ({AGENT_GUARANTEE:g} s with fence_timeout "
            f"{FENCE_TIMEOUT:g} s), and not before fence_after - interval "
            f"({FENCE_AFTER - AGENT_INTERVAL:g} s) in "
            f"{sum(1 for r in sf if r.writes_stop >= FENCE_AFTER - AGENT_INTERVAL)} of "
            f"{len(sf)}. Until then the primary kept taking writes (median "
            f"{_d([float(r.writes_after_cut) for r in sf]).median:.0f} commits after the cut): "
            "by design, as the leader waits out the same guarantee before promoting over an "
            "unreachable primary."
        )
    if p.request:
        rq = p.request
        rt = _d([r.returned for r in rq])
        out.append(
            f"- Fence request: `fence_via_agent` returned {_span(rt)} after the request. The "
            f"agent noticed it after {_span(_d([r.noticed for r in rq]))} (its next quorum "
            f"check), writes stopped after {_span(_d([r.writes_stop for r in rq]))} (its next "
            f"guard tick, then the fence, {_span(_d([r.took for r in rq]))}), and the rest is "
            f"the agent's next heartbeat and the leader's {LEADER_POLL:g} s poll. No write "
            f"succeeded after it returned in {sum(1 for r in rq if r.writes_after_return == 0)} "
            f"of {len(rq)} runs. (An agent that cannot be reached is waited out instead: "
            f"fence_after + interval + fence_timeout + timeout = {AGENT_GUARANTEE + TIMEOUT:g} "
            "s.)"
        )
    if not out:
        return []
    return ["### Analysis (leader election and fencing)", "", *out, ""]


def findings(p: LeaderPart | None) -> list[str]:
    """Bounds missed, safety violations and failed trials of section 6 (never hidden)."""
    if p is None:
        return []
    out = [f"{e}." for e in p.errors]
    for c in p.clean:
        tag = f"leader clean stop #{c.index}"
        if c.handover > TTL:
            out.append(f"{tag}: another elector led only {sec(c.handover)} after the stop.")
        if not (c.new_epoch > c.old_epoch and c.old_epoch_refused) or c.overlaps:
            out.append(
                f"{tag}: epoch {c.old_epoch} -> {c.new_epoch}, old refused "
                f"{c.old_epoch_refused}, {c.overlaps} sample(s) with two leaders."
            )
    for k in p.crash:
        tag = f"leader crash #{k.index}"
        if k.handover > TTL + RETRY:
            out.append(
                f"{tag}: another elector led {sec(k.handover)} after the kill, above ttl + one "
                f"retry ({TTL + RETRY:g} s)."
            )
        if k.from_renewal < TTL:
            out.append(
                f"{tag}: another elector led {sec(k.from_renewal)} after the dead leader's last "
                f"renewal, before the ttl ({TTL:g} s): the lease lapsed early."
            )
        if k.new_epoch <= k.old_epoch or k.overlaps:
            out.append(
                f"{tag}: epoch {k.old_epoch} -> {k.new_epoch}, {k.overlaps} sample(s) with two "
                "leaders."
            )
    for r in p.partition:
        tag = f"leader partitioned #{r.index}"
        if r.down_from_renewal >= TTL:
            out.append(f"{tag}: stepped down {sec(r.down_from_renewal, 3)} after its renewal.")
        if r.gap < MARGIN - 0.05 or r.overlaps:
            out.append(
                f"{tag}: the new leader came {sec(r.gap, 3)} after the old one stepped down "
                f"(margin {MARGIN:g} s), {r.overlaps} sample(s) with two leaders."
            )
        if r.new_from_renewal < TTL:
            out.append(f"{tag}: a new leader {sec(r.new_from_renewal)} after the last renewal.")
        if r.handover > TTL + RETRY:
            out.append(
                f"{tag}: another elector led {sec(r.handover)} after the cut, above ttl + one "
                f"retry ({TTL + RETRY:g} s)."
            )
        if r.reason != "renewal overdue" or r.new_epoch <= r.old_epoch:
            out.append(f"{tag}: reason {r.reason!r}, epoch {r.old_epoch} -> {r.new_epoch}.")
    for u in p.cut:
        tag = f"leader etcd frozen #{u.index}"
        if u.from_renewal >= TTL:
            out.append(
                f"{tag}: stepped down {sec(u.from_renewal, 3)} after its last renewal, not "
                f"before the ttl ({TTL:g} s)."
            )
        elif u.margin_left < MARGIN - 0.05:
            out.append(
                f"{tag}: stepped down only {sec(u.margin_left, 3)} before the lease could "
                f"lapse (margin {MARGIN:g} s)."
            )
        if u.reason != "renewal overdue":
            out.append(f"{tag}: step-down reason {u.reason!r}.")
        if u.others_led or u.overlaps or u.new_epoch <= u.old_epoch:
            out.append(
                f"{tag}: {u.others_led} sample(s) with a leader during the cut, {u.overlaps} "
                f"with two, epoch {u.old_epoch} -> {u.new_epoch}."
            )
    slow = [v for v in (*p.renew_idle, *p.renew_calls) if v >= TIMEOUT / 2]
    if slow:
        out.append(
            f"leader: {len(slow)} lease renewal(s) on the idle cluster took half the "
            f"{TIMEOUT:g} s call budget or more (max {sec(max(slow))})."
        )
    for s in p.self_fence:
        tag = f"agent self-fence #{s.index}"
        if s.writes_stop > AGENT_GUARANTEE:
            out.append(
                f"{tag}: writes stopped {sec(s.writes_stop)} after the cut, above the agent's "
                f"guarantee ({AGENT_GUARANTEE:g} s)."
            )
        elif s.writes_stop > fence_bound(s.took):
            out.append(
                f"{tag}: writes stopped {sec(s.writes_stop)} after the cut, above fence_after "
                f"+ interval + fence time ({sec(fence_bound(s.took))})."
            )
        if s.writes_stop < FENCE_AFTER - AGENT_INTERVAL:
            out.append(
                f"{tag}: writes stopped only {sec(s.writes_stop)} after the cut, before "
                f"fence_after - interval ({FENCE_AFTER - AGENT_INTERVAL:g} s)."
            )
        if s.heartbeat_fenced is None:
            out.append(f"{tag}: the heartbeat never showed the fence after SIGCONT.")
        if s.agent_exit not in (0, None):
            out.append(f"{tag}: the agent exited with {s.agent_exit} on SIGTERM.")
    for q in p.request:
        tag = f"fence request #{q.index}"
        if "fenced by its agent" not in q.result:
            out.append(f"{tag}: `fence_via_agent` answered {q.result!r}.")
        if q.writes_after_return:
            out.append(
                f"{tag}: {q.writes_after_return} write(s) succeeded after `fence_via_agent` "
                "returned."
            )
        if q.returned > request_bound(q.took):
            out.append(
                f"{tag}: returned after {sec(q.returned)}, above {sec(request_bound(q.took))}."
            )
        if q.agent_exit not in (0, None):
            out.append(f"{tag}: the agent exited with {q.agent_exit} on SIGTERM.")
    if p.runs < RUNS:
        out.append(
            f"leader: {p.runs} trial(s) per measure, fewer than the {RUNS} of a full benchmark."
        )
    return out
