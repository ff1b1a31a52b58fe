"""An in-process daemon on the sandbox, with a recorder of every tick (shared by tests)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.app import run_daemon
from orchestrator.config import Config, load_config
from orchestrator.model import Assessment, Snapshot

INTERVAL = 0.5
TIMEOUT = 0.3
THRESHOLD = 3


def fast_config(
    sandbox: Any, dns: dict[str, Any] | None = None, automatic: bool = False, **probes: Any
) -> Config:
    """The sandbox's generated config with fast ticks and a free metrics port.

    Automatic failover is off unless asked for: detection tests on the shared sandbox must
    not move its primary."""
    data = yaml.safe_load(Path(sandbox.config_path()).read_text())
    data.setdefault("failover", {})["automatic"] = automatic
    if dns is not None:
        data["dns"].update(dns)
    data["probes"].update(
        {
            "interval": INTERVAL,
            "timeout": TIMEOUT,
            "failure_threshold": THRESHOLD,
            "recovery_threshold": 3,
            **probes,
        }
    )
    data["listen"]["port"] = 0
    path = Path(sandbox.config_path()).with_name("fast.yaml")
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


@dataclass
class Recorder:
    """Collects (monotonic time, assessment) per tick from the running daemon."""

    ticks: list[tuple[float, Snapshot, Assessment]] = field(default_factory=list)
    port: int | None = None

    def __call__(self, snap: Snapshot, a: Assessment) -> None:
        self.ticks.append((time.monotonic(), snap, a))

    @property
    def last(self) -> Assessment:
        return self.ticks[-1][2]

    async def until(
        self, pred: Callable[[Assessment], bool], timeout: float, after: float = 0.0
    ) -> tuple[float, Assessment]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for t, _, a in self.ticks[seen:]:
                if t >= after and pred(a):
                    return t, a
            seen = len(self.ticks)
            await asyncio.sleep(0.02)
        last = self.ticks[-1][2] if self.ticks else None
        raise AssertionError(
            f"condition not met within {timeout}s; last tick: "
            f"{last.reason if last else None} {last.sentence if last else ''}"
        )


@contextlib.asynccontextmanager
async def daemon(cfg: Config) -> AsyncIterator[Recorder]:
    rec = Recorder()
    stop = asyncio.Event()

    def listening(port: int) -> None:
        rec.port = port

    task = asyncio.create_task(run_daemon(cfg, stop=stop, on_cycle=rec, on_listening=listening))
    try:
        await rec.until(lambda a: a.reason == "ALL_HEALTHY", timeout=30)
        yield rec
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
