"""PostgresProbe and HeartbeatWriter against the real three-region sandbox.

us-east is the primary, us-west and eu stream from it. Tests that hang or kill a node use a
replica and leave it running again.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

from orchestrator.errors import PermanentError
from orchestrator.providers.db_postgres import HeartbeatWriter, NotPrimaryError
from probes import ErrorClass, Observation, PostgresProbe, Role

pytestmark = pytest.mark.sandbox

TIMEOUT = 0.5
BOUND = TIMEOUT + 0.3
REPLICAS = ("us-west", "eu")


@pytest.fixture
async def probe_factory(sandbox: Any) -> AsyncIterator[Callable[..., PostgresProbe]]:
    made: list[PostgresProbe] = []

    def make(region: str, timeout: float = TIMEOUT, service: str | None = None) -> PostgresProbe:
        probe = PostgresProbe(
            region, sandbox.dsn(region), sandbox.password(), timeout, service=service
        )
        made.append(probe)
        return probe

    yield make
    for probe in made:
        await probe.aclose()


async def observe_until(
    probe: PostgresProbe, pred: Callable[[Observation], bool], within: float
) -> Observation:
    deadline = time.monotonic() + within
    while True:
        obs = await probe.observe()
        if pred(obs) or time.monotonic() > deadline:
            return obs
        await asyncio.sleep(0.1)


async def steady_latencies(probe: PostgresProbe, n: int = 20) -> list[float]:
    out = []
    for _ in range(n):
        obs = await probe.observe()
        assert obs.ok, obs.error
        out.append(obs.latency)
    return out


async def test_primary_probe(probe_factory: Callable[..., PostgresProbe]) -> None:
    probe = probe_factory("us-east")
    obs = await observe_until(
        probe, lambda o: o.database is not None and o.database.replicas_streaming == 2, 15
    )
    assert obs.ok and obs.error_class is None
    assert obs.role is Role.PRIMARY
    db = obs.database
    assert db is not None
    assert db.timeline is not None and db.timeline >= 1
    assert isinstance(db.current_lsn, int) and db.current_lsn > 0
    assert db.receive_lsn is None and db.replay_lsn is None
    assert db.wal_receiver_status is None and db.upstream is None
    assert db.replay_paused is False
    assert db.replicas_streaming == 2
    assert db.server_version is not None and db.server_version >= 150000
    lat = await steady_latencies(probe)
    print(f"primary probe latency ms: median {statistics.median(lat) * 1000:.2f}")
    assert statistics.median(lat) < 0.1


@pytest.mark.parametrize("region", REPLICAS)
async def test_replica_probe(
    region: str, sandbox: Any, probe_factory: Callable[..., PostgresProbe]
) -> None:
    probe = probe_factory(region)
    obs = await observe_until(
        probe,
        lambda o: o.database is not None and o.database.wal_receiver_status == "streaming",
        15,
    )
    assert obs.ok and obs.role is Role.REPLICA
    db = obs.database
    assert db is not None
    assert db.wal_receiver_status == "streaming"
    assert db.timeline is not None and db.timeline >= 1
    assert isinstance(db.receive_lsn, int) and isinstance(db.replay_lsn, int)
    assert db.replay_lsn <= db.receive_lsn
    assert db.current_lsn is None and db.replicas_streaming is None
    assert db.upstream is not None and db.upstream.endswith(f":{sandbox.port('us-east')}")
    assert db.wal_receiver_last_msg_age is not None and db.wal_receiver_last_msg_age >= 0
    assert db.replay_paused is False
    lat = await steady_latencies(probe)
    print(f"{region} probe latency ms: median {statistics.median(lat) * 1000:.2f}")
    assert statistics.median(lat) < 0.1


async def test_heartbeat_reaches_the_replicas(
    sandbox: Any, probe_factory: Callable[..., PostgresProbe]
) -> None:
    service = f"probe-test-{uuid.uuid4().hex[:8]}"
    writer = HeartbeatWriter(service, sandbox.dsn("us-east"), sandbox.password(), 2.0)
    try:
        first = await writer.write(1000.5)
        written_at = time.time()
        seq = await writer.write(written_at)
    finally:
        await writer.aclose()
    assert first == 1 and seq == 2

    primary = await probe_factory("us-east", service=service).observe()
    assert primary.database is not None and primary.database.heartbeat is not None
    assert primary.database.heartbeat.seq == seq
    assert primary.database.heartbeat.written_at == written_at

    for region in REPLICAS:
        probe = probe_factory(region, service=service)
        t0 = time.monotonic()
        obs = await observe_until(
            probe,
            lambda o: (
                o.database is not None
                and o.database.heartbeat is not None
                and o.database.heartbeat.seq == seq
            ),
            3.0,
        )
        assert obs.database is not None and obs.database.heartbeat is not None, obs
        assert obs.database.heartbeat.seq == seq
        assert obs.database.heartbeat.written_at == written_at
        print(f"heartbeat visible on {region} after {time.monotonic() - t0:.3f}s")
        again = await probe.observe()  # the one-round-trip path, now that the table is known
        assert again.database is not None and again.database.heartbeat == obs.database.heartbeat


async def test_writer_refuses_on_a_replica(sandbox: Any) -> None:
    writer = HeartbeatWriter("probe-test-refused", sandbox.dsn("us-west"), sandbox.password(), 2.0)
    try:
        for _ in range(2):  # also after the connection was dropped
            with pytest.raises(NotPrimaryError) as err:
                await writer.write(time.time())
            assert isinstance(err.value, PermanentError)
            assert sandbox.password() not in str(err.value)
    finally:
        await writer.aclose()


async def test_hung_node_times_out_then_recovers(
    sandbox: Any, probe_factory: Callable[..., PostgresProbe]
) -> None:
    probe = probe_factory("us-west")
    assert (await probe.observe()).ok
    await asyncio.to_thread(sandbox.hang, "us-west")
    try:
        for _ in range(2):  # first on the open connection, then while connecting
            t0 = time.monotonic()
            obs = await probe.observe()
            elapsed = time.monotonic() - t0
            print(f"hung node: {obs.error_class} after {elapsed:.3f}s")
            assert not obs.ok and obs.error_class is ErrorClass.TIMEOUT
            assert elapsed < BOUND
    finally:
        await asyncio.to_thread(sandbox.unhang, "us-west")
    obs = await probe.observe()
    assert obs.ok, obs.error
    assert obs.role is Role.REPLICA


async def test_killed_node_fails_fast_then_recovers_after_start(
    sandbox: Any, probe_factory: Callable[..., PostgresProbe]
) -> None:
    probe = probe_factory("eu")
    assert (await probe.observe()).ok
    await asyncio.to_thread(sandbox.kill, "eu")
    try:
        # Backends notice the postmaster's death on their own; allow them a moment.
        first = await observe_until(probe, lambda o: not o.ok, 5.0)
        assert not first.ok
        assert first.error_class in {ErrorClass.RESET, ErrorClass.REFUSED}, first.error
        t0 = time.monotonic()
        second = await probe.observe()
        assert second.error_class is ErrorClass.REFUSED, second.error
        assert time.monotonic() - t0 < BOUND
        print(f"killed node: {first.error_class} then {second.error_class}")
    finally:
        await asyncio.to_thread(sandbox.start, "eu")
    obs = await observe_until(probe, lambda o: o.ok, 30.0)
    assert obs.ok, obs.error
    assert obs.role is Role.REPLICA


async def test_heartbeat_table_dropped_and_recreated(
    sandbox: Any, probe_factory: Callable[..., PostgresProbe]
) -> None:
    """A probe that knows the table (and has prepared its query) keeps working when the table
    is dropped (heartbeat None, not a failure); a writer that created it recreates it."""
    service = f"probe-test-{uuid.uuid4().hex[:8]}"
    writer = HeartbeatWriter(service, sandbox.dsn("us-east"), sandbox.password(), 2.0)
    probe = probe_factory("us-west", service=service)
    try:
        seq = await writer.write(time.time())

        def has_row(o: Observation) -> bool:
            return o.database is not None and o.database.heartbeat is not None

        assert has_row(await observe_until(probe, has_row, 3.0))
        for _ in range(6):  # past psycopg's prepare threshold (5)
            assert has_row(await probe.observe())
        async with await psycopg.AsyncConnection.connect(
            sandbox.dsn("us-east"), password=sandbox.password(), autocommit=True
        ) as admin:
            await admin.execute("DROP TABLE helios.heartbeat")
        seen = []
        while not seen or has_row(seen[-1]):  # until the drop has been replayed on us-west
            assert len(seen) < 100, "the drop did not reach us-west"
            seen.append(await probe.observe())
            await asyncio.sleep(0.02)
        assert all(o.ok for o in seen), [o.error for o in seen if not o.ok]
        assert (await probe.observe()).ok

        assert await writer.write(time.time()) == 1  # a fresh table, seq starts again
        back = await observe_until(probe, has_row, 3.0)
        assert back.database is not None and back.database.heartbeat is not None
        assert back.database.heartbeat.seq == 1 and seq >= 1
    finally:
        await writer.aclose()
