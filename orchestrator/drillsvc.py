"""The daemon's drill scheduler: starts the configured drill at its cron occurrences.

Guarantees: the decision to start is :func:`orchestrator.drillsched.should_start` (never during
an incident, while paused, while a failover or another drill runs, or inside a blackout
window); the schedule's bookkeeping (when it was first seen, when the last scheduled drill
started) is persisted in ``<state_dir>/drill-schedule.json`` so a restart neither skips nor
repeats an occurrence; a drill runs as this task (owned by the daemon's TaskGroup) and is
cancelled with it at shutdown (its lock then lapses at its expiry); a drill's failure is
logged and recorded, never raised.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from orchestrator.atomic import write_json
from orchestrator.config import Config
from orchestrator.controls import active_drill, load_controls
from orchestrator.drillsched import should_start

log = structlog.get_logger("helios.drills")
CHECK_EVERY = 5.0

RunDrill = Callable[[], Awaitable[dict[str, Any]]]


def _book_path(state_dir: str) -> Path:
    return Path(state_dir) / "drill-schedule.json"


def load_book(state_dir: str, now: float) -> dict[str, Any]:
    try:
        doc = json.loads(_book_path(state_dir).read_text(encoding="utf-8"))
        if isinstance(doc, dict) and isinstance(doc.get("since"), int | float):
            return doc
    except (OSError, ValueError):
        pass
    return {"since": now, "last_attempt": None}


class DrillScheduler:
    """Runs scheduled drills. ``incident_open`` and ``busy`` are read on every check."""

    def __init__(
        self,
        cfg: Config,
        run_drill: RunDrill,
        incident_open: Callable[[], bool],
        busy: Callable[[], bool],
    ) -> None:
        self._cfg = cfg
        self._run_drill = run_drill
        self._incident_open = incident_open
        self._busy = busy
        self.last_reason = "NOT_SCHEDULED"
        self.next_due: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        if self._cfg.drill.schedule is None:
            return
        state_dir = self._cfg.state_dir
        book = await asyncio.to_thread(load_book, state_dir, time.time())
        await asyncio.to_thread(write_json, _book_path(state_dir), book)
        while not stop.is_set():
            await self.check(book)
            try:
                await asyncio.wait_for(stop.wait(), CHECK_EVERY)
            except TimeoutError:
                continue

    async def check(self, book: dict[str, Any]) -> bool:
        """One scheduling decision; runs the drill when it starts. Returns True if it ran."""
        now = time.time()
        controls = await asyncio.to_thread(load_controls, self._cfg.state_dir)
        running = await asyncio.to_thread(active_drill, self._cfg.state_dir)
        v = should_start(
            self._cfg.drill,
            now=now,
            last_attempt=book.get("last_attempt"),
            since=float(book["since"]),
            incident_open=self._incident_open(),
            paused=controls.paused,
            busy=self._busy() or running is not None,
        )
        self.next_due = v.due_at
        if v.reason != self.last_reason and v.reason not in ("NOT_DUE", "START"):
            log.warning(f"scheduled drill waits: {v.reason}", reason=f"DRILL_WAITS_{v.reason}")
        self.last_reason = v.reason
        if not v.start:
            return False
        book["last_attempt"] = now
        await asyncio.to_thread(write_json, _book_path(self._cfg.state_dir), book)
        log.warning("scheduled DR drill starting", reason="DRILL_SCHEDULED")
        try:
            record = await self._run_drill()
            log.warning(
                f"scheduled DR drill {record.get('id')} {record.get('result')}",
                reason="DRILL_DONE",
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(f"scheduled DR drill could not run: {exc}", reason="DRILL_ERROR")
        return True

    def status_fields(self) -> dict[str, Any]:
        return {
            "schedule": self._cfg.drill.schedule,
            "next_due": self.next_due,
            "waiting": self.last_reason,
        }
