"""Shared pieces of the benchmarks (``make bench``): statistics, a sandbox in a fresh /tmp
directory on a reserved block of ports, the benchmark configuration (the documented default probe
settings), and the in-process daemon with a recorder of every tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestrator.app import run_daemon
from orchestrator.config import Config, load_config
from orchestrator.model import Assessment, Snapshot
from orchestrator.sandbox import Sandbox
from orchestrator.sandbox.scratch import scratch_sandbox

# Probe settings: the documented defaults (also those of the sandbox's generated config).
INTERVAL = 1.0
TIMEOUT = 0.8
FAILURE_THRESHOLD = 3
RECOVERY_THRESHOLD = 3

PRIMARY_REGION = "us-east"
PRIMARY = "us-east-1"

"""Ports per sandbox, as tests/integration/conftest.py reserves them: PostgreSQL service port,
metrics at +3, the DNS stack at +10..+15."""


def progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass(frozen=True)
class Dist:
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    def p(self, q: float) -> float:
        return percentile(self.values, q)

    @property
    def min(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def max(self) -> float:
        return max(self.values) if self.values else math.nan

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def sec(seconds: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.{digits}f} s"


# --- sandbox on free ports -------------------------------------------------------------------


@contextlib.contextmanager
def sandbox_in_tmp(label: str = "") -> Iterator[Sandbox]:
    """A scratch sandbox (shared with the integration tests) that waits up to 120 s for a free
    port block while other sessions use this machine, and reports its progress."""
    with scratch_sandbox(
        "helios-bench-", wait_for_ports=120.0, progress=lambda m: progress(f"{label}{m}")
    ) as sb:
        yield sb


def bench_config(sb: Sandbox, automatic: bool = True) -> Config:
    """The sandbox's generated config with the default probe settings and port 0; with
    ``automatic=False``, ``failover.automatic: false`` (a lost primary is escalated, not failed
    over), for benchmarks that kill the primary and start it again."""
    data = yaml.safe_load(Path(sb.config_path()).read_text())
    if not automatic:
        data.setdefault("failover", {})["automatic"] = False
    data["probes"].update(
        {
            "interval": INTERVAL,
            "timeout": TIMEOUT,
            "failure_threshold": FAILURE_THRESHOLD,
            "recovery_threshold": RECOVERY_THRESHOLD,
        }
    )
    data["listen"]["port"] = 0
    path = Path(sb.config_path()).with_name("bench.yaml")
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


# --- the in-process daemon -------------------------------------------------------------------


class Interrupted(Exception):
    """The daemon stopped (SIGINT/SIGTERM set its stop event) before the benchmark ended."""


@dataclass(frozen=True)
class Tick:
    mono: float
    """Monotonic clock when the on_cycle hook ran (the end of the tick)."""
    wall: float
    snap: Snapshot
    a: Assessment

    @property
    def duration(self) -> float:
        """From the start of the tick (``snapshot.at``) to the hook: probes, judgement,
        heartbeat write, metrics and log line."""
        return self.wall - self.snap.at

    @property
    def start_mono(self) -> float:
        return self.mono - self.duration


@dataclass
class Recorder:
    """The on_cycle hook: keeps every tick; wakes waiters on each."""

    stop: asyncio.Event
    ticks: list[Tick] = field(default_factory=list)
    port: int | None = None
    task: asyncio.Task[None] | None = None
    _new_tick: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, snap: Snapshot, a: Assessment) -> None:
        self.ticks.append(Tick(time.monotonic(), time.time(), snap, a))
        self._new_tick.set()

    def listening(self, port: int) -> None:
        self.port = port

    def _check_running(self) -> None:
        if self.task is not None and self.task.done():
            exc = None if self.task.cancelled() else self.task.exception()
            if exc is not None:
                raise RuntimeError(f"the daemon failed: {exc!r}") from exc
            raise Interrupted("the daemon stopped before the benchmark finished")
        if self.stop.is_set():
            raise Interrupted("interrupted (stop requested)")

    async def next_tick(self, timeout: float = 10.0) -> Tick:
        """Wait for the next tick to complete."""
        seen = len(self.ticks)
        deadline = time.monotonic() + timeout
        while len(self.ticks) <= seen:
            self._check_running()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no tick completed within {timeout:g}s")
            self._new_tick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.25)):
                    await self._new_tick.wait()
        return self.ticks[seen]

    async def until(
        self, pred: Callable[[Assessment], bool], timeout: float, after: float = 0.0, what: str = ""
    ) -> Tick:
        """The first tick ending at or after ``after`` (monotonic) whose assessment matches."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for t in self.ticks[seen:]:
                if t.mono >= after and pred(t.a):
                    return t
            seen = len(self.ticks)
            self._check_running()
            if time.monotonic() >= deadline:
                last = self.ticks[-1].a if self.ticks else None
                raise TimeoutError(
                    f"{what or 'condition'} not met within {timeout:g}s; last tick: "
                    f"{last.reason if last else None}: {last.sentence if last else ''}"
                )
            with contextlib.suppress(TimeoutError):
                self._new_tick.clear()
                async with asyncio.timeout(0.25):
                    await self._new_tick.wait()

    async def collect(self, n: int) -> list[Tick]:
        """The next ``n`` ticks."""
        first = len(self.ticks)
        while len(self.ticks) < first + n:
            await self.next_tick()
        return self.ticks[first : first + n]

    async def all_healthy(self, timeout: float = 30.0, after: float = 0.0) -> Tick:
        return await self.until(
            lambda a: a.reason == "ALL_HEALTHY", timeout, after=after, what="ALL_HEALTHY"
        )


async def timed_call(fn: Callable[[], None]) -> tuple[float, float]:
    """Run a blocking sandbox call in a thread (the daemon keeps ticking meanwhile).

    Returns (monotonic time just before the call, seconds the call took)."""
    box: list[float] = []

    def run() -> None:
        box.append(time.monotonic())
        fn()
        box.append(time.monotonic())

    await asyncio.to_thread(run)
    return box[0], box[1] - box[0]


@contextlib.asynccontextmanager
async def running_daemon(cfg: Config, ready_timeout: float = 30.0) -> AsyncIterator[Recorder]:
    """The daemon (:func:`orchestrator.app.run_daemon`) in this event loop, with a
    :class:`Recorder` as its ``on_cycle`` hook; yields once every region is HEALTHY and three
    more ticks have passed (connections open, heartbeats replayed). Stopped on exit."""
    stop = asyncio.Event()
    rec = Recorder(stop=stop)
    rec.task = asyncio.create_task(
        run_daemon(cfg, stop=stop, on_cycle=rec, on_listening=rec.listening), name="daemon"
    )
    try:
        await rec.all_healthy(timeout=ready_timeout)
        await rec.collect(3)
        yield rec
    finally:
        stop.set()
        try:
            await asyncio.wait_for(rec.task, timeout=40)
        except TimeoutError:
            progress("WARNING: the daemon did not stop within 40s")
        except Exception as exc:  # reported by the caller's checks; never mask its own error
            progress(f"WARNING: the daemon ended with {exc!r}")


class ReasonLog(logging.Handler):
    """A root-logger handler that keeps ``(monotonic time, reason code)`` of every log record
    (warning and above) of this process that carries a reason, e.g. the daemon's
    ``STALE_PRIMARY_FENCED``. Install once with :func:`install_reason_log`."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.events: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.msg
        if isinstance(msg, dict) and "reason" in msg:
            self.events.append((time.monotonic(), str(msg["reason"])))

    def between(self, start: float, end: float) -> dict[str, int]:
        out: dict[str, int] = {}
        for at, reason in list(self.events):
            if start <= at <= end:
                out[reason] = out.get(reason, 0) + 1
        return out


REASONS = ReasonLog()


def install_reason_log() -> None:
    root = logging.getLogger()
    if REASONS not in root.handlers:
        root.addHandler(REASONS)
