"""The PostgreSQL failover driver and the sandbox's service address, fence and rejoin, against
real PostgreSQL servers.

Destructive tests get a sandbox of their own (``own``: fresh per test, in its own temporary
directory and 16-port block, destroyed afterwards; ``up`` takes about 3 s), so the shared
session sandbox is only read. The drivers are built from the generated configuration, so the
sandbox's ``fence_command`` and ``rejoin_command`` (``orchestrator sandbox fence|rejoin``) run
for real. Durations of the operations are printed at the end of the module (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import psycopg.errors
import pytest
import pytest_asyncio

from orchestrator.config import load_config
from orchestrator.errors import OperationTimeout, PermanentError
from orchestrator.providers.db_postgres import SOFT_FENCE, NodeStatus, PostgresDriver
from orchestrator.sandbox import Sandbox

pytestmark = pytest.mark.sandbox

EXE = Path(sys.executable).with_name("orchestrator")
TIMINGS: dict[str, list[float]] = {}
Drivers = dict[str, PostgresDriver]


def _load_conftest() -> ModuleType:
    """This directory's conftest as a plain module (its port reservation and leftover scan)."""
    path = Path(__file__).with_name("conftest.py")
    spec = importlib.util.spec_from_file_location("_integration_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_conftest = _load_conftest()
wait_until: Callable[..., Any] = _conftest.wait_until


def timed(name: str, started: float) -> float:
    took = time.monotonic() - started
    TIMINGS.setdefault(name, []).append(took)
    return took


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _report_timings() -> Iterator[None]:
    yield
    for name, values in TIMINGS.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"\n[pg-driver timing] {name}: {shown} s")


@pytest.fixture
def own() -> Iterator[Sandbox]:
    """A fresh sandbox for one destructive test; destroyed after it, nothing left running."""
    with _conftest.sandbox_in_tmp("helios-pgdriver-") as sb:
        yield sb


def make_drivers(sb: Sandbox, timeout: float = 3.0, commands: bool = True) -> Drivers:
    """One driver per region, from the generated configuration."""
    out = {}
    for region in load_config(sb.config_path()).regions:
        (node,) = region.nodes
        assert node.password is not None
        out[region.name] = PostgresDriver(
            node.name,
            node.dsn,
            node.password.get_secret_value(),
            timeout,
            node.fence_command if commands else None,
            node.rejoin_command if commands else None,
            region=region.name,
        )
    return out


@pytest_asyncio.fixture
async def drv(own: Sandbox) -> AsyncIterator[Drivers]:
    drivers = make_drivers(own)
    try:
        yield drivers
    finally:
        for d in drivers.values():
            await d.aclose()


# --- helpers -------------------------------------------------------------------------------


def connect(sb: Sandbox, region: str) -> psycopg.Connection[Any]:
    return psycopg.connect(sb.dsn(region), password=sb.password(), autocommit=True)


def query(sb: Sandbox, region: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with connect(sb, region) as conn:
        return conn.execute(sql, args or None).fetchall()


def rows(sb: Sandbox, region: str) -> list[str]:
    return [r[0] for r in query(sb, region, "SELECT v FROM drill ORDER BY v")]


def create_table(sb: Sandbox, *values: str) -> None:
    with connect(sb, "us-east") as conn:
        conn.execute("CREATE TABLE drill (v text PRIMARY KEY)")
        for v in values:
            conn.execute("INSERT INTO drill VALUES (%s)", (v,))
    for region in ("us-west", "eu"):
        wait_until(lambda r=region: rows(sb, r) == sorted(values), 15, what=f"rows on {region}")


def insert(sb: Sandbox, region: str, value: str) -> bool:
    with connect(sb, region) as conn:
        conn.execute("INSERT INTO drill VALUES (%s)", (value,))
    return True


async def wait_streaming_from(
    d: PostgresDriver, sb: Sandbox, upstream: str, timeline: int, timeout: float = 30.0
) -> NodeStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = await d.status()
        if (
            st.in_recovery
            and st.wal_receiver_status == "streaming"
            and st.upstream == f"{sb.host(upstream)}:{sb.port(upstream)}"
            and st.timeline == timeline
        ):
            return st
        assert time.monotonic() < deadline, f"{d.node} not streaming from {upstream}: {st}"
        await asyncio.sleep(0.1)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *args], capture_output=True, text=True, timeout=120, check=False
    )


def region_state(sb: Sandbox, region: str) -> tuple[str, str, bool]:
    (r,) = [r for r in sb.status().regions if r.region == region]
    return r.state, r.role, r.fenced


# --- the service address (shared sandbox, read only) ---------------------------------------


def test_each_region_has_its_address_and_the_service_name_reaches_the_primary(
    sandbox: Sandbox,
) -> None:
    assert {sandbox.port(r) for r in sandbox.REGIONS} == {sandbox.service_port}
    assert len({sandbox.host(r) for r in sandbox.REGIONS}) == 3
    for region in sandbox.REGIONS:
        assert sandbox.dns_target(region) == sandbox.host(region)
        served = query(sandbox, region, "SELECT host(inet_server_addr()), inet_server_port()")
        assert served == [(sandbox.host(region), sandbox.service_port)]
    assert sandbox.resolve_service() == sandbox.host("us-east")
    with psycopg.connect(sandbox.service_dsn(), password=sandbox.password()) as conn:
        row = conn.execute("SELECT host(inet_server_addr()), pg_is_in_recovery()").fetchone()
    assert row == (sandbox.host("us-east"), False)


# --- promote, ensure_slots, repoint, DNS following the primary -----------------------------


async def test_promote_a_replica_and_repoint_the_other(own: Sandbox, drv: Drivers) -> None:
    east, west, eu = drv["us-east"], drv["us-west"], drv["eu"]
    st = await east.status()
    assert st.is_primary and st.timeline == 1 and st.current_lsn
    for d in (west, eu):
        st = await d.status()
        assert st.in_recovery and st.timeline == 1
        assert st.upstream == f"{own.host('us-east')}:{own.port('us-east')}"
    create_table(own, "before")

    own.kill("us-east")
    assert not (await east.status()).reachable
    started = time.monotonic()
    timeline = await west.promote(slots=["us_east", "eu"])
    timed("promote (primary killed)", started)
    assert timeline == 2
    assert await west.promote() == 2  # idempotent: already a primary
    assert (await west.status()).is_primary
    insert(own, "us-west", "after")  # writable
    assert await west.ensure_slots(["us_east", "eu"]) == []
    assert await west.ensure_slots(["spare", "eu"]) == ["spare"]
    slots = query(own, "us-west", "SELECT slot_name FROM pg_replication_slots ORDER BY 1")
    assert slots == [("eu",), ("spare",), ("us_east",)]
    with pytest.raises(PermanentError, match="invalid replication slot"):
        await west.ensure_slots(["Bad-Name"])

    pid = own.postmaster_pid("eu")
    started = time.monotonic()
    assert await eu.repoint(own.host("us-west"), own.port("us-west"), "eu", "eu") is True
    st = await wait_streaming_from(eu, own, "us-west", timeline=2)
    timed("repoint until streaming", started)
    assert own.postmaster_pid("eu") == pid  # no restart
    wait_until(lambda: rows(own, "eu") == ["after", "before"], 10, what="new rows on eu")
    assert await eu.repoint(own.host("us-west"), own.port("us-west"), "eu", "eu") is False
    conninfo = query(own, "eu", "SHOW primary_conninfo")[0][0]
    assert "user=replicator" in conninfo and "application_name=eu" in conninfo
    standbys = query(own, "us-west", "SELECT application_name, state FROM pg_stat_replication")
    assert standbys == [("eu", "streaming")]
    with pytest.raises(PermanentError, match="only a standby can be re-pointed"):
        await west.repoint(own.host("eu"), own.port("eu"), "us-west", None)

    # The service name follows the primary once DNS is switched.
    config = str(own.config_path())
    switched = cli("dns", "switch", "--to", "us-west", "--config", config)
    assert switched.returncode == 0, switched.stdout + switched.stderr
    assert own.resolve_service() == own.host("us-west")
    with psycopg.connect(own.service_dsn(), password=own.password()) as conn:
        row = conn.execute("SELECT pg_is_in_recovery(), count(*) FROM drill").fetchone()
    assert row == (False, 2)


# --- rejoin with pg_rewind -----------------------------------------------------------------


async def test_rejoin_rewinds_the_old_primary_and_discards_its_divergent_writes(
    own: Sandbox, drv: Drivers
) -> None:
    east, west, eu = drv["us-east"], drv["us-west"], drv["eu"]
    create_table(own, "before")
    # Promote us-west while us-east still runs; eu follows us-west from now on.
    assert await west.promote(slots=["us_east", "eu"]) == 2
    await eu.repoint(own.host("us-west"), own.port("us-west"), "eu", "eu")
    await wait_streaming_from(eu, own, "us-west", timeline=2)
    insert(own, "us-east", "lost")  # the old primary takes a write nobody else has ...
    own.kill("us-east")  # ... and crashes
    insert(own, "us-west", "after")

    with pytest.raises(PermanentError, match="fence it before a rejoin"):
        await west.rejoin("eu-1", "eu", own.host("eu"), own.port("eu"))
    started = time.monotonic()
    out = await east.rejoin("us-west-1", "us-west", own.host("us-west"), own.port("us-west"))
    timed("rejoin (pg_rewind after a crash, streaming)", started)
    assert out == "us-east: rewound"
    st = await wait_streaming_from(east, own, "us-west", timeline=2, timeout=5)
    assert st.in_recovery
    wait_until(lambda: rows(own, "us-east") == ["after", "before"], 10, what="rewound rows")
    assert region_state(own, "us-east") == ("running", "replica", False)
    assert region_state(own, "us-west") == ("running", "primary", False)
    standbys = query(
        own,
        "us-west",
        "SELECT application_name, slot_name FROM pg_stat_replication "
        "JOIN pg_replication_slots ON active_pid = pid ORDER BY 1",
    )
    assert standbys == [("eu", "eu"), ("us-east", "us_east")]

    # Again, on the running standby: it is stopped, nothing diverged, no rewind is needed.
    pid = own.postmaster_pid("us-east")
    out = await east.rejoin("us-west-1", "us-west", own.host("us-west"), own.port("us-west"))
    assert out == "us-east: no rewind required"
    assert own.postmaster_pid("us-east") not in (None, pid)
    await wait_streaming_from(east, own, "us-west", timeline=2)


# --- planned switchover: stop_writes, wait for replay, fence, promote, rejoin ---------------


async def switchover(sb: Sandbox, drv: Drivers, old: str, new: str, other: str) -> int:
    """The switchover runbook's driver calls; returns the new timeline."""
    lsn = await drv[old].stop_writes()
    assert await drv[old].stop_writes() >= lsn  # idempotent
    with connect(sb, old) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO drill VALUES ('refused')")
    deadline = time.monotonic() + 15
    while ((await drv[new].status()).replay_lsn or 0) < lsn:
        assert time.monotonic() < deadline, f"{new} did not replay {lsn}"
        await asyncio.sleep(0.05)
    await drv[old].fence("switchover")
    timeline = await drv[new].promote(slots=[sb.slot_name(old), sb.slot_name(other)])
    insert(sb, new, f"on-{new}")  # writable, even if it was read-only once (see below)
    await drv[other].repoint(sb.host(new), sb.port(new), other, sb.slot_name(other))
    await drv[old].rejoin(f"{new}-1", new, sb.host(new), sb.port(new))
    for region in (old, other):
        await wait_streaming_from(drv[region], sb, new, timeline)
    return timeline


async def test_switchover_and_back_loses_nothing(own: Sandbox, drv: Drivers) -> None:
    create_table(own, "before")
    with pytest.raises(PermanentError, match="no writes to stop"):
        await drv["us-west"].stop_writes()
    await drv["us-east"].stop_writes()
    await drv["us-east"].resume_writes()  # e.g. an aborted switchover
    wait_until(lambda: insert(own, "us-east", "resumed"), 5, what="writable again")
    await drv["us-east"].stop_writes()
    assert await drv["us-east"].promote() == 1  # a primary: promote only resets read-only
    wait_until(lambda: insert(own, "us-east", "promoted"), 5, what="writable again")

    started = time.monotonic()
    assert await switchover(own, drv, "us-east", "us-west", "eu") == 2
    timed("switchover (stop_writes .. rejoin streaming)", started)
    # ... and back (us-west's read-only setting goes with its rewind from us-east).
    assert await switchover(own, drv, "us-west", "us-east", "eu") == 3
    expected = ["before", "on-us-east", "on-us-west", "promoted", "resumed"]
    for region in own.REGIONS:
        wait_until(lambda r=region: rows(own, r) == expected, 10, what=f"all rows on {region}")
    assert query(own, "us-east", "SHOW default_transaction_read_only") == [("off",)]


# --- fencing ---------------------------------------------------------------------------------


async def test_fence_a_reachable_primary_with_the_fence_command(own: Sandbox, drv: Drivers) -> None:
    east = drv["us-east"]
    create_table(own, "before")
    session = connect(own, "us-east")
    try:
        started = time.monotonic()
        done = await east.fence("drill")
        timed("fence (reachable primary, via the CLI command)", started)
        assert "fence_command ran on the reachable primary (drill)" in done
        with pytest.raises(psycopg.OperationalError):
            session.execute("INSERT INTO drill VALUES ('during')")
    finally:
        session.close()
    assert region_state(own, "us-east") == ("stopped", "replica", True)
    assert (own.data_dir("us-east") / "standby.signal").exists()
    assert not (await east.status()).reachable

    own.start("us-east")  # a plain start: it comes back as a standby, never writable
    assert query(own, "us-east", "SELECT pg_is_in_recovery()") == [(True,)]
    with connect(own, "us-east") as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO drill VALUES ('after-fence')")
    with (
        connect(own, "us-east") as conn,
        pytest.raises(psycopg.errors.FeatureNotSupported, match="during recovery"),
    ):
        conn.execute("BEGIN READ WRITE")
    assert rows(own, "us-east") == ["before"]
    assert (await east.status()).in_recovery
    assert "nothing to do" in await east.fence("again")  # a standby takes no writes
    assert await east.demote_if_stale(2) is False


@pytest.mark.parametrize("failure", ["kill", "hang"])
async def test_fence_an_unreachable_node_with_the_fence_command(own: Sandbox, failure: str) -> None:
    drivers = make_drivers(own, timeout=1.0)
    east = drivers["us-east"]
    try:
        getattr(own, failure)("us-east")
        st = await east.status()
        assert not st.reachable and st.error
        started = time.monotonic()
        done = await east.fence("lost")
        timed(f"fence (primary {failure}ed, via the CLI command)", started)
        assert "fence_command ran on the unreachable" in done
        assert region_state(own, "us-east") == ("stopped", "replica", True)
        assert _conftest.processes_under(own.data_dir("us-east")) == []  # hung children too
        assert "fence_command ran" in await east.fence("again")  # idempotent
        own.start("us-east")
        assert query(own, "us-east", "SELECT pg_is_in_recovery()") == [(True,)]
    finally:
        for d in drivers.values():
            await d.aclose()


async def test_fence_without_a_command(own: Sandbox) -> None:
    drivers = make_drivers(own, commands=False)
    east, west = drivers["us-east"], drivers["us-west"]
    try:
        create_table(own, "before")
        session = connect(own, "us-east")
        try:
            done = await east.fence("drill")
            assert SOFT_FENCE in done
            with pytest.raises(psycopg.OperationalError):
                session.execute("SELECT 1")  # existing sessions were terminated
        finally:
            session.close()
        with connect(own, "us-east") as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO drill VALUES ('x')")
            # ... which is why it is not a hard fence: a client can still write.
            conn.execute("BEGIN READ WRITE")
            conn.execute("INSERT INTO drill VALUES ('still-writable')")
            conn.execute("COMMIT")

        own.kill("us-west")
        with pytest.raises(PermanentError, match="unreachable node without fence_command"):
            await west.fence("lost")
        with pytest.raises(PermanentError, match="no rejoin_command"):
            await west.rejoin("us-east-1", "us-east", own.host("us-east"), own.port("us-east"))
    finally:
        for d in drivers.values():
            await d.aclose()


async def test_demote_if_stale_fences_an_old_primary(own: Sandbox, drv: Drivers) -> None:
    east, west, eu = drv["us-east"], drv["us-west"], drv["eu"]
    assert await west.promote() == 2  # us-east keeps running: two primaries
    st = await east.status()
    assert st.is_primary and st.timeline == 1
    assert await west.demote_if_stale(2) is False  # the current primary
    assert await eu.demote_if_stale(2) is False  # a standby
    assert await east.demote_if_stale(1) is False  # not older than expected
    started = time.monotonic()
    assert await east.demote_if_stale(2) is True
    timed("demote_if_stale (fence a reachable stale primary)", started)
    assert region_state(own, "us-east") == ("stopped", "replica", True)
    assert await east.demote_if_stale(2) is False  # now unreachable: nothing to do


# --- commands: templating, failures, timeouts (no database needed) -----------------------


async def test_commands_are_templated_bounded_and_report_stderr(
    unused_tcp_port: int, tmp_path: Path
) -> None:
    dsn = f"host=127.0.0.1 port={unused_tcp_port} dbname=postgres user=helios"  # refused
    echo = [sys.executable, "-c", "import sys; print(sys.argv[1:])"]
    d = PostgresDriver(
        "n1",
        dsn,
        None,
        1.0,
        fence_command=[
            sys.executable,
            "-c",
            "import sys; sys.stderr.write('no power\\n'); sys.exit(3)",
        ],
        rejoin_command=[
            *echo,
            "{node}",
            "{region}",
            "{upstream_node}",
            "{upstream_region}",
            "{upstream_host}",
            "{upstream_port}",
            "{{x}}",
        ],
        region="r1",
    )
    try:
        out = await d.rejoin("n2", "r2", "10.0.0.2", 5433)
        assert out == "['n1', 'r1', 'n2', 'r2', '10.0.0.2', '5433', '{x}']"
        with pytest.raises(PermanentError, match=r"exited with status 3: no power"):
            await d.fence("lost")
    finally:
        await d.aclose()

    pidfile = tmp_path / "pid"
    sleeper = [
        sys.executable,
        "-c",
        f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)",
    ]
    d = PostgresDriver("n1", dsn, None, 1.0, fence_command=sleeper, fence_timeout=1.5)
    bad = PostgresDriver("n1", dsn, None, 1.0, fence_command=["echo", "{upstream_host}"])
    try:
        started = time.monotonic()
        with pytest.raises(OperationTimeout, match=r"did not finish within 1\.5s"):
            await d.fence("lost")
        assert time.monotonic() - started < 5
        pid = int(pidfile.read_text())
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 5, what="command killed")
        with pytest.raises(PermanentError, match="cannot fill in 'upstream_host'"):
            await bad.fence("lost")
    finally:
        await d.aclose()
        await bad.aclose()


def test_sandbox_cli_fence_and_rejoin_need_their_arguments(tmp_path: Path) -> None:
    state = str(tmp_path / "none")
    out = cli("sandbox", "rejoin", "us-east", "--state-dir", state)
    assert out.returncode == 2 and "needs --upstream" in out.stderr
    out = cli("sandbox", "fence", "us-east", "--upstream", "eu", "--state-dir", state)
    assert out.returncode == 2 and "--upstream only goes with sandbox rejoin" in out.stderr
    out = cli("sandbox", "rejoin", "us-east", "--upstream", "us-east", "--state-dir", state)
    assert out.returncode == 1 and "cannot rejoin itself" in out.stderr
    assert not (tmp_path / "none").exists()
