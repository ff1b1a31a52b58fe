"""Leader election for one orchestrator instance: :class:`LeaderElector` campaigns through a
:class:`~orchestrator.coord.base.Coordinator`, renews the lease every ttl/3, and steps down.

Guarantees:

* **Local deadline.** The elector considers itself leader only until
  ``valid_from + ttl - margin`` by the local monotonic clock, where ``valid_from`` was taken
  before the request that started or last extended the lease. The coordination service cannot
  expire the lease before ``valid_from + ttl``, so a leader cut off from it (partition, hung
  member) stops being leader ``margin`` seconds before any other instance can win. The
  deadline is checked by :attr:`LeaderElector.is_leader` itself, so it holds even when the
  event loop is too busy to run the elector's task.
* **Fencing.** :attr:`LeaderElector.epoch` is the leadership's fencing token; before acting,
  callers confirm it with ``coordinator.check_epoch`` (a deposed leader's epoch never returns).
  The local view assumes that only the end of the lease removes the leader key: a key deleted
  by hand is noticed at the next renewal (within ttl/3), and until then only ``check_epoch``
  tells the old leader from the new one.
* **Ownership.** The elector's work is one task, started by :meth:`LeaderElector.start` (or
  :meth:`LeaderElector.run` inside a caller's TaskGroup) and ended by :meth:`LeaderElector.stop`,
  which steps down locally first and then resigns (revokes the lease) within a bounded time.
* Every coordinator call runs under a timeout; no call outlives the leadership's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry

from orchestrator.config_coord import CoordinationSettings
from orchestrator.coord.base import (
    CoordinationRejected,
    CoordinationUnavailable,
    Coordinator,
    Leadership,
    LostLeadership,
)
from orchestrator.observability.leader_metrics import LeaderMetrics

log = structlog.get_logger("helios.lease")


@dataclass(frozen=True)
class LeaseTiming:
    """The arithmetic of a lease: when to renew, when to stop believing in it."""

    ttl: float
    margin: float

    def __post_init__(self) -> None:
        if not 0 < self.margin < self.ttl - self.renew_interval:
            raise ValueError(
                f"margin {self.margin:g}s must be positive and below two thirds "
                f"of the ttl {self.ttl:g}s"
            )

    @property
    def renew_interval(self) -> float:
        return self.ttl / 3

    @property
    def retry_interval(self) -> float:
        """Between campaigns of a follower, and between retries of a failed renewal."""
        return min(1.0, self.ttl / 6)

    def deadline(self, valid_from: float) -> float:
        """The local instant at which a leadership valid from ``valid_from`` is given up."""
        return valid_from + self.ttl - self.margin

    def next_renewal(self, valid_from: float, failed_at: float | None = None) -> float:
        """When to renew next: ttl/3 after the last successful renewal was sent, or a retry
        interval after a failed attempt; never later than the deadline."""
        due = valid_from + self.renew_interval
        if failed_at is not None:
            due = max(due, failed_at + self.retry_interval)
        return min(due, self.deadline(valid_from))

    def usable(self, valid_from: float, now: float) -> bool:
        """Whether a just-won leadership leaves time for at least one renewal."""
        return now < self.next_renewal(valid_from)


@dataclass(frozen=True)
class LeaderStatus:
    """This instance's view: ``reason`` says why it last changed."""

    is_leader: bool
    epoch: int | None
    deadline: float | None
    reason: str


Callback = Callable[[LeaderStatus], None]


class LeaderElector:
    """Campaigns for ``name`` as ``candidate_id`` and holds the leadership while it can."""

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        name: str,
        candidate_id: str,
        ttl: float,
        margin: float | None = None,
        registry: CollectorRegistry | None = None,
        on_change: Callback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._coord = coordinator
        self._log = log.bind(election=name, who=candidate_id)
        self.name = name
        self.candidate_id = candidate_id
        self.timing = LeaseTiming(ttl, margin if margin is not None else ttl / 5)
        self._metrics = (
            LeaderMetrics(registry, lambda: self.is_leader) if registry is not None else None
        )
        self._callbacks: list[Callback] = [on_change] if on_change else []
        self._clock = clock
        self._held: Leadership | None = None
        self._abandoned: Leadership | None = None  # stepped down from; to resign when possible
        self._failed_at: float | None = None
        self._failing = False  # a follower's calls fail: logged once per outage
        self._status = LeaderStatus(False, None, None, "not started")
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        coordinator: Coordinator,
        settings: CoordinationSettings,
        *,
        name: str,
        candidate_id: str,
        registry: CollectorRegistry | None = None,
        on_change: Callback | None = None,
    ) -> LeaderElector:
        return cls(
            coordinator,
            name=name,
            candidate_id=candidate_id,
            ttl=settings.ttl,
            margin=settings.margin,
            registry=registry,
            on_change=on_change,
        )

    # --- the view --------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True only while the leadership is held and its local deadline has not passed."""
        s = self._status
        return s.is_leader and s.deadline is not None and self._clock() < s.deadline

    @property
    def epoch(self) -> int | None:
        """The fencing epoch while :attr:`is_leader`, else None."""
        return self._status.epoch if self.is_leader else None

    @property
    def status(self) -> LeaderStatus:
        if self._status.is_leader and not self.is_leader:
            return LeaderStatus(False, None, None, "deadline passed")
        return self._status

    def add_callback(self, callback: Callback) -> None:
        """Call ``callback(status)`` on the event loop at every change; it must not raise."""
        self._callbacks.append(callback)

    async def wait_for_change(self) -> LeaderStatus:
        """Wait for the next change of leadership, and return the new status."""
        await self._changed.wait()
        return self.status

    async def wait_for(self, predicate: Callable[[LeaderStatus], bool]) -> LeaderStatus:
        """Wait until ``predicate(status)`` holds (the caller owns the timeout)."""
        while not predicate(self.status):
            await self.wait_for_change()
        return self.status

    # --- the task --------------------------------------------------------------------------

    def start(self) -> None:
        """Run :meth:`run` in a task this elector owns until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"leader-elector:{self.name}")

    async def stop(self) -> None:
        """Step down at once, then end the task: an in-flight call is cancelled and the lease
        resigned within a renew interval. When :meth:`run` was handed to a TaskGroup instead
        of :meth:`start`, this steps down and signals it; the group awaits the resignation."""
        self._stopping.set()
        if self._held is not None:
            self._step_down("stopping")
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # our caller is being cancelled too

    async def run(self) -> None:
        """Campaign and hold the leadership until :meth:`stop` (or cancellation); then step
        down and resign."""
        try:
            while not self._stopping.is_set():
                if self._held is None:
                    await self._campaign()
                    if self._held is None:
                        await self._sleep_until(self._clock() + self.timing.retry_interval)
                else:
                    await self._hold(self._held)
        finally:
            if self._held is not None:
                self._step_down("stopped")
            if self._abandoned is not None:
                await self._resign(self._abandoned, patient=True)

    async def _campaign(self) -> None:
        if self._abandoned is not None and not await self._resign(self._abandoned):
            return
        try:
            async with asyncio.timeout(self.timing.renew_interval):
                won = await self._coord.campaign(self.name, self.candidate_id, self.timing.ttl)
        except (CoordinationUnavailable, CoordinationRejected, TimeoutError) as exc:
            self._note_failure("leader.campaign_failed", exc)
            return
        self._failing = False
        if won is None:
            return
        if self._stopping.is_set():
            self._abandoned = won
            return
        if not self.timing.usable(won.valid_from, self._clock()):
            self._log.warning("leader.campaign_too_slow", epoch=won.epoch)
            self._abandoned = won
            return
        self._held = won
        self._failed_at = None
        self._set(True, won.epoch, self.timing.deadline(won.valid_from), "campaign won")
        self._log.info("leader.elected", epoch=won.epoch)

    async def _hold(self, held: Leadership) -> None:
        deadline = self.timing.deadline(held.valid_from)
        await self._sleep_until(self.timing.next_renewal(held.valid_from, self._failed_at))
        if self._stopping.is_set():
            return
        if self._clock() >= deadline:
            self._step_down("renewal overdue")
            return
        started = self._clock()
        try:
            async with asyncio.timeout(deadline - started):
                renewed = await self._coord.renew(held)
        except LostLeadership as exc:
            self._count_failure("lost")
            if self._held is held:
                self._step_down("lease lost", error=str(exc))
            return
        except (CoordinationUnavailable, CoordinationRejected, TimeoutError) as exc:
            self._count_failure(
                "rejected" if isinstance(exc, CoordinationRejected) else "unavailable"
            )
            self._failed_at = self._clock()
            self._log.warning("leader.renew_failed", error=_why(exc))
            return
        if self._metrics:
            self._metrics.renew_seconds.observe(self._clock() - started)
        if self._held is not held:  # stepped down (stop) while the renewal was in flight
            self._abandoned = renewed
            return
        self._held = renewed
        self._failed_at = None
        self._set(True, renewed.epoch, self.timing.deadline(renewed.valid_from), "renewed")

    def _step_down(self, reason: str, error: str | None = None) -> None:
        held, self._held = self._held, None
        if held is not None and reason != "lease lost":
            self._abandoned = held
        self._set(False, None, None, reason)
        self._log.warning("leader.stepped_down", reason=reason, error=error)

    async def _resign(self, held: Leadership, *, patient: bool = False) -> bool:
        """Revoke an abandoned lease within a renew interval: once, or (``patient``, when
        stopping) again and again while the service is unavailable, e.g. during an etcd
        leader election, so that a successor need not wait out the ttl."""
        try:
            async with asyncio.timeout(self.timing.renew_interval):
                while True:
                    try:
                        await self._coord.resign(held)
                        break
                    except CoordinationUnavailable:
                        if not patient:
                            raise
                        await asyncio.sleep(self.timing.retry_interval / 4)
        except (CoordinationUnavailable, CoordinationRejected, TimeoutError) as exc:
            self._note_failure("leader.resign_failed", exc)
            return False
        self._failing = False
        self._abandoned = None
        return True

    async def _sleep_until(self, when: float) -> None:
        delay = when - self._clock()
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stopping.wait()

    def _note_failure(self, event: str, exc: BaseException) -> None:
        if not self._failing:
            self._log.warning(event, error=_why(exc))
        self._failing = True

    def _count_failure(self, reason: str) -> None:
        if self._metrics:
            self._metrics.renew_failures.labels(reason).inc()

    def _set(self, is_leader: bool, epoch: int | None, deadline: float | None, why: str) -> None:
        before = self._status
        self._status = LeaderStatus(is_leader, epoch, deadline, why)
        if before.is_leader == is_leader and before.epoch == epoch:
            return
        if self._metrics:
            if epoch is not None:
                self._metrics.epoch.set(epoch)
            if before.is_leader != is_leader:
                self._metrics.changes.inc()
        for callback in self._callbacks:
            callback(self._status)
        self._changed.set()
        self._changed = asyncio.Event()


def _why(exc: BaseException) -> str:
    return str(exc) or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)
