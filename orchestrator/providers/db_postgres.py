"""PostgreSQL provider: the heartbeat writer and the failover driver.

The orchestrator writes its own clock into ``helios.heartbeat`` on the node it believes is the
primary; the probes read the row back on every node, and the replicas' copy tells how far behind
they are in the orchestrator's time, without trusting database hosts' clocks.

:class:`PostgresDriver` carries out the failover steps on one node: status, promote, ensure
replication slots, fence, re-point a standby, fence a stale primary, rejoin (see its docstring
for the guarantees).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestrator.commands import fill_argv, run_command
from orchestrator.errors import OperationError, OperationTimeout, PermanentError, TransientError
from probes.base import ErrorClass, Role
from probes.postgres import (
    CREATE_HEARTBEAT_SQL,
    UPSERT_HEARTBEAT_SQL,
    Connection,
    ConnectionSlot,
    PostgresProbe,
    classify_postgres_error,
)

T = TypeVar("T")

APPLICATION_NAME: Final = "helios-heartbeat"
_READ_ONLY_SQLSTATE: Final = "25006"  # read_only_sql_transaction
_TRANSIENT_SQLSTATE_CLASSES: Final = frozenset({"40", "53", "55", "57", "58"})
_PERMANENT_CLASSES: Final = frozenset({ErrorClass.AUTH, ErrorClass.TLS, ErrorClass.INTERNAL})


class NotPrimaryError(PermanentError):
    """The node refused the write as read-only: it is in recovery (a standby) or fenced with
    ``default_transaction_read_only``. Retrying on the same node cannot help."""


def _operation_error(exc: BaseException, password: str | None) -> OperationError:
    err, msg = classify_postgres_error(exc, password)
    sqlstate = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    if sqlstate == _READ_ONLY_SQLSTATE:
        return NotPrimaryError(f"node is read-only, heartbeat not written: {msg}")
    if err is ErrorClass.TIMEOUT:
        return OperationTimeout(f"heartbeat write timed out: {msg}")
    if err in _PERMANENT_CLASSES:
        return PermanentError(f"heartbeat write failed ({err}): {msg}")
    if err is ErrorClass.QUERY and (sqlstate or "")[:2] not in _TRANSIENT_SQLSTATE_CLASSES:
        return PermanentError(f"heartbeat write failed ({err}): {msg}")
    return TransientError(f"heartbeat write failed ({err}): {msg}")


class HeartbeatWriter:
    """Upserts ``service``'s heartbeat row on one node over one persistent connection.

    The schema and table are created (``IF NOT EXISTS``) once per connection, and again should
    they have been dropped since. Only write on the node believed to be the primary: a standby
    (or a read-only primary) makes :meth:`write` raise :class:`NotPrimaryError`.
    """

    def __init__(self, service: str, dsn: str, password: str | None, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._service = service
        self._password = password
        self._timeout = timeout
        self._slot = ConnectionSlot(dsn, password, timeout, APPLICATION_NAME)
        self._schema_conn: Connection | None = None
        """The connection that has run the DDL."""

    async def write(self, written_at: float) -> int:
        """Store ``written_at`` (the orchestrator's clock) and return the row's new ``seq``.

        Bounded: returns or raises within ``timeout`` (plus about 0.25 s), connecting if needed.
        Not idempotent: every successful call increments ``seq`` by one (the first write is 1).
        Raises :class:`NotPrimaryError` on a read-only node, :class:`OperationTimeout` when
        out of time (the write may or may not have committed), :class:`TransientError` for
        connection trouble and :class:`PermanentError` for auth or SQL errors. After a failure
        the connection is dropped; the next call reconnects. Calls are serialised.
        """
        try:
            async with asyncio.timeout(self._timeout):
                return await self._slot.run(lambda conn: self._upsert(conn, written_at))
        except TimeoutError as exc:
            raise OperationTimeout(f"heartbeat write: no answer within {self._timeout:g}s") from exc
        except (psycopg.Error, OSError) as exc:
            raise _operation_error(exc, self._password) from exc

    async def _upsert(self, conn: Connection, written_at: float) -> int:
        params = {"id": self._service, "written_at": written_at}
        if self._schema_conn is not conn:
            await conn.execute(CREATE_HEARTBEAT_SQL)
            self._schema_conn = conn
        try:
            cur = await conn.execute(UPSERT_HEARTBEAT_SQL, params)
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            # Dropped since this connection created it (autocommit: the connection is fine).
            await conn.execute(CREATE_HEARTBEAT_SQL)
            cur = await conn.execute(UPSERT_HEARTBEAT_SQL, params)
        row = await cur.fetchone()
        assert row is not None  # RETURNING of a one-row upsert
        return int(row[0])

    async def aclose(self) -> None:
        """Close the connection. Idempotent; bounded to about 1 s."""
        self._schema_conn = None
        await self._slot.aclose()


# --- the failover driver -------------------------------------------------------------------------

DRIVER_APPLICATION_NAME: Final = "helios-driver"
FENCE_COMMAND_TIMEOUT: Final = 60.0
REJOIN_COMMAND_TIMEOUT: Final = 120.0
SOFT_FENCE: Final = "read-only + sessions terminated (not a hard fence: configure fence_command)"
_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
_TIMELINE_SQL: Final = (
    "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
)
_ENSURE_SLOTS_SQL: Final = """\
SELECT n, pg_create_physical_replication_slot(n) FROM unnest(%(names)s::text[]) AS n
WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = n)"""
"""The select list (the creation) is evaluated only for the rows the WHERE clause keeps."""
_TERMINATE_CLIENTS_SQL: Final = """\
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node as :meth:`PostgresDriver.status` saw it. LSNs are byte positions (ints)."""

    node: str
    reachable: bool
    in_recovery: bool | None = None
    """True on a standby, False on a primary, None when unreachable."""
    timeline: int | None = None
    """A primary's current timeline; a standby's WAL receiver's (None without a receiver)."""
    current_lsn: int | None = None
    """Primary only: ``pg_current_wal_lsn()``."""
    receive_lsn: int | None = None
    replay_lsn: int | None = None
    wal_receiver_status: str | None = None
    """``pg_stat_wal_receiver.status`` (``streaming``...), None without a receiver."""
    upstream: str | None = None
    """``host:port`` the WAL receiver is connected to."""
    error: str | None = None
    """Why the node is unreachable (error class and message)."""

    @property
    def is_primary(self) -> bool:
        """Reachable and out of recovery: it accepts writes (unless read-only by setting)."""
        return self.reachable and self.in_recovery is False


class PostgresDriver:
    """The failover operations on one PostgreSQL node.

    Guarantees, for every method:

    * **Fresh connections.** Every call opens its own connection and closes it, so a node
      that restarted (an old primary coming back) is seen as it is now, never through a
      stale session. Failover operations are rare; the connection costs milliseconds.
    * **Bounded time.** SQL work is bounded by ``timeout`` (``promote``: plus ``wait_seconds``),
      enforced through :class:`~probes.postgres.ConnectionSlot`, which never waits on psycopg's
      query cancellation, even against a frozen server. Commands are bounded by
      ``fence_timeout`` / ``rejoin_timeout``; on expiry their whole process group is killed.
    * **Idempotent.** Repeating a call that succeeded changes nothing more and returns the same
      result (``promote`` on a primary returns its timeline; ``ensure_slots`` creates only what
      is missing; ``repoint`` writes only what differs; ``fence`` on a fenced node runs the
      fence command again, which must itself be idempotent).
    * **Errors by type.** :class:`~orchestrator.errors.OperationTimeout` when out of time (the
      operation may or may not have happened: call again), :class:`TransientError` for
      connection trouble, :class:`PermanentError` when retrying cannot help (authentication,
      SQL errors, wrong role, a command that exited non-zero, no fence command for an
      unreachable node). Only :meth:`status` never raises for a failure of the node.

    Commands (``fence_command``, ``rejoin_command``) are argv lists run without a shell; each
    item is formatted with ``str.format_map`` from ``{node}``, ``{region}`` (when given) and,
    for a rejoin, ``{upstream_node}``, ``{upstream_region}``, ``{upstream_host}``,
    ``{upstream_port}``. A placeholder that is not available is a PermanentError. The password
    is passed to libpq apart from the DSN and never appears in an error.
    """

    def __init__(
        self,
        node_name: str,
        dsn: str,
        password: str | None,
        timeout: float,
        fence_command: Sequence[str] | None = None,
        rejoin_command: Sequence[str] | None = None,
        *,
        region: str | None = None,
        fence_timeout: float = FENCE_COMMAND_TIMEOUT,
        rejoin_timeout: float = REJOIN_COMMAND_TIMEOUT,
    ) -> None:
        if min(timeout, fence_timeout, rejoin_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        self._node = node_name
        self._region = region
        self._password = password
        self._timeout = timeout
        self._fence_command = list(fence_command) if fence_command else None
        self._rejoin_command = list(rejoin_command) if rejoin_command else None
        self._fence_timeout = fence_timeout
        self._rejoin_timeout = rejoin_timeout
        self._dsn = dsn

    @property
    def node(self) -> str:
        return self._node

    # --- reading ---------------------------------------------------------------------------

    async def status(self) -> NodeStatus:
        """Role, timeline, WAL positions and WAL receiver of the node (the probe's query).

        Never raises for a failure of the node: an unreachable, refusing or frozen node yields
        ``reachable=False`` and the reason in ``error``. Bounded by ``timeout`` plus about 1 s
        (closing a connection to a frozen server).
        """
        probe = PostgresProbe(self._node, self._dsn, self._password, self._timeout)
        try:
            obs = await probe.observe()
        finally:
            await probe.aclose()
        db = obs.database
        if not obs.ok or db is None:
            return NodeStatus(self._node, False, error=f"{obs.error_class}: {obs.error}")
        return NodeStatus(
            node=self._node,
            reachable=True,
            in_recovery=db.role is Role.REPLICA,
            timeline=db.timeline,
            current_lsn=db.current_lsn,
            receive_lsn=db.receive_lsn,
            replay_lsn=db.replay_lsn,
            wal_receiver_status=db.wal_receiver_status,
            upstream=db.upstream,
        )

    # --- promotion and slots ---------------------------------------------------------------

    async def promote(self, wait_seconds: float = 30.0, slots: Sequence[str] = ()) -> int:
        """Promote the standby and return its new timeline; then :meth:`ensure_slots`
        ``slots`` (the other nodes' slot names) when given.

        Idempotent: on a primary it only returns the current timeline (and ensures the
        slots). Runs ``pg_promote(wait => true, wait_seconds => N)``; bounded by
        ``wait_seconds + timeout``. After the old primary died, promotion can stall for a few
        seconds waiting for WAL (``wal_retrieve_retry_interval``), so leave ``wait_seconds``
        well above 5. If promotion has not finished in time: OperationTimeout (it goes on in
        the server; calling again waits for it or returns the timeline). A
        ``default_transaction_read_only = on`` left in ``postgresql.auto.conf`` by
        :meth:`stop_writes` or a read-only :meth:`fence` (kept when a later rejoin needed no
        rewind) is reset: the node promoted is meant to take writes.
        """
        seconds = max(1, math.ceil(wait_seconds))

        async def work(conn: Connection) -> tuple[bool, int]:
            if await _in_recovery(conn):
                try:
                    row = await _one(
                        conn, "SELECT pg_promote(wait => true, wait_seconds => %s)", seconds
                    )
                except psycopg.errors.ObjectNotInPrerequisiteState:
                    pass  # "recovery is not in progress": promoted meanwhile
                else:
                    if not row[0]:
                        return False, 0
            if (await _one(conn, "SHOW default_transaction_read_only"))[0] == "on":
                await _allow_writes(conn)
            return True, int((await _one(conn, _TIMELINE_SQL))[0])

        done, timeline = await self._sql("promote", seconds + self._timeout, work)
        if not done:
            raise OperationTimeout(
                f"{self._node}: promotion requested but not finished within {seconds}s; it "
                "continues in the server: call promote again"
            )
        if slots:
            await self.ensure_slots(slots)
        return timeline

    async def ensure_slots(self, names: Sequence[str]) -> list[str]:
        """Create the physical replication slots among ``names`` that do not exist yet;
        return those created (in the order given). Idempotent; bounded by ``timeout``.

        A standby re-pointed here with ``primary_slot_name`` streams only once its slot
        exists. Slots are created without reserving WAL: a slot starts holding WAL when its
        standby first connects. Names: lower-case letters, digits, ``_`` (PermanentError).
        """
        bad = [n for n in names if not _SLOT_NAME.fullmatch(n)]
        if bad:
            raise PermanentError(
                f"{self._node}: invalid replication slot names {bad}: use a-z, 0-9 and _"
            )
        wanted = list(dict.fromkeys(names))

        async def work(conn: Connection) -> list[str]:
            for attempt in range(2):
                try:
                    cur = await conn.execute(_ENSURE_SLOTS_SQL, {"names": wanted})
                    return [str(r[0]) for r in await cur.fetchall()]
                except psycopg.errors.DuplicateObject:
                    if attempt:  # created concurrently twice in a row: give up
                        raise
            raise AssertionError("unreachable")

        return await self._sql("ensure replication slots", self._timeout, work)

    # --- fencing ---------------------------------------------------------------------------

    async def fence(self, reason: str) -> str:
        """Make sure the node takes no more writes; returns what was done, in words.

        * Reachable standby: nothing to do (a standby takes no writes).
        * Reachable primary with ``fence_command``: run it, then check the node no longer
          answers as a primary (else PermanentError).
        * Reachable primary without: ``ALTER SYSTEM SET default_transaction_read_only = on``,
          reload, terminate every other client session. **Not a hard fence** (a client can
          still ``BEGIN READ WRITE``, a superuser can undo it, a restart keeps it writable):
          the result says so.
        * Unreachable: run ``fence_command`` (the node may only look dead); without one,
          PermanentError: the caller must decide (a plan refuses to promote unless forced).

        ``reason`` is part of the result. Bounded by twice ``timeout`` (status before and
        after) plus ``fence_timeout``, plus about 2 s.
        """
        st = await self.status()
        if st.reachable and st.in_recovery:
            return f"{self._node}: nothing to do, a standby takes no writes ({reason})"
        if self._fence_command is None:
            if not st.reachable:
                raise PermanentError(
                    f"cannot fence an unreachable node without fence_command: {self._node} "
                    f"({st.error})"
                )
            terminated = await self._soft_fence()
            return f"{self._node}: {SOFT_FENCE}; {terminated} session(s) ended ({reason})"
        await self._run_command("fence_command", self._fence_command, {}, self._fence_timeout)
        after = await self.status()
        if after.is_primary:
            raise PermanentError(
                f"{self._node}: fence_command exited 0 but the node still answers as a primary"
            )
        how = "reachable primary" if st.reachable else f"unreachable ({st.error})"
        return f"{self._node}: fence_command ran on the {how} ({reason})"

    async def _soft_fence(self) -> int:
        async def work(conn: Connection) -> int:
            return await _stop_client_writes(conn)

        return await self._sql("read-only fence", self._timeout, work)

    async def stop_writes(self) -> int:
        """For a planned switchover: stop client writes on the primary and return its WAL
        position (an int) after that, for the candidate to replay before it is promoted.

        Sets ``default_transaction_read_only = on`` (ALTER SYSTEM, reload) and terminates every
        other client session, like the read-only :meth:`fence`; so it is **not** a fence (a
        client can still ``BEGIN READ WRITE``): fence the node before promoting another.
        Idempotent (returns the current position again). PermanentError on a standby.
        :meth:`resume_writes` undoes it; :meth:`promote` resets it too. Bounded by
        ``timeout``.
        """

        async def work(conn: Connection) -> int | None:
            if await _in_recovery(conn):
                return None
            await _stop_client_writes(conn)
            return int((await _one(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))[0])

        lsn = await self._sql("stop writes", self._timeout, work)
        if lsn is None:
            raise PermanentError(f"{self._node} is a standby: there are no writes to stop")
        return lsn

    async def resume_writes(self) -> None:
        """Undo :meth:`stop_writes` (or a read-only fence) on a primary, e.g. when a switchover
        is aborted: ``ALTER SYSTEM RESET default_transaction_read_only`` and reload.
        Idempotent; harmless on a standby (it stays read-only by recovery). Bounded by
        ``timeout``."""

        async def work(conn: Connection) -> None:
            await _allow_writes(conn)

        await self._sql("resume writes", self._timeout, work)

    async def demote_if_stale(self, expected_timeline: int) -> bool:
        """If the node answers as a primary on a timeline below ``expected_timeline`` (an old
        primary that came back after a failover), :meth:`fence` it at once and return True.
        Otherwise (a standby, the current primary, unreachable) do nothing and return False.
        Without ``fence_command`` the fence is the read-only one (not a hard fence)."""
        st = await self.status()
        if not st.is_primary or st.timeline is None or st.timeline >= expected_timeline:
            return False
        await self.fence(f"stale primary on timeline {st.timeline} < {expected_timeline}")
        return True

    # --- standbys --------------------------------------------------------------------------

    async def repoint(
        self,
        upstream_host: str,
        upstream_port: int,
        application_name: str,
        slot_name: str | None,
        *,
        user: str | None = None,
    ) -> bool:
        """Make the standby stream from ``upstream_host:upstream_port`` without a restart.

        Keeps every other parameter of the current ``primary_conninfo`` (user, password file,
        TLS...), replaces host, port and ``application_name`` (and ``user`` when given), sets
        ``primary_slot_name`` (reset when None) with ``ALTER SYSTEM`` (separate autocommit
        statements) and reloads: the WAL receiver reconnects and follows the upstream's
        latest timeline. The slot must exist on the upstream (:meth:`ensure_slots`) or the
        standby retries until it does. Returns whether anything changed; idempotent (compared
        with the settings in effect). PermanentError on a primary. Bounded by ``timeout``.
        """
        if slot_name is not None and not _SLOT_NAME.fullmatch(slot_name):
            raise PermanentError(f"{self._node}: invalid replication slot name {slot_name!r}")

        async def work(conn: Connection) -> bool | None:
            if not await _in_recovery(conn):
                return None
            current = str((await _one(conn, "SHOW primary_conninfo"))[0])
            current_slot = str((await _one(conn, "SHOW primary_slot_name"))[0])
            params: dict[str, Any] = conninfo_to_dict(current) if current else {}
            params.update(host=upstream_host, port=str(upstream_port))
            params["application_name"] = application_name
            if user is not None:
                params["user"] = user
            wanted = make_conninfo("", **params)
            changed = False
            if conninfo_to_dict(wanted) != (conninfo_to_dict(current) if current else {}):
                await conn.execute(
                    sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(wanted))
                )
                changed = True
            if current_slot != (slot_name or ""):
                stmt = (
                    sql.SQL("ALTER SYSTEM SET primary_slot_name = {}").format(
                        sql.Literal(slot_name)
                    )
                    if slot_name
                    else sql.SQL("ALTER SYSTEM RESET primary_slot_name")
                )
                await conn.execute(stmt)
                changed = True
            if changed:
                await conn.execute("SELECT pg_reload_conf()")
            return changed

        changed = await self._sql("repoint", self._timeout, work)
        if changed is None:
            raise PermanentError(f"{self._node} is a primary: only a standby can be re-pointed")
        return changed

    async def rejoin(
        self, upstream_node: str, upstream_region: str, upstream_host: str, upstream_port: int
    ) -> str:
        """Run ``rejoin_command`` to make this (fenced, stopped) node a standby of the
        upstream, e.g. ``pg_rewind`` + ``standby.signal`` + start. Returns the first line of
        the command's output. Refuses (PermanentError) when the node answers as a primary
        (fence it first) or no command is configured; PermanentError with the tail of its
        stderr when the command fails; OperationTimeout after ``rejoin_timeout`` (120 s)."""
        if self._rejoin_command is None:
            raise PermanentError(f"{self._node}: no rejoin_command configured")
        if (await self.status()).is_primary:
            raise PermanentError(f"{self._node} answers as a primary: fence it before a rejoin")
        values = {
            "upstream_node": upstream_node,
            "upstream_region": upstream_region,
            "upstream_host": upstream_host,
            "upstream_port": str(upstream_port),
        }
        out = await self._run_command(
            "rejoin_command", self._rejoin_command, values, self._rejoin_timeout
        )
        lines = [ln for ln in out.splitlines() if ln.strip()]
        return lines[0] if lines else ""

    async def aclose(self) -> None:
        """Nothing to release (every call closes its own connection); kept for symmetry with
        the other providers. Idempotent."""

    # --- helpers ---------------------------------------------------------------------------

    async def _sql(self, what: str, budget: float, work: Callable[[Connection], Awaitable[T]]) -> T:
        async def run(conn: Connection) -> T:
            return await work(conn)

        slot = ConnectionSlot(self._dsn, self._password, self._timeout, DRIVER_APPLICATION_NAME)
        try:
            async with asyncio.timeout(budget):
                return await slot.run(run)
        except TimeoutError as exc:
            raise OperationTimeout(f"{self._node}: {what}: no answer within {budget:g}s") from exc
        except (psycopg.Error, OSError) as exc:
            raise self._error(what, exc) from exc
        finally:
            await slot.aclose()

    def _error(self, what: str, exc: BaseException) -> OperationError:
        err, msg = classify_postgres_error(exc, self._password)
        sqlstate = exc.sqlstate if isinstance(exc, psycopg.Error) else None
        text = f"{self._node}: {what} failed ({err}): {msg}"
        if err is ErrorClass.TIMEOUT:
            return OperationTimeout(text)
        if err in _PERMANENT_CLASSES:
            return PermanentError(text)
        if err is ErrorClass.QUERY and (sqlstate or "")[:2] not in _TRANSIENT_SQLSTATE_CLASSES:
            return PermanentError(text)
        return TransientError(text)

    async def _run_command(
        self, what: str, template: list[str], extra: Mapping[str, str], timeout: float
    ) -> str:
        """Run the rendered argv (no shell, own process group); return its stdout."""
        values = {"node": self._node, **extra}
        if self._region is not None:
            values["region"] = self._region
        try:
            argv = fill_argv(template, values)
        except ValueError as exc:
            raise PermanentError(f"{self._node}: {what} {template}: {exc}") from None
        return await run_command(argv, timeout, label=f"{self._node}: {what}")


async def _one(conn: Connection, query: str, *params: Any) -> tuple[Any, ...]:
    cur = await conn.execute(query, params or None)
    row = await cur.fetchone()
    if row is None:
        raise PermanentError(f"no row from {query!r}")
    return tuple(row)


async def _stop_client_writes(conn: Connection) -> int:
    """Read-only by default (two autocommit statements: ALTER SYSTEM cannot run in a
    transaction block), then end every other client session; the number ended."""
    await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
    await conn.execute("SELECT pg_reload_conf()")
    return int((await _one(conn, _TERMINATE_CLIENTS_SQL))[0])


async def _allow_writes(conn: Connection) -> None:
    await conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
    await conn.execute("SELECT pg_reload_conf()")


async def _in_recovery(conn: Connection) -> bool:
    return bool((await _one(conn, "SELECT pg_is_in_recovery()"))[0])
