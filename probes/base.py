"""Probe contract and the immutable Observation every probe returns.

Guarantees shared by every probe in this package:

* ``await probe.observe()`` **never raises** for a failure of the target: refused connections,
  black holes, dropped connections, protocol and SQL errors all become an ``Observation`` with
  ``ok=False`` and an :class:`ErrorClass`. Only cancellation of the calling task propagates.
* It **never blocks longer than its timeout** (plus scheduling jitter): the whole attempt runs
  under ``asyncio.timeout``.
* It is safe to call again after any failure; a probe that keeps a connection discards it on
  error and reconnects on the next call.
* ``await probe.aclose()`` releases whatever the probe holds, is idempotent, and is bounded in time.

This package is a leaf: it imports nothing from ``orchestrator``.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class ErrorClass(enum.StrEnum):
    """Why a probe failed. Stable strings: used as metric label values and reason codes."""

    TIMEOUT = "timeout"
    """No answer within the probe timeout (black hole, hung server, slow network)."""
    REFUSED = "refused"
    """The connection was actively refused (nothing listening)."""
    RESET = "reset"
    """The peer dropped the connection (reset, EOF mid-protocol, server crash)."""
    UNREACHABLE = "unreachable"
    """No route / name resolution failure / network down."""
    AUTH = "auth"
    """The server answered but rejected our credentials."""
    PROTOCOL = "protocol"
    """The server answered something we could not understand."""
    QUERY = "query"
    """Connected, but a query failed (permissions, missing objects, server error)."""
    HTTP_STATUS = "http_status"
    """An HTTP health endpoint answered with a non-success status."""
    TLS = "tls"
    """TLS handshake or certificate failure."""
    UNAVAILABLE = "unavailable"
    """The server is up but refuses work (starting up, shutting down, in recovery crash loop)."""
    INTERNAL = "internal"
    """A bug or unexpected condition in the probe itself."""


class Role(enum.StrEnum):
    """Replication role reported by a database node."""

    PRIMARY = "primary"
    REPLICA = "replica"
    UNKNOWN = "unknown"


class Kind(enum.StrEnum):
    """What a probe looks at."""

    POSTGRES = "postgres"
    TCP = "tcp"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The orchestrator's heartbeat row as seen on one node.

    ``written_at`` is the orchestrator's wall clock (epoch seconds) when it wrote ``seq`` on the
    primary, so comparing it with the orchestrator's own clock needs no clock agreement between
    database hosts.
    """

    seq: int
    written_at: float


@dataclass(frozen=True, slots=True)
class DatabaseState:
    """What a successful database probe saw. LSNs are absolute byte positions."""

    role: Role
    timeline: int | None = None
    current_lsn: int | None = None
    """Primary only: ``pg_current_wal_lsn()``."""
    receive_lsn: int | None = None
    """Replica only: last WAL position received and flushed."""
    replay_lsn: int | None = None
    """Replica only: last WAL position replayed."""
    wal_receiver_status: str | None = None
    """Replica only: ``pg_stat_wal_receiver.status`` (``streaming`` ...), None when no receiver."""
    wal_receiver_last_msg_age: float | None = None
    """Replica only: seconds since the WAL receiver last heard from its upstream."""
    upstream: str | None = None
    """Replica only: ``sender_host:sender_port`` of the WAL receiver."""
    replay_paused: bool = False
    heartbeat: Heartbeat | None = None
    replicas_streaming: int | None = None
    """Primary only: number of ``pg_stat_replication`` rows in state ``streaming``."""
    server_version: int | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One probe result. Immutable; failures are observations too, never exceptions."""

    target: str
    """Name of the node (or endpoint) probed."""
    kind: Kind
    ok: bool
    started_at: float
    """Wall clock (epoch seconds) when the probe started."""
    latency: float
    """Seconds the probe took, success or not."""
    error_class: ErrorClass | None = None
    error: str | None = None
    """Short human message; never contains credentials."""
    database: DatabaseState | None = None
    http_status: int | None = None
    details: tuple[tuple[str, str], ...] = field(default=())

    @property
    def role(self) -> Role:
        return self.database.role if self.database else Role.UNKNOWN


@runtime_checkable
class Probe(Protocol):
    """Anything that can be observed. See the module docstring for the guarantees."""

    @property
    def target(self) -> str: ...

    @property
    def kind(self) -> Kind: ...

    async def observe(self) -> Observation: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one probe attempt found; :func:`timed` adds target, kind and timing."""

    ok: bool = True
    error_class: ErrorClass | None = None
    error: str | None = None
    database: DatabaseState | None = None
    http_status: int | None = None
    details: tuple[tuple[str, str], ...] = ()


def classify_os_error(exc: BaseException) -> ErrorClass:
    """Map low-level socket errors to an :class:`ErrorClass`."""
    if isinstance(exc, TimeoutError):
        return ErrorClass.TIMEOUT
    if isinstance(exc, ssl.SSLError):
        return ErrorClass.TLS
    if isinstance(exc, ConnectionRefusedError):
        return ErrorClass.REFUSED
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return ErrorClass.RESET
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return ErrorClass.RESET
    if isinstance(exc, OSError) and exc.errno in {
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EADDRNOTAVAIL,
    }:
        return ErrorClass.UNREACHABLE
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return ErrorClass.REFUSED
    if isinstance(exc, OSError) and exc.errno in {errno.ECONNRESET, errno.EPIPE}:
        return ErrorClass.RESET
    if isinstance(exc, socket.gaierror):
        # Name resolution failed. gaierror carries a negative EAI_* code in ``errno`` (never
        # None), e.g. -2 "Name or service not known" or -3 "Temporary failure in name resolution".
        return ErrorClass.UNREACHABLE
    return ErrorClass.INTERNAL


async def timed(
    target: str,
    kind: Kind,
    timeout: float,
    attempt: Callable[[], Awaitable[Outcome]],
    classify: Callable[[BaseException], tuple[ErrorClass, str]],
    on_error: Callable[[], Awaitable[None]] | None = None,
) -> Observation:
    """Run one probe attempt under ``timeout`` and turn every failure into an Observation.

    ``attempt`` reports what it found; ``classify`` maps an exception to an error class
    and a short message. ``on_error`` (bounded by its own short timeout) lets a probe drop a
    broken connection. Cancellation of the caller is never swallowed.
    """
    started_at = time.time()
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            out = await attempt()
    except asyncio.CancelledError:
        # Our own timeout is converted to TimeoutError by asyncio.timeout, so a CancelledError
        # here always comes from outside: propagate it.
        if on_error is not None:
            await _bounded(on_error, 0.5)
        raise
    except Exception as exc:  # every failure of the target becomes an observation
        if isinstance(exc, TimeoutError):
            err, msg = ErrorClass.TIMEOUT, f"no answer within {timeout:g}s"
        else:
            err, msg = classify(exc)
        if on_error is not None:
            await _bounded(on_error, 0.5)
        return Observation(
            target=target,
            kind=kind,
            ok=False,
            started_at=started_at,
            latency=time.perf_counter() - t0,
            error_class=err,
            error=msg,
        )
    return Observation(
        target=target,
        kind=kind,
        ok=out.ok,
        started_at=started_at,
        latency=time.perf_counter() - t0,
        error_class=out.error_class,
        error=out.error,
        database=out.database,
        http_status=out.http_status,
        details=out.details,
    )


async def _bounded(fn: Callable[[], Awaitable[None]], limit: float) -> None:
    try:
        async with asyncio.timeout(limit):
            await fn()
    except Exception:  # cleanup is best effort; the observation already says what went wrong
        return
