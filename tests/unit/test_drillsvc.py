"""The daemon's drill scheduler: starts the drill when due, never during an incident, while
paused or busy, and persists its bookkeeping so a restart neither skips nor repeats."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from orchestrator.config import Config, parse_config
from orchestrator.controls import acquire_drill, release_drill, save_controls
from orchestrator.decision import Controls
from orchestrator.drillsvc import DrillScheduler, load_book


def config(tmp_path: Path, **drill: Any) -> Config:
    return parse_config(
        {
            "service": "helios-db",
            "state_dir": str(tmp_path),
            "regions": [
                {
                    "name": "us-east",
                    "priority": 1,
                    "nodes": [{"name": "us-east-1", "dsn": "host=10.0.0.1"}],
                }
            ],
            "drill": {"schedule": "* * * * *", **drill},
        }
    )


class Flags:
    def __init__(self) -> None:
        self.incident = False
        self.busy = False
        self.runs = 0

    async def run(self) -> dict[str, Any]:
        self.runs += 1
        return {"id": f"drill-{self.runs}", "result": "passed"}


async def test_due_drill_waits_for_the_incident_then_runs_once(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    f = Flags()
    sched = DrillScheduler(cfg, f.run, lambda: f.incident, lambda: f.busy)
    book = {"since": time.time() - 120, "last_attempt": None}

    f.incident = True
    assert not await sched.check(book) and sched.last_reason == "INCIDENT_OPEN"
    f.incident, f.busy = False, True
    assert not await sched.check(book) and sched.last_reason == "BUSY"
    f.busy = False
    save_controls(tmp_path, Controls(paused=True))
    assert not await sched.check(book) and sched.last_reason == "PAUSED"
    save_controls(tmp_path, Controls(paused=False))
    acquire_drill(tmp_path, "drill-cli", time.time() + 60)  # a drill run from the CLI
    assert not await sched.check(book) and sched.last_reason == "BUSY"
    release_drill(tmp_path, "drill-cli")

    assert await sched.check(book) and f.runs == 1
    # the attempt is persisted: the same occurrence does not run again after a restart
    saved = json.loads((tmp_path / "drill-schedule.json").read_text())
    assert saved["last_attempt"] == book["last_attempt"]
    again = load_book(str(tmp_path), time.time())
    assert not await sched.check(again) and f.runs == 1
    assert sched.last_reason == "NOT_DUE" and sched.next_due is not None


async def test_blackout_window_holds_the_drill(tmp_path: Path) -> None:
    now = time.gmtime()
    start = now.tm_hour * 60 + now.tm_min
    end = (start + 5) % (24 * 60)  # a window around now (it may span midnight)
    hhmm = [f"{m // 60:02d}:{m % 60:02d}" for m in (start, end)]
    cfg = config(tmp_path, blackout=[{"start": hhmm[0], "end": hhmm[1]}])
    f = Flags()
    sched = DrillScheduler(cfg, f.run, lambda: False, lambda: False)
    assert not await sched.check({"since": time.time() - 120, "last_attempt": None})
    assert sched.last_reason == "BLACKOUT" and f.runs == 0


async def test_a_failing_drill_is_logged_not_raised(tmp_path: Path) -> None:
    cfg = config(tmp_path)

    async def boom() -> dict[str, Any]:
        raise RuntimeError("sandbox gone")

    sched = DrillScheduler(cfg, boom, lambda: False, lambda: False)
    assert await sched.check({"since": time.time() - 120, "last_attempt": None})
