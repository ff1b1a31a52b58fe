"""The daemon's view of leadership: may this instance act, and under which fencing epoch.

Two shapes behind one interface:

* :class:`Solo` (no ``coordination`` section): the only instance, always the leader, no epoch.
* :class:`Elected`: leader election on the coordination service (:mod:`orchestrator.lease`).
  :meth:`Elected.fence`, checked by the executor before **every** runbook step, passes only while
  the local lease deadline holds **and** the service confirms that this instance's epoch is still
  the current leader's (a linearizable read). A service that cannot answer counts as "no":
  a deposed or cut-off leader stops before its next step.

Besides, :class:`Elected` publishes what this instance sees (its vantage point) and, while it
leads, the current primary, so the other instances and the node agents share one picture.
Guarantees: publishing never blocks a tick (a task of its own sends the latest documents); every
call has the coordination timeout; a failed publication is logged once per outage.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry

from orchestrator.config import Config
from orchestrator.coord import (
    CoordinationUnavailable,
    Coordinator,
    LostLeadership,
    build_coordinator,
)
from orchestrator.errors import HeliosError
from orchestrator.journal import Journal
from orchestrator.lease import LeaderElector
from orchestrator.model import Assessment, Snapshot
from orchestrator.observability.leader_metrics import LeaderMetrics

log = structlog.get_logger("helios.leadership")


CONTROLS_TTL = 365 * 24 * 3600.0
"""The shared operator controls outlive any leader (a year; set again by every change)."""


class Leadership(Protocol):
    """What the acting parts of the daemon need to know about leadership."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def epoch(self) -> int | None: ...

    async def fence(self) -> int | None: ...

    def status_fields(self) -> dict[str, Any]: ...


class Solo:
    """No coordination configured: this instance is the only one and always leads
    (``helios_leader`` is 1 for the alert rules)."""

    is_leader = True
    epoch = None

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is not None:
            LeaderMetrics(registry, lambda: True)

    async def fence(self) -> int | None:
        return None

    def status_fields(self) -> dict[str, Any]:
        return {"mode": "single instance", "leader": True, "epoch": None}


def instance_id(cfg: Config) -> str:
    c = cfg.coordination
    return (c.instance_id if c and c.instance_id else None) or socket.gethostname()


class Elected:
    """Leader election on the coordination service; see the module docstring."""

    def __init__(self, cfg: Config, coordinator: Coordinator, registry: CollectorRegistry) -> None:
        settings = cfg.coordination
        assert settings is not None
        self._cfg = cfg
        self._settings = settings
        self.coordinator = coordinator
        self.instance = instance_id(cfg)
        self.vantage = settings.vantage or self.instance
        self.election = f"{cfg.service}/leader"
        self.elector = LeaderElector.from_settings(
            coordinator,
            settings,
            name=self.election,
            candidate_id=self.instance,
            registry=registry,
            on_change=lambda s: log.warning(
                f"{self.instance} is {'now' if s.is_leader else 'no longer'} the leader"
                + (f" (epoch {s.epoch})" if s.is_leader else f": {s.reason}"),
                reason="LEADER_ELECTED" if s.is_leader else "LEADER_LOST",
                epoch=s.epoch,
            ),
        )
        self.run_in_flight: Callable[[], str | None] = lambda: None
        """Published as ``run`` in the current-primary document while a run is in flight."""
        self._latest: tuple[Snapshot, Assessment] | None = None
        self.shared_controls: dict[str, Any] | None = None
        """The operator controls every instance shares (``{service}/controls``: paused,
        acked_at), as of the last tick; None until read, or when never set."""
        self._mirrored_run: str | None = None
        self._mirrored: list[dict[str, Any]] = []
        self._fresh = asyncio.Event()
        self._publish_failing = False

    @classmethod
    def build(cls, cfg: Config, registry: CollectorRegistry) -> Elected:
        assert cfg.coordination is not None
        return cls(cfg, build_coordinator(cfg.coordination), registry)

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader

    @property
    def epoch(self) -> int | None:
        return self.elector.epoch

    async def fence(self) -> int | None:
        """The epoch, confirmed by the coordination service; raises LostLeadership otherwise."""
        epoch = self.elector.epoch
        if epoch is None:
            raise LostLeadership(self.election, 0, "this instance does not hold the lease")
        try:
            async with asyncio.timeout(self._settings.timeout):
                current = await self.coordinator.check_epoch(self.election, epoch)
        except (CoordinationUnavailable, TimeoutError) as exc:
            raise LostLeadership(
                self.election, epoch, f"the coordination service cannot confirm it ({exc})"
            ) from None
        if not current or not self.elector.is_leader:
            raise LostLeadership(self.election, epoch, "another instance holds the lease")
        return epoch

    async def fence_via_agent(self, node: str) -> str:
        """Have ``node``'s agent fence it, and return only once it is fenced for sure.

        Publishes a fence request under ``{service}/fence/{node}`` (with this leader's epoch),
        then watches the agent's heartbeat ``{service}/agents/{node}``:

        * ``fenced: true`` (it obeyed, or fenced itself earlier) or a streaming replica: done;
        * silent (no new heartbeat) for ``fence_after + interval + fence_timeout`` plus the
          coordination timeout, counted from the last heartbeat this leader saw: done as well.
          An agent that cannot publish has no quorum contact, and such an agent has fenced its
          node within ``fence_after + interval + fence_timeout`` (its guarantee).

        An agent that keeps publishing without fencing keeps this waiting: the runbook step's
        timeout then aborts the failover (nothing promoted). Raises LostLeadership when this
        instance no longer leads.
        """
        epoch = self.elector.epoch
        if epoch is None:
            raise LostLeadership(self.election, 0, "this instance does not hold the lease")
        a, svc = self._cfg.agent, self._cfg.service
        bound = a.fence_after + a.interval + a.fence_timeout + self._settings.timeout
        request = {"epoch": epoch, "at": time.time(), "by": self.instance}
        heard_at, revision = time.monotonic(), None
        asked = False
        while True:
            try:
                async with asyncio.timeout(self._settings.timeout):
                    if not asked:
                        await self.coordinator.publish(f"{svc}/fence/{node}", request, bound + 30)
                        asked = True
                        log.warning(f"asked the agent of {node} to fence it", reason="FENCE_ASKED")
                    found = await self.coordinator.read_prefix(f"{svc}/agents/{node}")
            except (HeliosError, TimeoutError):
                found = {}  # no news is not proof: only silence for the whole bound is
            pub = found.get(f"{svc}/agents/{node}")
            if pub is not None:
                doc = pub.document
                if doc.get("fenced") is True:
                    return f"{node}: fenced by its agent ({doc.get('fence_reason') or 'fenced'})"
                if doc.get("role") == "replica" and doc.get("streaming") is True:
                    return f"{node}: its agent reports a streaming replica (takes no writes)"
                if pub.revision != revision:
                    heard_at, revision = time.monotonic(), pub.revision
            silent = time.monotonic() - heard_at
            if silent >= bound:
                return (
                    f"{node}: its agent has been silent for {silent:.1f}s: without quorum "
                    f"contact it fenced the node within {bound:g}s (agent.fence_after "
                    f"{a.fence_after:g}s)"
                )
            if not self.elector.is_leader:
                raise LostLeadership(self.election, epoch, "lost while waiting for the fence")
            await asyncio.sleep(min(0.25, a.interval / 2))

    async def set_controls(self, paused: bool, acked_at: float | None, by: str) -> None:
        """Share the operator controls with every instance (the next leader keeps them).
        Raises HeliosError when the coordination service does not take them."""
        doc = {"paused": paused, "acked_at": acked_at, "by": by, "at": time.time()}
        try:
            async with asyncio.timeout(self._settings.timeout):
                await self.coordinator.publish(f"{self._cfg.service}/controls", doc, CONTROLS_TTL)
        except TimeoutError:
            raise CoordinationUnavailable("the coordination service did not answer") from None
        self.shared_controls = doc

    # --- the run in flight, shared ------------------------------------------------------------

    RUN_TTL = 7 * 24 * 3600.0
    """How long the last run's mirror stays in the coordination service."""

    async def mirror_record(self, record: dict[str, Any]) -> None:
        """Publish the run this record belongs to (every record so far) under
        ``{service}/run``, so that whoever leads next can resume or finish it. Bounded by the
        coordination timeout; a failure is logged (the next record publishes it all again, and
        the epoch check before the next step stops a leader cut off from the service)."""
        if not self.elector.is_leader:
            return  # a deposed leader never overwrites its successor's mirror
        run = str(record["run"])
        if self._mirrored_run != run:
            self._mirrored_run, self._mirrored = run, []
        self._mirrored.append({k: v for k, v in record.items() if k != "seq"})
        doc: dict[str, Any] = {"run": run, "by": self.instance, "epoch": self.elector.epoch}
        doc["records"] = list(self._mirrored)
        try:
            async with asyncio.timeout(self._settings.timeout):
                await self.coordinator.publish(f"{self._cfg.service}/run", doc, self.RUN_TTL)
        except (HeliosError, TimeoutError) as exc:
            log.warning(f"run {run} not mirrored: {exc}", reason="RUN_MIRROR_FAILED")

    async def adopt_run(self, journal: Journal) -> str | None:
        """On taking the lead: bring the shared run into this instance's journal (the records
        it lacks), so an unfinished run is resumed here, exactly where it stopped. Returns the
        adopted run id, or None."""
        try:
            async with asyncio.timeout(self._settings.timeout):
                found = await self.coordinator.read_prefix(f"{self._cfg.service}/run")
        except (HeliosError, TimeoutError) as exc:
            log.warning(f"cannot read the shared run: {exc}", reason="RUN_ADOPT_FAILED")
            return None
        pub = found.get(f"{self._cfg.service}/run")
        records = pub.document.get("records") if pub else None
        run = pub.document.get("run") if pub else None
        if not isinstance(run, str) or not isinstance(records, list):
            return None
        known = await asyncio.to_thread(lambda: journal.runs().get(run))
        have = len(known.records) if known is not None else 0
        missing = [r for r in records[have:] if isinstance(r, dict)]
        if not missing:
            return None
        for rec in missing:
            await asyncio.to_thread(journal.append, rec)
        self._mirrored_run, self._mirrored = run, [r for r in records if isinstance(r, dict)]
        log.warning(
            f"adopted run {run} from {pub.document.get('by') if pub else '?'} "
            f"({len(missing)} record(s) this instance lacked)",
            reason="RUN_ADOPTED",
        )
        return run

    def status_fields(self) -> dict[str, Any]:
        s = self.elector.status
        return {
            "mode": "elected",
            "instance": self.instance,
            "vantage": self.vantage,
            "leader": self.elector.is_leader,
            "epoch": self.elector.epoch,
            "detail": s.reason,
            "shared_controls": self.shared_controls,
        }

    # --- publishing -------------------------------------------------------------------------------

    def observed(self, snap: Snapshot, assessment: Assessment) -> None:
        """The tick hook: remember the latest tick for the publisher (never blocks)."""
        self._latest = (snap, assessment)
        self._fresh.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Elect, and publish the latest observations after every tick, until ``stop``."""
        election = asyncio.create_task(self.elector.run(), name="leader-election")
        try:
            while not stop.is_set():
                waiter = asyncio.create_task(self._fresh.wait())
                stopper = asyncio.create_task(stop.wait())
                try:
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()
                if stop.is_set():
                    break
                self._fresh.clear()
                if self._latest is not None:
                    await self._publish(*self._latest)
        finally:
            await self.elector.stop()  # steps down at once; the task resigns the lease
            done, _ = await asyncio.wait({election}, timeout=2 * self._settings.timeout)
            if not done:
                election.cancel()
                await asyncio.gather(election, return_exceptions=True)
            await self.coordinator.aclose()

    async def vantage_agreement(self, primary: str, now: float) -> tuple[int, int]:
        """(vantage points whose fresh observation has ``primary`` failing, fresh vantage
        points). This instance's own latest tick counts even when it could not publish it.
        An unreachable coordination service gives (own view, 1): a cut-off leader has lost its
        lease anyway and acts on nothing."""
        threshold = self._cfg.probes.failure_threshold
        fresh_for = max(3 * self._cfg.probes.interval, 2.0) + 1.0
        views: dict[str, dict[str, Any]] = {}
        try:
            async with asyncio.timeout(self._settings.timeout):
                found = await self.coordinator.read_prefix(f"{self._cfg.service}/vantage/")
            for pub in found.values():
                doc = dict(pub.document)
                if abs(now - float(doc.get("at", 0.0))) <= fresh_for:
                    views[str(doc.get("vantage"))] = doc
        except (HeliosError, TimeoutError, ValueError, TypeError) as exc:
            log.warning(f"cannot read the vantage points: {exc}", reason="VANTAGE_UNREADABLE")
        if self._latest is not None:
            views[self.vantage] = vantage_document(
                self.vantage, self.instance, self._latest[1], now
            )
        agree = sum(
            1
            for doc in views.values()
            if int(doc.get("nodes", {}).get(primary, {}).get("failures", 0)) >= threshold
        )
        return agree, len(views)

    async def _publish(self, snap: Snapshot, a: Assessment) -> None:
        ttl = max(3 * self._cfg.probes.interval, 2.0)
        svc = self._cfg.service
        doc = vantage_document(self.vantage, self.instance, a, time.time())
        try:
            async with asyncio.timeout(2 * self._settings.timeout):
                await self.coordinator.publish(f"{svc}/vantage/{self.vantage}", doc, ttl)
                epoch = self.elector.epoch
                if epoch is not None and a.primary is not None:
                    await self.coordinator.publish(
                        f"{svc}/primary",
                        {
                            "node": a.primary,
                            "region": a.primary_region,
                            "epoch": epoch,
                            "at": time.time(),
                            "by": self.instance,
                            **({"run": run} if (run := self.run_in_flight()) else {}),
                        },
                        max(self._settings.ttl * 6, 60.0),
                    )
                key = f"{svc}/controls"
                found = await self.coordinator.read_prefix(key)
                self.shared_controls = dict(found[key].document) if key in found else None
            if self._publish_failing:
                log.info("publishing to the coordination service again", reason="PUBLISH_OK")
            self._publish_failing = False
        except (HeliosError, TimeoutError) as exc:
            if not self._publish_failing:
                log.warning(f"cannot publish observations: {exc}", reason="PUBLISH_FAILED")
            self._publish_failing = True


def vantage_document(vantage: str, instance: str, a: Assessment, now: float) -> dict[str, Any]:
    """What one vantage point sees of every node (read by the leader for its quorum)."""
    return {
        "vantage": vantage,
        "instance": instance,
        "at": now,
        "cycle": a.cycle,
        "primary": a.primary,
        "nodes": {
            n.node.name: {
                "verdict": n.verdict.value,
                "failures": n.consecutive_failures,
                "role": n.role.value,
            }
            for n in a.nodes
        },
    }
