"""The coordination contract: leader election with a fencing epoch, and short-lived published
documents (the vantage points' observations), on an existing coordination service.

Guarantees every backend gives (the etcd backend is :mod:`orchestrator.coord.etcd`):

* **Bounded time.** Every method makes a few calls (at most four), each bounded by the
  backend's configured ``timeout`` whatever endpoints it tries; a hung service becomes
  :class:`CoordinationUnavailable`, never a hang. Callers with a tighter deadline wrap the
  method in ``asyncio.timeout``: every method is safe to cancel.
* **One leader per election name.** :meth:`Coordinator.campaign` is a compare-and-set: it
  succeeds only when nobody holds the name, and the holder keeps it only while its lease
  (``ttl``) is renewed.
* **A strictly increasing epoch** (the fencing token): each successful campaign, by any
  candidate, gets an epoch larger than every earlier leader's of the same name. A deposed
  leader's epoch never becomes current again, so :meth:`Coordinator.check_epoch` fences it out.
* **Conservative timing.** :attr:`Leadership.valid_from` is a local monotonic instant taken
  *before* the request that started or extended the lease, so the service cannot expire the
  lease before ``valid_from + ttl`` by the local clock (up to clock-rate drift, which callers
  cover with a safety margin: see :mod:`orchestrator.lease`).

Errors: :class:`CoordinationUnavailable` (transient: no endpoint answered in time or the
service has no quorum), :class:`CoordinationRejected` (permanent: authentication, permission,
a malformed request), :class:`LostLeadership` (the lease or the leader key is gone).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.errors import HeliosError, PermanentError, TransientError


class CoordinationUnavailable(TransientError):
    """No endpoint of the coordination service answered in time, or it has no quorum."""


class CoordinationRejected(PermanentError):
    """The coordination service refused the request (authentication, permission, bad input)."""


class LostLeadership(HeliosError):
    """The leadership is gone: its lease expired or was revoked, or the leader key no longer
    carries this epoch. The holder must stop acting as leader at once."""

    def __init__(self, name: str, epoch: int, why: str) -> None:
        self.name = name
        self.epoch = epoch
        super().__init__(f"lost the leadership of {name!r} (epoch {epoch}): {why}")


@dataclass(frozen=True)
class Leadership:
    """A won election, as the winner holds it.

    ``epoch`` is the fencing token; ``lease_id`` the backend's lease; ``ttl`` the lease's time
    to live in seconds as granted by the service; ``valid_from`` the local monotonic time just
    before the grant or the last successful renewal was sent.
    """

    name: str
    candidate_id: str
    epoch: int
    lease_id: int
    ttl: float
    valid_from: float

    def expires_at(self, margin: float = 0.0) -> float:
        """Local monotonic instant before which the service cannot have expired the lease,
        less ``margin`` seconds."""
        return self.valid_from + self.ttl - margin


@dataclass(frozen=True)
class LeaderInfo:
    """Who holds an election name right now, as the service says."""

    candidate_id: str
    epoch: int


@dataclass(frozen=True)
class Publication:
    """A published document as read back: ``revision`` is the service's revision of its last
    write (larger means newer, across all keys)."""

    document: Mapping[str, Any]
    revision: int


class Coordinator(Protocol):
    """A coordination service client. Names and keys are relative to the backend's namespace
    (its prefix), so several services can share one cluster."""

    async def campaign(self, name: str, candidate_id: str, ttl: float) -> Leadership | None:
        """Try once, without waiting, to become the leader of ``name``.

        Returns the :class:`Leadership` when the name was free and is now held under a new
        lease of ``ttl`` seconds (backends may round up to their resolution and minimum), or
        ``None`` when someone holds it. Never leaves a half-made leadership behind for long: on
        ``None`` or an error, the lease it granted is revoked, or left to expire within ``ttl``
        (with the leader key, if a write whose answer was lost had landed).
        Raises CoordinationUnavailable / CoordinationRejected.
        """
        ...

    async def renew(self, leadership: Leadership) -> Leadership:
        """Extend the lease by its ttl and confirm the leader key still carries the epoch.

        Returns the leadership with a new ``valid_from``. Raises :class:`LostLeadership` when the
        lease or the key is gone (final: campaign again), CoordinationUnavailable when the
        service could not be asked (the old ``valid_from`` still bounds the leadership).
        Idempotent.
        """
        ...

    async def resign(self, leadership: Leadership) -> None:
        """Give the leadership up now (revoke its lease, which deletes the leader key) so a
        successor need not wait for the ttl. Idempotent: resigning a lost leadership succeeds.
        Raises CoordinationUnavailable when the service could not be asked."""
        ...

    async def leader(self, name: str) -> LeaderInfo | None:
        """The current holder of ``name`` (linearizable read), or ``None`` when there is none."""
        ...

    async def check_epoch(self, name: str, epoch: int) -> bool:
        """True when ``epoch`` is the current leader's epoch of ``name`` (linearizable read).

        Used before every runbook step. Raises CoordinationUnavailable when the service could
        not confirm it: callers must treat that exactly like ``False`` and not act.
        """
        ...

    async def publish(self, key: str, document: Mapping[str, Any], ttl: float) -> int:
        """Write a JSON-serialisable ``document`` under ``key``; it disappears ``ttl`` seconds
        after this write unless written again (each write starts a fresh ttl). Returns the
        write's revision. Idempotent."""
        ...

    async def read_prefix(self, prefix: str) -> dict[str, Publication]:
        """Every live document whose key starts with ``prefix``, by key (linearizable read).
        Documents that are not JSON objects are skipped."""
        ...

    async def aclose(self) -> None:
        """Release connections. Does not resign: call :meth:`resign` first. Idempotent."""
        ...
