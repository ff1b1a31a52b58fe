"""Incident records: opened at the first failed probe of the primary, written as JSON under
``<state_dir>/incidents/``.

Guarantees: every update rewrites the incident file atomically (temporary file, fsync, rename);
timestamps are wall clock seconds; the measured RTO is *first failure -> first verified write
through the service name* and the measured RPO is the promoted replica's lag at the moment of
loss (seconds) plus the WAL bytes it had not received.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.atomic import write_json
from orchestrator.errors import HeliosError, NotFound, UsageError

EVENTS = (
    "first_failure",
    "confirmed",
    "hold",
    "fenced",
    "promoted",
    "dns_switched",
    "first_verified_write",
    "recovered",
    "resolved",
)


@dataclass
class Incident:
    id: str
    opened_at: float
    primary: str
    region: str
    status: str = "open"
    """open | held | failed_over | recovered | failed"""
    kind: str = "primary_loss"
    timeline: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None
    plan: dict[str, Any] | None = None
    new_primary: str | None = None
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    rpo_bytes: int | None = None
    divergent: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    closed_at: float | None = None
    level: int = 0
    """Current BCP activation level: 0 (single component, automated) to 4 (regional)."""
    levels: list[dict[str, Any]] = field(default_factory=list)
    """Every (re)classification: {"level", "at", "reason", "authority"}."""
    notifications: list[dict[str, Any]] = field(default_factory=list)
    """Every message sent or attempted: {"at", "event", "audience", "channel", "ok", "via",
    "detail"}."""
    external: dict[str, str] = field(default_factory=dict)
    """Ids at external services, e.g. {"statuspage:<channel>": "<incident id>"}."""
    drill_id: str | None = None
    """Set when the incident is a leg of a DR drill."""

    def event(self, name: str, at: float | None = None, detail: str = "") -> None:
        """Record a timeline event once (the first occurrence wins)."""
        if any(e["event"] == name for e in self.timeline):
            return
        at = time.time() if at is None else at
        self.timeline.append({"event": name, "at": at, "detail": detail})
        self.timeline.sort(key=lambda e: e["at"])
        if name == "first_verified_write":
            self.rto_seconds = round(at - self.opened_at, 3)

    def set_level(self, level: int, at: float, reason: str, authority: str) -> bool:
        """Record a (re)classification; returns True when the level changed."""
        if self.levels and self.level == level:
            return False
        self.level = level
        self.levels.append({"level": level, "at": at, "reason": reason, "authority": authority})
        return True

    def summary(self) -> dict[str, Any]:
        """The fields an incident list shows (timestamps in epoch seconds)."""
        return {
            "id": self.id,
            "status": self.status,
            "kind": self.kind,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "primary": self.primary,
            "new_primary": self.new_primary,
            "level": self.level,
            "rto_seconds": self.rto_seconds,
            "rpo_seconds": self.rpo_seconds,
            "rpo_bytes": self.rpo_bytes,
        }

    def when(self, name: str) -> float | None:
        return next((e["at"] for e in self.timeline if e["event"] == name), None)

    def close(self, status: str, at: float | None = None) -> None:
        self.status = status
        self.closed_at = time.time() if at is None else at

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


ID_PATTERN = re.compile(r"inc-[A-Za-z0-9_-]{1,64}")
"""Incident ids (:func:`new_id` makes ``inc-YYYYmmddTHHMMSS-xxxxxx``): never a path."""


def new_id(at: float) -> str:
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%S")
    return f"inc-{stamp}-{secrets.token_hex(3)}"


class IncidentStore:
    """Reads and writes incidents in ``<state_dir>/incidents``."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir) / "incidents"

    def save(self, inc: Incident) -> Path:
        return write_json(self.dir / f"{inc.id}.json", asdict(inc))

    async def save_async(self, inc: Incident) -> Path:
        """Copy the record on the event loop (where it is mutated), write it in a thread."""
        doc = asdict(inc)
        return await asyncio.to_thread(write_json, self.dir / f"{inc.id}.json", doc)

    def load(self, incident_id: str) -> Incident:
        """The incident with this id; UsageError for a malformed id (never a path outside the
        store), HeliosError when there is none."""
        if not ID_PATTERN.fullmatch(incident_id):
            raise UsageError(f"{incident_id!r} is not an incident id (inc-YYYYmmddTHHMMSS-xxxxxx)")
        path = self.dir / f"{incident_id}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Incident(**data)
        except FileNotFoundError:
            raise NotFound(f"no incident {incident_id!r} in {self.dir}") from None
        except (ValueError, TypeError) as exc:
            raise HeliosError(f"incident file {path} is unreadable: {exc}") from None

    def all(self) -> list[Incident]:
        if not self.dir.is_dir():
            return []
        out = []
        for p in sorted(self.dir.glob("inc-*.json")):
            try:
                out.append(Incident(**json.loads(p.read_text(encoding="utf-8"))))
            except (ValueError, TypeError, OSError):
                continue
        return sorted(out, key=lambda i: i.opened_at)

    def open_incident(self) -> Incident | None:
        return next((i for i in reversed(self.all()) if i.is_open), None)
