"""The synthetic write load of a DR drill, and the client's way into the service.

:class:`WriteLoad` writes one row ``(drill id, seq, client time)`` into ``helios.drill_writes``
``rate`` times a second through the service name, as an application would, and records every
acknowledged ``seq`` with the wall-clock time its acknowledgement arrived, and every failed
attempt. From those it measures, per leg, the write unavailability (:meth:`WriteLoad.measure`)
and the acknowledged commits the new primary does not have (:meth:`WriteLoad.lost_commits`).
:func:`smoke_check` runs a drill's SQL (through the service name) and HTTP smoke checks.

Guarantees:

* Every write is bounded by ``write_load.timeout``; a timed-out write never waits on psycopg's
  query cancellation: the connection's socket is shut down (:class:`probes.postgres.ConnectionSlot`)
  and the connection discarded. Resolving the service name is bounded by
  :data:`RESOLVE_TIMEOUT`.
* After any failure the next attempt reconnects, resolving the service record again through the
  configured name servers (:class:`ServiceTarget`); nothing is cached, so the load follows a DNS
  switch as soon as the name servers serve it.
* Every attempt uses a new ``seq``; only acknowledged commits are counted as acknowledged.
* The load runs as one task owned by the :class:`WriteLoad`; :meth:`WriteLoad.stop` cancels it,
  waits for it and closes the connection (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
import psycopg
import psycopg.errors
from psycopg.conninfo import make_conninfo

from orchestrator.config import Config
from orchestrator.config_bcp import HttpSmokeCheck, SqlSmokeCheck
from orchestrator.dnsruntime import resolve_service
from orchestrator.drillcheck import longest_gap, lost_seqs
from orchestrator.errors import HeliosError, TransientError
from probes.postgres import Connection, ConnectionSlot

APPLICATION_NAME: Final = "helios-drill"
RESOLVE_TIMEOUT: Final = 3.0
CREATE_SQL: Final = """\
CREATE SCHEMA IF NOT EXISTS helios;
CREATE TABLE IF NOT EXISTS helios.drill_writes (
    drill_id text NOT NULL,
    seq bigint NOT NULL,
    client_at double precision NOT NULL,
    PRIMARY KEY (drill_id, seq)
)"""
INSERT_SQL: Final = "INSERT INTO helios.drill_writes (drill_id, seq, client_at) VALUES (%s, %s, %s)"
SELECT_SQL: Final = "SELECT seq FROM helios.drill_writes WHERE drill_id = %s"

Target = Callable[[], Awaitable[tuple[str, str | None]]]
"""Where to connect now: ``(dsn, password)``; called before every (re)connection."""


# --- the way into the service ----------------------------------------------------------------


class ServiceTarget:
    """How a client reaches the service. With ``dns`` and ``failover.verify`` configured: the
    service record resolved through the name servers on every call, connected with the verify
    DSN (the client's view). Otherwise: the DSN of the node ``primary()`` names (the primary as
    the drill last knew it)."""

    def __init__(self, cfg: Config, primary: Callable[[], str | None]) -> None:
        self._cfg = cfg
        self._primary = primary
        self._nodes = {n.name: n for _, n in cfg.all_nodes()}

    @property
    def through_dns(self) -> bool:
        return self._cfg.dns is not None and self._cfg.failover.verify is not None

    async def __call__(self) -> tuple[str, str | None]:
        verify = self._cfg.failover.verify
        if self._cfg.dns is not None and verify is not None:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                address = await resolve_service(self._cfg)
            password = verify.password.get_secret_value() if verify.password else None
            return make_conninfo(verify.dsn, host=address), password
        name = self._primary()
        if name is None or name not in self._nodes:
            raise TransientError("no primary known to write to")
        node = self._nodes[name]
        return node.dsn, node.password.get_secret_value() if node.password else None


async def first_value(dsn: str, password: str | None, query: str, timeout: float) -> Any:
    """The first column of the first row of ``query`` (None without a row), on a connection of
    its own; bounded by ``timeout`` even against a frozen server. Raises psycopg.Error, OSError
    or TimeoutError."""

    async def work(conn: Connection) -> Any:
        cur = await conn.execute(query.encode())
        row = await cur.fetchone()
        return row[0] if row else None

    slot = ConnectionSlot(dsn, password, timeout, APPLICATION_NAME)
    try:
        async with asyncio.timeout(timeout):
            return await slot.run(work)
    finally:
        await slot.aclose()


async def smoke_check(check: SqlSmokeCheck | HttpSmokeCheck, target: Target) -> dict[str, Any]:
    """Run one smoke check; ``{name, kind, ok, detail, latency_ms}``, never raises for a
    failure of the service. SQL: ``check.query`` through ``target`` (the service name), its
    first column compared with ``expect`` (booleans as ``true``/``false``, case-insensitive;
    no ``expect``: any answer passes). HTTP: a GET whose status must be ``expect_status``.
    Bounded by ``check.timeout`` (plus the service name's resolution)."""
    t0 = time.monotonic()
    try:
        if isinstance(check, SqlSmokeCheck):
            dsn, password = await target()
            text = _text(await first_value(dsn, password, check.query, check.timeout))
            ok = check.expect is None or text == check.expect.strip().lower()
            detail = f"returned {text!r}" + ("" if ok else f" (expected {check.expect!r})")
        else:
            async with httpx.AsyncClient(timeout=check.timeout) as client:
                resp = await client.get(check.url)
            ok = resp.status_code == check.expect_status
            detail = f"HTTP {resp.status_code}" + (
                "" if ok else f" (expected {check.expect_status})"
            )
    except (psycopg.Error, OSError, TimeoutError, httpx.HTTPError, HeliosError) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    ms = round((time.monotonic() - t0) * 1000, 1)
    return {"name": check.name, "kind": check.kind, "ok": ok, "detail": detail, "latency_ms": ms}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value).strip().lower()


# --- the load ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged commit: the client's sequence number and when the ack arrived."""

    seq: int
    at: float


class WriteLoad:
    """See the module docstring. Not thread-safe: use it from one event loop."""

    def __init__(
        self,
        drill_id: str,
        rate: float,
        timeout: float,
        target: Target,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if rate <= 0 or timeout <= 0:
            raise ValueError("rate and timeout must be positive")
        self.drill_id = drill_id
        self.rate = rate
        self._timeout = timeout
        self._target = target
        self._clock = clock
        self.acked: list[Ack] = []
        self.failures: list[tuple[float, str]] = []
        """(wall-clock time, error class) of every failed attempt."""
        self._seq = 0
        self._slot: ConnectionSlot | None = None
        self._table_ready = False
        self._task: asyncio.Task[None] | None = None

    # --- running ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start writing (one task, owned here)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"drill-load-{self.drill_id}")

    async def stop(self) -> None:
        """Stop writing and close the connection. Idempotent; bounded (about 2 s)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop()

    async def wait_acks(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` writes were acknowledged (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _run(self) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while True:
            await self._attempt()
            next_at += period
            now = time.monotonic()
            next_at = max(next_at, now)  # an attempt that overran: no catching up in a burst
            await asyncio.sleep(next_at - now)

    async def _attempt(self) -> None:
        self._seq += 1
        seq = self._seq
        try:
            if self._slot is None:
                async with asyncio.timeout(RESOLVE_TIMEOUT):
                    dsn, password = await self._target()
                self._slot = ConnectionSlot(dsn, password, self._timeout, APPLICATION_NAME)
            slot = self._slot
            async with asyncio.timeout(self._timeout):
                await slot.run(lambda conn: self._insert(conn, seq))
        except (psycopg.Error, OSError, TimeoutError, HeliosError) as exc:
            self.failures.append((self._clock(), type(exc).__name__))
            await self._drop()
            return
        self.acked.append(Ack(seq, self._clock()))

    async def _insert(self, conn: Connection, seq: int) -> None:
        if not self._table_ready:
            await conn.execute(CREATE_SQL.encode())
            self._table_ready = True
        await conn.execute(INSERT_SQL, (self.drill_id, seq, self._clock()))

    async def _drop(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            await slot.aclose()

    # --- measuring -------------------------------------------------------------------------

    def acked_between(self, start: float, end: float) -> int:
        """Acknowledged commits whose ack arrived within ``[start, end]``."""
        return sum(1 for a in self.acked if start <= a.at <= end)

    def measure(self, window_start: float, window_end: float) -> float:
        """Write unavailability of a leg: the longest gap between consecutive acknowledgements
        overlapping ``[window_start, window_end]`` (see :func:`drillcheck.longest_gap`)."""
        return longest_gap([a.at for a in self.acked], window_start, window_end)

    async def lost_commits(self, conn: Connection) -> list[Ack]:
        """Acknowledged commits (acked before this call) that ``conn``'s server (the new
        primary) does not have. The caller bounds the call (see :func:`first_value`)."""
        acks = list(self.acked)
        try:
            cur = await conn.execute(SELECT_SQL, (self.drill_id,))
            present = [int(r[0]) for r in await cur.fetchall()]
        except psycopg.errors.UndefinedTable:
            present = []
        missing = set(lost_seqs((a.seq for a in acks), present))
        return [a for a in acks if a.seq in missing]
