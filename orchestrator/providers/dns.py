"""The DNS provider contract and its value types.

A provider adapter (``dns_route53``, ``dns_cloudflare``, ``dns_gcloud``) implements
:class:`DnsProvider`. Guarantees every adapter gives:

* **Bounded time.** Every method returns or raises within the adapter's configured call timeout
  (``wait_live`` within the timeout it is given). Sync SDKs run in a worker thread, never on the
  event loop.
* **Typed failures.** Failures raise :class:`~orchestrator.errors.TransientError` (timeouts,
  connection errors, 5xx, 429 — with ``retry_after`` when the provider sent one) or
  :class:`~orchestrator.errors.PermanentError` (authentication, permission, zone not found,
  invalid request). A malformed answer is transient (proxies and truncation cause it). Nothing
  else escapes. Adapters do **not** retry on their
  own (SDK retries are switched off): the caller owns the retry policy.
* **Idempotent apply.** Applying a change whose desired state is already live succeeds and
  changes nothing; applying it twice converges to the same record set. ``apply`` never creates a
  second record set for the same name and type.
* **Exact scope.** An adapter touches exactly the one name and type in the change.
* **No secrets in messages.** Error messages never contain tokens or keys.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from orchestrator.errors import OperationTimeout

SUPPORTED_TYPES = ("A", "AAAA", "CNAME")


def fqdn(name: str) -> str:
    """Lower-case, with exactly one trailing dot."""
    return name.strip().lower().rstrip(".") + "."


@dataclass(frozen=True, slots=True)
class RecordSet:
    """One DNS record set: a name, a type, a TTL and its values.

    ``name`` is a fully qualified name with a trailing dot; ``values`` are sorted, and CNAME
    targets are fully qualified with a trailing dot. Build instances with :meth:`make` to get
    that normal form, so two record sets that mean the same compare equal.
    """

    name: str
    type: str
    ttl: int
    values: tuple[str, ...]

    @classmethod
    def make(
        cls, name: str, rtype: str, ttl: int, values: list[str] | tuple[str, ...]
    ) -> RecordSet:
        rtype = rtype.upper()
        vals = [v.strip() for v in values]
        if rtype == "CNAME":
            vals = [fqdn(v) for v in vals]
        return cls(name=fqdn(name), type=rtype, ttl=int(ttl), values=tuple(sorted(set(vals))))

    def describe(self) -> str:
        return f"{self.name} {self.type} {','.join(self.values) or '(empty)'} ttl={self.ttl}"


class ChangeKind(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    NOOP = "noop"


@dataclass(frozen=True, slots=True)
class RecordChange:
    """The diff for one record on one provider: ``before`` (None if absent) -> ``after``."""

    provider: str
    before: RecordSet | None
    after: RecordSet

    @property
    def kind(self) -> ChangeKind:
        if self.before is None:
            return ChangeKind.CREATE
        if self.before == self.after:
            return ChangeKind.NOOP
        return ChangeKind.UPDATE

    def describe(self) -> str:
        before = self.before.describe() if self.before else "(absent)"
        return f"{self.provider}: {before} -> {self.after.describe()}"


def diff(provider: str, current: RecordSet | None, desired: RecordSet) -> RecordChange:
    """Pure: the change that turns ``current`` into ``desired`` on ``provider``."""
    return RecordChange(provider=provider, before=current, after=desired)


@dataclass(frozen=True, slots=True)
class ChangeHandle:
    """What ``apply`` returns: enough to ask the provider whether the change is live.

    ``change_id`` is the provider's id (Route53 change id, Google change id) or None when the
    provider applies synchronously (Cloudflare), in which case the change is live on return.
    """

    provider: str
    change_id: str | None
    status: str
    """The provider's status right after submitting (e.g. PENDING, INSYNC, pending, done)."""


@runtime_checkable
class DnsProvider(Protocol):
    """One DNS provider holding one zone. See the module docstring for the guarantees."""

    @property
    def name(self) -> str:
        """The configured provider name (unique in the config), e.g. ``route53``."""
        ...

    @property
    def kind(self) -> str:
        """``route53``, ``cloudflare`` or ``gcloud``."""
        ...

    async def read(self, name: str, rtype: str) -> RecordSet | None:
        """The record set the provider currently serves for ``name``/``rtype``, or None.

        Read-only; bounded by the call timeout.
        """
        ...

    async def plan(self, desired: RecordSet) -> RecordChange:
        """The diff from what the provider serves now to ``desired``. Read-only; bounded."""
        ...

    async def apply(self, change: RecordChange) -> ChangeHandle:
        """Make ``change.after`` the record set for its name and type.

        Idempotent (see module docstring). Does not wait for propagation: pass the handle to
        :meth:`wait_live`. Refuses (PermanentError) a record set with no values.
        """
        ...

    async def wait_live(self, handle: ChangeHandle, timeout: float) -> float:
        """Poll the provider until it reports the change live; return seconds waited.

        Raises :class:`~orchestrator.errors.OperationTimeout` when ``timeout`` passes first.
        """
        ...

    async def aclose(self) -> None:
        """Release clients and worker threads; idempotent; bounded."""
        ...


class PlansByReading:
    """Mixin giving an adapter :meth:`DnsProvider.plan`: read the current set, then diff."""

    async def plan(self: DnsProvider, desired: RecordSet) -> RecordChange:
        return diff(self.name, await self.read(desired.name, desired.type), desired)


async def poll_until(
    poll: Callable[[float], Awaitable[bool]],
    *,
    timeout: float,
    interval: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    failure: str,
) -> float:
    """Call ``poll(remaining_seconds)`` every ``interval`` until it returns True; return the
    seconds waited. Never sleeps past the deadline; raises OperationTimeout(``failure`` +
    " within <timeout>s") when ``timeout`` passes first. Errors of ``poll`` propagate."""
    start = clock()
    deadline = start + timeout
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            break
        if await poll(remaining):
            return clock() - start
        remaining = deadline - clock()
        if remaining <= 0:
            break
        await sleep(min(interval, remaining))
    raise OperationTimeout(f"{failure} within {timeout:g}s")
