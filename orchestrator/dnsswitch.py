"""Multi-provider DNS switch: read, plan, apply on every provider at once, verify, reconcile.

Guarantees:

* Every provider call runs under that provider's call timeout and retry policy (tenacity):
  :class:`~orchestrator.errors.TransientError` is retried with exponential backoff and never
  sooner than the provider's ``Retry-After``; permanent errors fail at once.
* A whole switch on one provider is bounded by ``dns.switch_timeout``; providers run
  concurrently, so a hanging supplier cannot hold the others back.
* Before any call, every change is checked against the owned records again (defence in depth
  behind :func:`~orchestrator.dnsplan.raise_if_unsafe`); every applied change is logged with its
  before and after values.
* A failed provider is reported (result, log, metric ``helios_dns_provider_up`` = 0) while the
  switch completes on the others; :meth:`DnsSwitcher.reconcile` re-applies the desired state
  later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rdatatype
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from orchestrator.config import DnsProviderConfig, DnsSettings, Nameserver, RetryPolicy
from orchestrator.dnsplan import (
    OwnedRecordSpec,
    ProviderRead,
    RecordKey,
    SwitchOutcome,
    SwitchPlan,
    check_change,
    outcome,
    plan_switch,
    raise_if_unsafe,
    select_records,
)
from orchestrator.dnsstate import DesiredState
from orchestrator.errors import OperationError, OperationTimeout, TransientError
from orchestrator.observability.dns_metrics import DnsMetrics
from orchestrator.providers.dns import ChangeKind, DnsProvider, RecordChange, RecordSet
from orchestrator.retrying import backoff as retry_after_backoff
from orchestrator.retrying import error_class

log = structlog.get_logger("helios.dns")
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


def backoff(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    """Exponential backoff capped at ``max_delay``, never shorter than a Retry-After hint."""
    return retry_after_backoff(policy.initial_delay, policy.max_delay)


@dataclass(frozen=True, slots=True)
class ProviderResult:
    provider: str
    ok: bool
    changed: int
    attempts: int
    duration: float
    live_after: float | None = None
    """Seconds from the start of the switch until the provider reported every change live."""
    error: str | None = None
    error_class: str | None = None


@dataclass(frozen=True, slots=True)
class SwitchReport:
    plan: SwitchPlan
    outcome: SwitchOutcome
    results: tuple[ProviderResult, ...]
    duration: float

    def result(self, provider: str) -> ProviderResult:
        return next(r for r in self.results if r.provider == provider)


@dataclass(frozen=True, slots=True)
class ServedAnswer:
    """What one source (a provider's API or a name server) served, and when it matched."""

    source: str
    provider: str
    record: str
    ok: bool
    values: tuple[str, ...]
    matched_after: float | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RecordDrift:
    provider: str
    record: str
    current: RecordSet | None
    desired: RecordSet
    error: str | None = None

    @property
    def drifted(self) -> bool:
        return self.error is None and self.current != self.desired


class DnsSwitcher:
    """Owns the DNS providers of one config; see the module docstring for the guarantees."""

    def __init__(
        self,
        settings: DnsSettings,
        providers: Mapping[str, DnsProvider],
        *,
        metrics: DnsMetrics | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._providers = dict(providers)
        self._cfg: dict[str, DnsProviderConfig] = {p.name: p for p in settings.providers}
        self._metrics = metrics
        self._sleep = sleep
        self._clock = clock
        self.owned = [OwnedRecordSpec(r.name, r.type, r.ttl) for r in settings.records]
        self.degraded: set[str] = set()
        """Providers whose last call failed (the activation level counts them)."""

    @property
    def provider_names(self) -> list[str]:
        return [p.name for p in self._settings.providers]

    @property
    def primary_provider(self) -> str | None:
        return next((p.name for p in self._settings.providers if p.primary), None)

    # --- calls with the provider's retry policy ----------------------------------------------

    async def _call(
        self, provider: str, fn: Callable[[], Awaitable[T]], *, retry: bool = True
    ) -> tuple[T, int]:
        """Run ``fn`` under the provider's timeout and (unless ``retry`` is False) its retry
        policy; returns (result, attempts)."""
        cfg = self._cfg[provider]
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(cfg.retry.attempts if retry else 1),
            wait=backoff(cfg.retry),
            retry=retry_if_exception_type(TransientError),
            sleep=self._sleep,
            reraise=True,
            before_sleep=lambda st: log.warning(
                f"{provider}: attempt {st.attempt_number} failed, retrying",
                provider=provider,
                reason="DNS_RETRY",
                error=str(st.outcome.exception()) if st.outcome else None,
            ),
        )
        async for attempt in retrying:
            with attempt:
                attempts += 1
                try:
                    async with asyncio.timeout(cfg.timeout):
                        result = await fn()
                except TimeoutError:
                    raise OperationTimeout(
                        f"{provider}: no answer within {cfg.timeout:g}s"
                    ) from None
        return result, attempts

    # --- read and plan ------------------------------------------------------------------------

    async def _read_one(self, provider: str, owned: list[OwnedRecordSpec]) -> ProviderRead:
        p = self._providers[provider]
        records: dict[RecordKey, RecordSet | None] = {}
        try:
            for o in owned:
                name, rtype = o.key
                # One attempt: a provider that cannot be read is planned blind (apply is
                # idempotent), so a hanging supplier never delays the switch of the others.
                current, _ = await self._call(
                    provider,
                    lambda n=name, t=rtype: p.read(n, t),  # type: ignore[misc]
                    retry=False,
                )
                records[o.key] = current
        except OperationError as exc:
            self._failed(provider, exc)
            return ProviderRead(provider=provider, error=str(exc))
        self._ok(provider)
        return ProviderRead(provider=provider, records=records)

    async def read(self, owned: list[OwnedRecordSpec] | None = None) -> list[ProviderRead]:
        """What every provider serves now for the owned records (concurrently)."""
        owned = self.owned if owned is None else owned
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._read_one(n, owned)) for n in self.provider_names]
        return [t.result() for t in tasks]

    async def plan(self, region: str, target: str, records: list[str] | None = None) -> SwitchPlan:
        """Read every provider and plan the switch of the (selected) owned records."""
        owned = select_records(self.owned, records or [])
        reads = await self.read(owned)
        return plan_switch(region, target, owned, reads)

    # --- apply --------------------------------------------------------------------------------

    async def _apply_one(
        self, provider: str, changes: tuple[RecordChange, ...], started: float
    ) -> ProviderResult:
        p, cfg = self._providers[provider], self._cfg[provider]
        attempts = changed = 0
        try:
            async with asyncio.timeout(self._settings.switch_timeout):
                for change in changes:
                    check_change(change, self.owned)
                    if change.kind is ChangeKind.NOOP:
                        continue
                    handle, n = await self._call(provider, lambda c=change: p.apply(c))  # type: ignore[misc]
                    attempts += n
                    await p.wait_live(handle, cfg.propagation_timeout)
                    changed += 1
                    log.info(
                        change.describe(),
                        reason="DNS_CHANGE_APPLIED",
                        provider=provider,
                        record=change.after.name,
                        before=change.before.describe() if change.before else None,
                        after=change.after.describe(),
                    )
        except TimeoutError:
            exc: OperationError = OperationTimeout(
                f"{provider}: switch budget of {self._settings.switch_timeout:g}s exhausted"
            )
            return self._failed_result(provider, exc, attempts, changed, started)
        except OperationError as exc:
            return self._failed_result(provider, exc, attempts, changed, started)
        now = self._clock()
        self._ok(provider)
        if self._metrics is not None and changed:
            self._metrics.changed(provider, now - started)
        return ProviderResult(
            provider=provider,
            ok=True,
            changed=changed,
            attempts=attempts,
            duration=now - started,
            live_after=now - started,
        )

    def _failed_result(
        self, provider: str, exc: OperationError, attempts: int, changed: int, started: float
    ) -> ProviderResult:
        self._failed(provider, exc)
        log.error(
            f"{provider}: switch failed: {exc}",
            reason="DNS_PROVIDER_DEGRADED",
            provider=provider,
            error_class=error_class(exc),
        )
        return ProviderResult(
            provider=provider,
            ok=False,
            changed=changed,
            attempts=max(attempts, 1),
            duration=self._clock() - started,
            error=str(exc),
            error_class=error_class(exc),
        )

    def _ok(self, provider: str) -> None:
        self.degraded.discard(provider)
        if self._metrics is not None:
            self._metrics.provider_ok(provider)

    def _failed(self, provider: str, exc: BaseException) -> None:
        self.degraded.add(provider)
        if self._metrics is not None:
            self._metrics.provider_failed(provider, error_class(exc))

    async def apply(self, plan: SwitchPlan, *, force: bool = False) -> SwitchReport:
        """Apply ``plan`` on every provider concurrently and judge it by ``dns.require``."""
        raise_if_unsafe(plan, self.owned, self._settings.max_changes, force)
        started = self._clock()
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._apply_one(p, plan.for_provider(p), started))
                for p in plan.providers
            ]
        results = tuple(t.result() for t in tasks)
        verdict = outcome(
            self._settings.require, {r.provider: r.ok for r in results}, self.primary_provider
        )
        if self._metrics is not None:
            self._metrics.switches.labels(verdict.value).inc()
        return SwitchReport(plan, verdict, results, self._clock() - started)

    # --- verify -------------------------------------------------------------------------------

    async def verify(
        self, plan: SwitchPlan, timeout: float, interval: float = 0.5
    ) -> list[ServedAnswer]:
        """Read back through each provider's API and each configured name server until they
        serve the plan's answer (or ``timeout`` passes); report what each served and when."""
        started = self._clock()
        checks: list[Callable[[], Awaitable[ServedAnswer]]] = []
        for provider in plan.providers:
            for want in plan.desired:
                checks.append(self._api_check(provider, want, started))
                for ns in self._settings.nameservers:
                    if ns.provider == provider:
                        checks.append(self._ns_check(ns, want, started))

        async def until_match(check: Callable[[], Awaitable[ServedAnswer]]) -> ServedAnswer:
            deadline = started + timeout
            while True:
                answer = await check()
                if answer.ok or self._clock() + interval > deadline:
                    return answer
                await self._sleep(interval)

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(until_match(c)) for c in checks]
        return [t.result() for t in tasks]

    def _api_check(
        self, provider: str, want: RecordSet, started: float
    ) -> Callable[[], Awaitable[ServedAnswer]]:
        async def check() -> ServedAnswer:
            try:
                got, _ = await self._call(
                    provider,
                    lambda: self._providers[provider].read(want.name, want.type),
                    retry=False,
                )
            except OperationError as exc:
                return ServedAnswer("api", provider, want.name, False, (), None, str(exc))
            values = got.values if got else ()
            ok = got is not None and got.values == want.values
            return ServedAnswer(
                "api", provider, want.name, ok, values, self._clock() - started if ok else None
            )

        return check

    def _ns_check(
        self, ns: Nameserver, want: RecordSet, started: float
    ) -> Callable[[], Awaitable[ServedAnswer]]:
        source = f"ns {ns.address}:{ns.port}"

        async def check() -> ServedAnswer:
            try:
                values = await query_nameserver(ns.address, ns.port, want.name, want.type)
            except (dns.exception.DNSException, OSError) as exc:
                return ServedAnswer(
                    source, ns.provider, want.name, False, (), None, f"{type(exc).__name__}: {exc}"
                )
            ok = values == want.values
            return ServedAnswer(
                source, ns.provider, want.name, ok, values, self._clock() - started if ok else None
            )

        return check

    # --- status and reconcile -----------------------------------------------------------------

    async def drift(self, desired: DesiredState | None) -> list[RecordDrift]:
        """Compare what every provider serves with the desired state (None: nothing to compare)."""
        reads = await self.read()
        out: list[RecordDrift] = []
        for read in reads:
            for o in self.owned:
                want = desired.record(o.key) if desired else None
                current = read.records.get(o.key) if read.error is None else None
                if want is None:
                    want = current or RecordSet.make(o.name, o.type, o.ttl, [])
                out.append(RecordDrift(read.provider, o.key[0], current, want, read.error))
        if self._metrics is not None and desired is not None:
            for d in out:
                self._metrics.drift.labels(d.provider, d.record).set(1 if d.drifted else 0)
        return out

    async def reconcile(self, desired: DesiredState) -> list[ProviderResult]:
        """Re-apply the desired state wherever a provider drifted or could not be read."""
        drifts = await self.drift(desired)
        needs: dict[str, list[RecordChange]] = {}
        for d in drifts:
            if d.error is not None or d.drifted:
                needs.setdefault(d.provider, []).append(
                    RecordChange(d.provider, d.current, d.desired)
                )
        if not needs:
            return []
        started = self._clock()
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._apply_one(p, tuple(changes), started))
                for p, changes in needs.items()
            ]
        results = [t.result() for t in tasks]
        for r in results:
            if r.ok and self._metrics is not None:
                for change in needs[r.provider]:
                    self._metrics.drift.labels(r.provider, change.after.name).set(0)
            log.log(
                20 if r.ok else 40,
                f"{r.provider}: reconciled to {desired.target}"
                if r.ok
                else f"{r.provider}: drift not fixed: {r.error}",
                reason="DNS_RECONCILED" if r.ok else "DNS_DRIFT_UNFIXED",
                provider=r.provider,
            )
        return results

    async def aclose(self) -> None:
        await asyncio.gather(
            *(p.aclose() for p in self._providers.values()), return_exceptions=True
        )


async def query_nameserver(
    address: str, port: int, name: str, rtype: str, timeout: float = 2.0
) -> tuple[str, ...]:
    """Ask one authoritative server for ``name``/``rtype``; sorted answer values."""
    q = dns.message.make_query(name, rtype)
    q.flags &= ~dns.flags.RD
    resp = await dns.asyncquery.udp(q, address, port=port, timeout=timeout)
    want = dns.rdatatype.from_text(rtype)
    values: set[str] = set()
    for rrset in resp.answer:
        if rrset.rdtype == want:
            values.update(rd.to_text() for rd in rrset)
    if rtype == "CNAME":
        values = {v if v.endswith(".") else v + "." for v in values}
    return tuple(sorted(values))
