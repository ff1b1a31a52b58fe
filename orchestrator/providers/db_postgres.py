"""PostgreSQL provider: the heartbeat writer.

The orchestrator writes its own clock into ``helios.heartbeat`` on the node it believes is the
primary; the probes read the row back on every node, and the replicas' copy tells how far behind
they are in the orchestrator's time, without trusting database hosts' clocks.
"""

from __future__ import annotations

import asyncio
from typing import Final

import psycopg
import psycopg.errors

from orchestrator.errors import OperationError, OperationTimeout, PermanentError, TransientError
from probes.base import ErrorClass
from probes.postgres import (
    CREATE_HEARTBEAT_SQL,
    UPSERT_HEARTBEAT_SQL,
    Connection,
    ConnectionSlot,
    classify_postgres_error,
)

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
