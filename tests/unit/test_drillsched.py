"""Drill scheduling: cron occurrences, blackout windows, and never during an incident."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.config_bcp import Blackout, DrillSettings
from orchestrator.drillsched import in_blackout, next_occurrence, should_start


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


MONTHLY = DrillSettings(schedule="0 3 1 * *")  # 03:00 UTC on the 1st of every month


def test_next_occurrence_is_monthly() -> None:
    assert next_occurrence("0 3 1 * *", ts("2026-11-27T12:00:00")) == ts("2026-12-01T03:00:00")
    assert next_occurrence("0 3 1 * *", ts("2026-12-01T03:00:00")) == ts("2027-01-01T03:00:00")


def go(settings: DrillSettings, now: str, last: str | None = None, **kw: bool) -> tuple[bool, str]:
    v = should_start(
        settings,
        now=ts(now),
        last_attempt=ts(last) if last else None,
        since=ts("2026-11-27T00:00:00"),
        incident_open=kw.get("incident", False),
        paused=kw.get("paused", False),
        busy=kw.get("busy", False),
    )
    return v.start, v.reason


@pytest.mark.parametrize(
    ("now", "last", "flags", "expected"),
    [
        ("2026-11-30T23:59:00", None, {}, (False, "NOT_DUE")),
        ("2026-12-01T03:00:00", None, {}, (True, "START")),
        ("2026-12-01T05:00:00", None, {}, (True, "START")),  # late start after a restart
        ("2026-12-01T03:00:30", None, {"incident": True}, (False, "INCIDENT_OPEN")),
        ("2026-12-01T03:00:30", None, {"paused": True}, (False, "PAUSED")),
        ("2026-12-01T03:00:30", None, {"busy": True}, (False, "BUSY")),
        # The December drill ran; the next one is in January, missed months make one drill.
        ("2026-12-15T03:00:00", "2026-12-01T03:00:10", {}, (False, "NOT_DUE")),
        ("2027-03-02T00:00:00", "2026-12-01T03:00:10", {}, (True, "START")),
    ],
)
def test_should_start(now: str, last: str | None, flags: dict[str, bool], expected: object) -> None:
    assert go(MONTHLY, now, last, **flags) == expected


def test_no_schedule_never_starts() -> None:
    assert go(DrillSettings(), "2026-12-01T03:00:00") == (False, "NOT_SCHEDULED")


def test_blackout_holds_a_due_drill_until_it_ends() -> None:
    # 2026-12-01 is a Tuesday; business hours are blacked out.
    s = DrillSettings(
        schedule="0 9 1 * *",
        blackout=[Blackout(days=["mon", "tue", "wed", "thu", "fri"], start="08:00", end="18:00")],
    )
    assert go(s, "2026-12-01T09:00:00") == (False, "BLACKOUT")
    assert go(s, "2026-12-01T17:59:00") == (False, "BLACKOUT")
    assert go(s, "2026-12-01T18:00:00") == (True, "START")


def test_blackout_across_midnight() -> None:
    w = [Blackout(days=["fri"], start="22:00", end="02:00")]
    assert in_blackout(w, ts("2026-11-27T23:00:00"))  # Friday night
    assert in_blackout(w, ts("2026-11-28T01:59:00"))  # Saturday, before 02:00
    assert in_blackout(w, ts("2026-11-28T02:00:00")) is None
    assert in_blackout(w, ts("2026-11-26T23:00:00")) is None  # Thursday


def test_bad_cron_and_times_are_config_errors() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not a valid cron expression"):
        DrillSettings(schedule="every month")
    with pytest.raises(ValidationError, match="HH:MM"):
        Blackout(start="25:00", end="01:00")
