"""PostgreSQL probe: role, timeline, WAL positions, WAL receiver and heartbeat in one round trip.

Also home of the heartbeat table's SQL (written by the orchestrator's heartbeat writer, read
here), of :class:`ConnectionSlot` (one persistent, strictly time-bounded connection) and of
:func:`classify_postgres_error`.

Why queries run in a separate task: when a psycopg query is cancelled (as ``asyncio.timeout``
does), psycopg 3.3 first sends a cancel request to the server and then waits for the query to
end, up to 5 s each. Against a frozen server (SIGSTOP, hung host) a 0.5 s timeout took 10.5 s.
:meth:`ConnectionSlot.run` therefore shields the query task, and on cancellation shuts the
socket down so the query fails at once, and discards the connection.

The probing role needs ``pg_monitor`` (or superuser): without it ``pg_stat_wal_receiver`` and
``pg_stat_replication`` hide their columns, so receiver fields read as None and the streaming
count as 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

import psycopg
import psycopg.errors
from psycopg.rows import TupleRow

from probes.attempt import classify_os_error, timed
from probes.base import (
    DatabaseState,
    ErrorClass,
    Heartbeat,
    Kind,
    Observation,
    Outcome,
    Role,
)
from probes.tcp import short_error

T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]

APPLICATION_NAME: Final = "helios-probe"

# --- heartbeat table: one row per service, written on the primary only -------------------------
HEARTBEAT_SCHEMA: Final = "helios"
HEARTBEAT_TABLE: Final = "heartbeat"
CREATE_HEARTBEAT_SQL: Final = """\
CREATE SCHEMA IF NOT EXISTS helios;
CREATE TABLE IF NOT EXISTS helios.heartbeat (
    id text PRIMARY KEY,
    seq bigint NOT NULL,
    written_at double precision NOT NULL
)"""
"""Idempotent DDL (no parameters, two statements sent as one simple query)."""
UPSERT_HEARTBEAT_SQL: Final = """\
INSERT INTO helios.heartbeat (id, seq, written_at) VALUES (%(id)s, 1, %(written_at)s)
ON CONFLICT (id) DO UPDATE SET seq = heartbeat.seq + 1, written_at = EXCLUDED.written_at
RETURNING seq"""
"""Parameters ``id`` (service name) and ``written_at`` (epoch seconds); returns the new seq."""
_HEARTBEAT_ROW = """\
SELECT seq, written_at FROM helios.heartbeat
WHERE %(service)s::text IS NULL OR id = %(service)s::text
ORDER BY written_at DESC LIMIT 1"""

# --- the state query ---------------------------------------------------------------------------
# Works on a primary and a standby alike: every function that errors during recovery
# (pg_current_wal_lsn, pg_walfile_name, pg_is_wal_replay_paused on a primary) sits behind a CASE
# on the role, which is read once (the CTE holds a volatile call, so it is not inlined).
_STATE_HEAD = """\
WITH r AS (SELECT pg_is_in_recovery() AS rec),
p AS (SELECT CASE WHEN NOT r.rec THEN pg_current_wal_lsn() END AS lsn FROM r),
w AS (SELECT status, received_tli, last_msg_receipt_time, sender_host, sender_port
      FROM pg_stat_wal_receiver LIMIT 1)
SELECT r.rec,
       CASE WHEN r.rec THEN w.received_tli
            ELSE ('x' || substr(pg_walfile_name(p.lsn), 1, 8))::bit(32)::int END,
       pg_wal_lsn_diff(p.lsn, '0/0')::bigint,
       CASE WHEN r.rec THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint END,
       CASE WHEN r.rec THEN pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint END,
       w.status,
       EXTRACT(EPOCH FROM now() - w.last_msg_receipt_time)::float8,
       w.sender_host || ':' || w.sender_port,
       CASE WHEN r.rec THEN pg_is_wal_replay_paused() ELSE false END,
       CASE WHEN NOT r.rec
            THEN (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming') END,
       current_setting('server_version_num')::int,
       to_regclass('helios.heartbeat') IS NOT NULL"""
_STATE_FROM = "\nFROM r CROSS JOIN p LEFT JOIN w ON true"
_STATE_SQL: Final = _STATE_HEAD + _STATE_FROM
"""For connections that have not seen the heartbeat table (yet): it reports whether it exists."""
_STATE_WITH_HEARTBEAT_SQL: Final = (
    _STATE_HEAD
    + ",\n       hb.seq, hb.written_at"
    + _STATE_FROM
    + "\nLEFT JOIN LATERAL ("
    + _HEARTBEAT_ROW
    + ") hb ON true"
)
"""The same plus the heartbeat row: one round trip once the table is known to exist."""

# --- error classification ----------------------------------------------------------------------
_SQLSTATE_CLASSES: Final = {
    "57P01": ErrorClass.RESET,  # admin_shutdown: terminating connection (fast/immediate stop)
    "57P02": ErrorClass.RESET,  # crash_shutdown: another backend crashed
    "57P03": ErrorClass.UNAVAILABLE,  # cannot_connect_now: starting up / shutting down
    "53300": ErrorClass.UNAVAILABLE,  # too_many_connections
    "57014": ErrorClass.TIMEOUT,  # query_canceled (statement_timeout)
}
_MESSAGE_CLASSES: Final = (
    (ErrorClass.TIMEOUT, ("timeout expired",)),
    (ErrorClass.REFUSED, ("connection refused",)),
    (
        ErrorClass.AUTH,
        (
            "password authentication failed",
            "no pg_hba.conf entry",
            "authentication failed",
            "no password supplied",
            "permission denied for database",
        ),
    ),
    (
        ErrorClass.UNAVAILABLE,
        (
            "the database system is starting up",
            "the database system is shutting down",
            "in recovery mode",
            "not yet accepting connections",
            "too many clients",
            "remaining connection slots are reserved",
        ),
    ),
    (
        ErrorClass.RESET,
        (
            "server closed the connection unexpectedly",
            "terminating connection",
            "connection reset",
            "ssl syscall",
            "eof detected",
            "connection is lost",
            "connection is closed",
            "could not receive data from server",
            "could not send data to server",
            "broken pipe",
        ),
    ),
    (
        ErrorClass.UNREACHABLE,
        (
            "failed to resolve host",
            "could not translate host name",
            "name or service not known",
            "temporary failure in name resolution",
            "no route to host",
            "network is unreachable",
        ),
    ),
    (ErrorClass.TLS, ("ssl error", "certificate", "server does not support ssl")),
)


def classify_postgres_error(
    exc: BaseException, secret: str | None = None
) -> tuple[ErrorClass, str]:
    """Map a psycopg (or socket) exception to an :class:`ErrorClass` and a one-line message.

    libpq reports connection failures without a SQLSTATE, so those are told apart by message.
    ``secret`` (the password) is masked should it ever appear in the message. Never raises.
    """
    msg = short_error(exc, secret=secret)
    if isinstance(exc, psycopg.errors.ConnectionTimeout):
        return ErrorClass.TIMEOUT, msg
    if not isinstance(exc, psycopg.Error):
        return classify_os_error(exc), msg
    if exc.sqlstate is not None and exc.sqlstate.startswith("28"):
        return ErrorClass.AUTH, msg
    if exc.sqlstate in _SQLSTATE_CLASSES:
        return _SQLSTATE_CLASSES[exc.sqlstate], msg
    text = str(exc).lower()
    for err, needles in _MESSAGE_CLASSES:
        if any(n in text for n in needles):
            return err, msg
    if "role" in text and "does not exist" in text:
        return ErrorClass.AUTH, msg
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        if "database" in text and "does not exist" in text:
            return ErrorClass.QUERY, msg
        return ErrorClass.PROTOCOL, msg  # libpq could not make sense of the conversation
    return ErrorClass.QUERY, msg


# --- one persistent connection -----------------------------------------------------------------
def sever(conn: Connection) -> None:
    """Shut the connection's socket down (both ways) without closing the descriptor.

    A query waiting on that socket then fails at once with "server closed the connection". Never
    raises; never blocks.
    """
    with contextlib.suppress(psycopg.Error, OSError):
        dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
        with dup, contextlib.suppress(OSError):
            dup.shutdown(socket.SHUT_RDWR)


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class ConnectionSlot:
    """One persistent psycopg connection (autocommit), lent to one caller at a time.

    Guarantees: :meth:`run` connects when there is no connection, never waits on psycopg's
    query cancellation (see the module docstring), and after any failure or cancellation
    discards the connection so that the next call reconnects. It adds no timeout of its own:
    the caller bounds it with ``asyncio.timeout`` and it honours that within about 0.25 s.
    :meth:`aclose` is idempotent and bounded to about 1 s. The password is passed to libpq
    separately from the DSN and is never part of an error message.
    """

    _SEVER_GRACE: Final = 0.25

    def __init__(
        self, dsn: str, password: str | None, timeout: float, application_name: str
    ) -> None:
        self._dsn = dsn
        self._password = password
        # psycopg/libpq want whole seconds >= 2; 0.5 would round to 0, which means 130 s.
        self._connect_timeout = max(2, math.ceil(timeout))
        self._application_name = application_name
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> Connection:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": self._connect_timeout,
            "application_name": self._application_name,
        }
        if self._password is not None:
            kwargs["password"] = self._password
        return await psycopg.AsyncConnection.connect(self._dsn, **kwargs)

    async def run(self, work: Callable[[Connection], Coroutine[Any, Any, T]]) -> T:
        """Run ``work(conn)`` on the slot's connection, connecting first if needed."""
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await self._connect()
            conn = self._conn
            task = asyncio.create_task(work(conn))
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                sever(conn)
                await asyncio.wait({task}, timeout=self._SEVER_GRACE)
                task.add_done_callback(_consume)
                await self._discard(conn)
                raise
            except BaseException:
                await self._discard(conn)
                raise

    async def _discard(self, conn: Connection) -> None:
        if self._conn is conn:
            self._conn = None
        await conn.close()  # libpq PQfinish on a non-blocking socket: does not wait

    async def aclose(self) -> None:
        """Close the connection. Idempotent; bounded (cuts the socket of a query in flight)."""
        try:
            async with asyncio.timeout(1.0), self._lock:
                if self._conn is not None:
                    await self._discard(self._conn)
        except TimeoutError:
            if self._conn is not None:  # a run() is stuck: make it fail; it discards for us
                sever(self._conn)


# --- the probe ---------------------------------------------------------------------------------
def _database_state(row: TupleRow, heartbeat: Heartbeat | None) -> DatabaseState:
    (rec, tli, cur, recv, replay, status, age, upstream, paused, streaming, version) = row[:11]
    return DatabaseState(
        role=Role.REPLICA if rec else Role.PRIMARY,
        timeline=tli,
        current_lsn=cur,
        receive_lsn=recv,
        replay_lsn=replay,
        wal_receiver_status=status,
        wal_receiver_last_msg_age=age,
        upstream=upstream,
        replay_paused=bool(paused),
        heartbeat=heartbeat,
        replicas_streaming=streaming,
        server_version=version,
    )


def _heartbeat(seq: int | None, written_at: float | None) -> Heartbeat | None:
    return None if seq is None or written_at is None else Heartbeat(seq, written_at)


async def _fetchone(
    conn: Connection, query: str, params: dict[str, Any] | None = None
) -> TupleRow | None:
    cur = await conn.execute(query, params)
    return await cur.fetchone()


class PostgresProbe:
    """Observes one PostgreSQL node over one persistent connection.

    Each ``observe()`` is normally one round trip (``SELECT`` of the state query) and reports
    role, timeline, WAL positions, WAL receiver status and upstream, replay pause, streaming
    replicas, server version and the heartbeat row (``service``'s row, or the most recent row
    when ``service`` is None; None while the ``helios.heartbeat`` table does not exist).

    Guarantees: ``observe()`` never raises for a failure of the node (only cancellation of the
    caller propagates) and returns within ``timeout`` plus about 0.25 s even against a frozen
    server. After any failure the connection is dropped and the next call reconnects, so a
    server restart shows as one failed observation. Calls on one probe are serialised.
    ``aclose()`` is idempotent and bounded to about 1 s.
    """

    def __init__(
        self,
        target: str,
        dsn: str,
        password: str | None,
        timeout: float,
        *,
        service: str | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._target = target
        self._password = password
        self._timeout = timeout
        self._service = service
        self._slot = ConnectionSlot(dsn, password, timeout, APPLICATION_NAME)
        self._heartbeat_conn: Connection | None = None
        """The connection on which the heartbeat table is known to exist."""

    @property
    def target(self) -> str:
        """Name of the node this probe observes."""
        return self._target

    @property
    def kind(self) -> Kind:
        """Always :attr:`Kind.POSTGRES`."""
        return Kind.POSTGRES

    async def observe(self) -> Observation:
        """Read the node's state; see the class docstring for the guarantees."""
        return await timed(
            self._target, Kind.POSTGRES, self._timeout, self._attempt, self._classify
        )

    def _classify(self, exc: BaseException) -> tuple[ErrorClass, str]:
        return classify_postgres_error(exc, self._password)

    async def _attempt(self) -> Outcome:
        return Outcome(database=await self._slot.run(self._read_state))

    async def _read_state(self, conn: Connection) -> DatabaseState:
        params = {"service": self._service}
        if self._heartbeat_conn is conn:
            try:
                row = await _fetchone(conn, _STATE_WITH_HEARTBEAT_SQL, params)
            except psycopg.errors.UndefinedTable:
                self._heartbeat_conn = None  # dropped since: fall back (autocommit: conn is fine)
            else:
                assert row is not None
                return _database_state(row, _heartbeat(row[12], row[13]))
        row = await _fetchone(conn, _STATE_SQL)
        assert row is not None
        if not row[11]:
            return _database_state(row, None)
        self._heartbeat_conn = conn  # appeared: read it now, in one query from the next call on
        hb = await _fetchone(conn, _HEARTBEAT_ROW, params)
        return _database_state(row, _heartbeat(*hb) if hb else None)

    async def aclose(self) -> None:
        """Close the connection. Idempotent; bounded to about 1 s."""
        self._heartbeat_conn = None
        await self._slot.aclose()
