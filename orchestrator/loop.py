"""The tick loop: observe -> judge -> heartbeat -> record, once per interval.

Guarantees:

* Ticks start on a fixed schedule (``interval`` apart, monotonic clock); a tick that overruns
  skips the missed slots instead of bunching up.
* Each tick logs exactly one structured line with a human sentence and a reason code.
* A tick that fails unexpectedly is counted (``helios_cycle_errors_total``), logged with its
  traceback, and takes no decision: the previous assessment stays in force.
* :meth:`Loop.run` returns promptly once ``stop`` is set (at the latest after the in-flight tick,
  which is bounded by the probe timeout); cancellation is never swallowed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from orchestrator import health, lag, status
from orchestrator.controls import save_mark
from orchestrator.errors import OperationError
from orchestrator.model import Assessment, Snapshot, Topology, Verdict
from orchestrator.observability.metrics import Metrics
from orchestrator.observe import Observer

log = structlog.get_logger("helios.loop")


class TickHook(Protocol):
    """Acts on each tick's assessment (the autopilot); returns fields for the tick's log line."""

    async def on_tick(self, assessment: Assessment, snapshot: Snapshot) -> dict[str, Any]: ...


class HeartbeatWriter(Protocol):
    """Writes the heartbeat row on one primary (see ``providers.db_postgres``)."""

    async def write(self, written_at: float) -> int: ...

    async def aclose(self) -> None: ...


@dataclass
class DaemonState:
    """What the HTTP server reads: the latest tick's results and the loop's liveness."""

    topo: Topology
    priorities: dict[str, int]
    interval: float
    assessment: Assessment | None = None
    snapshot: Snapshot | None = None
    last_cycle_monotonic: float | None = None
    consecutive_errors: int = 0
    started_monotonic: float = field(default_factory=time.monotonic)
    extras: Callable[[], dict[str, Any]] | None = None
    """Further sections of the status document (the activation level, drills)."""

    @property
    def ready(self) -> bool:
        """Ready once a tick has judged the world."""
        return self.assessment is not None

    def live(self, now_monotonic: float | None = None) -> tuple[bool, str]:
        """Alive if ticks keep completing and do not keep failing."""
        now = time.monotonic() if now_monotonic is None else now_monotonic
        grace = max(3 * self.interval, 5.0)
        if self.consecutive_errors >= 3:
            return False, f"{self.consecutive_errors} consecutive ticks failed"
        last = self.last_cycle_monotonic or self.started_monotonic
        if now - last > grace:
            return False, f"no tick completed for {now - last:.1f}s"
        return True, "ok"

    def status_document(self) -> dict[str, Any] | None:
        if self.assessment is None or self.snapshot is None:
            return None
        doc = status.build_status(
            self.topo, self.assessment, self.snapshot, "daemon", self.priorities
        )
        if self.extras is not None:
            doc.update(self.extras())
        return doc


CycleHook = Callable[[Snapshot, Assessment], None]


class Loop:
    """Runs the ticks. All collaborators are injected by the composition root (``app``)."""

    def __init__(
        self,
        *,
        state: DaemonState,
        observer: Observer,
        settings: health.HealthSettings,
        metrics: Metrics,
        heartbeat: Callable[[str], HeartbeatWriter] | None,
        clock: Callable[[], float] = time.time,
        on_cycle: CycleHook | None = None,
        autopilot: TickHook | None = None,
        mark_file: Path | None = None,
    ) -> None:
        self._state = state
        self._observer = observer
        self._settings = settings
        self._metrics = metrics
        self._heartbeat_factory = heartbeat
        self._writers: dict[str, HeartbeatWriter] = {}
        self._clock = clock
        self._on_cycle = on_cycle
        self._autopilot = autopilot
        self._mark_file = mark_file
        self._saved_mark: lag.PrimaryMark | None = None
        self._cycle = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set."""
        interval = self._state.interval
        next_at = time.monotonic()
        try:
            while not stop.is_set():
                await self._guarded_tick()
                next_at += interval
                now = time.monotonic()
                if next_at < now:  # overran: skip the slots we missed
                    next_at = now + interval - ((now - next_at) % interval)
                try:
                    async with asyncio.timeout(next_at - now):
                        await stop.wait()
                except TimeoutError:
                    pass
        finally:
            await self.aclose()

    async def _guarded_tick(self) -> None:
        try:
            await self.tick()
        except asyncio.CancelledError:
            raise
        except Exception:  # top of the loop: count it, take no decision this tick
            self._state.consecutive_errors += 1
            self._metrics.cycle_errors.inc()
            log.exception("tick failed; no decision taken", reason="CYCLE_ERROR", cycle=self._cycle)

    async def tick(self) -> Assessment:
        """One tick; raises only on unexpected errors (the caller counts them)."""
        self._cycle += 1
        t0 = time.perf_counter()
        at = self._clock()
        snap = await self._observer.snapshot(self._cycle, at)
        assessment = health.assess(self._state.assessment, snap, self._state.topo, self._settings)
        hb = await self._write_heartbeat(assessment)
        if self._autopilot is not None:
            hb.update(await self._autopilot.on_tick(assessment, snap))
        await self._save_mark()
        duration = time.perf_counter() - t0
        self._metrics.record_cycle(snap, assessment, duration)
        self._state.assessment = assessment
        self._state.snapshot = snap
        self._state.last_cycle_monotonic = time.monotonic()
        self._state.consecutive_errors = 0
        log.info(
            assessment.sentence,
            reason=assessment.reason,
            cycle=assessment.cycle,
            duration_ms=round(duration * 1000, 1),
            primary=assessment.primary,
            regions={r.region: r.verdict.value for r in assessment.regions},
            lag_s={
                n.node.name: round(n.lag_seconds, 3)
                for n in assessment.nodes
                if n.lag_seconds is not None
            },
            **hb,
        )
        if self._on_cycle is not None:
            self._on_cycle(snap, assessment)
        return assessment

    async def _write_heartbeat(self, assessment: Assessment) -> dict[str, Any]:
        """Stamp the heartbeat on the one healthy-enough primary; never on two."""
        if self._heartbeat_factory is None or assessment.primary is None:
            return {}
        if assessment.reason == "SPLIT_BRAIN":
            return {"heartbeat": "skipped: more than one primary"}
        node = assessment.node(assessment.primary)
        if node.verdict in (Verdict.DOWN, Verdict.UNKNOWN) or node.consecutive_failures:
            return {}
        writer = self._writers.get(node.node.name)
        if writer is None:
            writer = self._writers[node.node.name] = self._heartbeat_factory(node.node.name)
        try:
            seq = await writer.write(self._clock())
        except OperationError as exc:
            self._metrics.heartbeat_errors.inc()
            return {"heartbeat_error": str(exc)}
        self._metrics.heartbeat_seq.set(seq)
        return {"heartbeat_seq": seq}

    async def _save_mark(self) -> None:
        """Keep the last primary position on disk: a CLI plan made while the primary is gone
        computes each replica's lag at the moment of loss from it."""
        mark = self._observer.primary_mark
        if self._mark_file is None or mark is None or mark == self._saved_mark:
            return
        await asyncio.to_thread(save_mark, self._mark_file, mark)
        self._saved_mark = mark

    async def aclose(self) -> None:
        """Close heartbeat writers and probes; bounded; never raises."""
        writers = list(self._writers.values())
        self._writers.clear()
        await asyncio.gather(*(w.aclose() for w in writers), return_exceptions=True)
        await self._observer.aclose()
