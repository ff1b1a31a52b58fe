"""When the daemon starts a scheduled DR drill. Pure: no asyncio, no I/O, no clock reads.

Rules: a drill is due at the first cron occurrence (UTC) after the last scheduled attempt (or
after the daemon first saw the schedule); a due drill starts only outside every blackout window,
with no incident open, not paused, no failover or drill running; otherwise it waits, with the
reason, and starts at the first tick where the way is clear (a missed occurrence is not
skipped, and several missed occurrences make one drill, not a burst).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter

from orchestrator.config_bcp import DAYS, Blackout, DrillSettings


@dataclass(frozen=True, slots=True)
class Verdict:
    start: bool
    reason: str
    """START, NOT_SCHEDULED, NOT_DUE, BLACKOUT, INCIDENT_OPEN, PAUSED, BUSY."""
    due_at: float | None = None


def next_occurrence(schedule: str, after: float) -> float:
    """The first occurrence of ``schedule`` (UTC) strictly after ``after``."""
    base = datetime.fromtimestamp(after, UTC)
    nxt: datetime = croniter(schedule, base).get_next(datetime)
    return nxt.timestamp()


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def in_blackout(windows: list[Blackout], now: float) -> Blackout | None:
    """The blackout window ``now`` (UTC) falls in, if any. A window whose end is before its
    start spans midnight and belongs to the day it starts on."""
    t = datetime.fromtimestamp(now, UTC)
    minute = t.hour * 60 + t.minute
    today = DAYS[t.weekday()]
    yesterday = DAYS[(t - timedelta(days=1)).weekday()]
    for w in windows:
        start, end = _minutes(w.start), _minutes(w.end)
        if start <= end:
            if today in w.days and start <= minute < end:
                return w
        elif (today in w.days and minute >= start) or (yesterday in w.days and minute < end):
            return w
    return None


def should_start(
    settings: DrillSettings,
    *,
    now: float,
    last_attempt: float | None,
    since: float,
    incident_open: bool,
    paused: bool,
    busy: bool,
) -> Verdict:
    """Whether a scheduled drill starts now. ``last_attempt``: when the last scheduled drill
    started (None: never); ``since``: when the daemon started watching the schedule."""
    if settings.schedule is None:
        return Verdict(False, "NOT_SCHEDULED")
    due = next_occurrence(settings.schedule, last_attempt if last_attempt is not None else since)
    if now < due:
        return Verdict(False, "NOT_DUE", due)
    if incident_open:
        return Verdict(False, "INCIDENT_OPEN", due)
    if paused:
        return Verdict(False, "PAUSED", due)
    if busy:
        return Verdict(False, "BUSY", due)
    if in_blackout(settings.blackout, now) is not None:
        return Verdict(False, "BLACKOUT", due)
    return Verdict(True, "START", due)
