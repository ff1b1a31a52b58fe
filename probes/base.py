"""Probe contract and the immutable Observation every probe returns.

Guarantees shared by every probe in this package:

The types here are pure data; :mod:`probes.attempt` holds the timing machinery every probe
uses to keep these promises:

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

import enum
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
