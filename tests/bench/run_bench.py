"""Benchmark of the daemon against a real three-region sandbox (``make bench``).

Runs the daemon in this process (:func:`orchestrator.app.run_daemon`) with the default probe
settings against sandboxes in fresh 0755 directories under /tmp, each on its own reserved block
of 16 ports, and measures:

1. ``steady``: probe latency per role, tick duration and period, memory;
2. ``detection``: SIGKILL and SIGSTOP ("hang") of the primary until it is judged DOWN, and from
   restart/resume until it is HEALTHY again;
3. ``lag``: lag accuracy with a 5 s ``recovery_min_apply_delay`` on us-west under a write load;
4. ``failover``, ``failover-sync``, ``switchover`` (:mod:`tests.bench.failover`): write
   unavailability and acknowledged commits lost through the service name when the primary is
   killed (asynchronous and synchronous replication) and in a planned switchover; 5 runs each,
   every run on a fresh sandbox;
5. ``drill`` (:mod:`tests.bench.drill`): the monthly DR drill as ``orchestrator drill`` runs it,
   a switchover drill and a failover drill, both with failback; RTO, RPO, write unavailability
   and lost commits per leg, the runbook steps' durations, the drill's duration and result;
   3 runs each, every run on a fresh sandbox.
6. ``leader`` (:mod:`tests.bench.leader`): leader election and fencing on a real three-member
   etcd cluster with the default production timing: handover after a clean stop, after a
   SIGKILL of the leader's process and when the leader is partitioned; the local step-down of a
   leader cut off from etcd; lease renewal latency; the node agent's self-fence when etcd
   freezes and the leader's fence request through the agent (fresh sandboxes); 3 trials each.

Parts 1-3 share one sandbox. ``--only PART[,PART...]`` runs a selection (default: all);
``--runs N`` sets the runs per scenario of parts 4-6 (e.g. 1 for a quick check). The results
are printed as Markdown. With ``--write FILE`` a full run replaces FILE entirely; a partial run
replaces (or adds) only the sections of the parts that ran in an existing FILE and leaves the
rest byte for byte, with a note in each replaced section (see :func:`merge_sections`). Every
sandbox, etcd member and agent is stopped at the end, also on failure or Ctrl-C; nothing is left
running.

Run from the repository root: ``python -m tests.bench.run_bench --write BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import math
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from orchestrator.errors import SandboxError
from orchestrator.model import Verdict
from orchestrator.observability.logging import configure_logging
from orchestrator.sandbox import Sandbox, find_pg_binaries
from tests.bench import drill, failover, leader
from tests.bench.common import (
    FAILURE_THRESHOLD,
    INTERVAL,
    PRIMARY,
    PRIMARY_REGION,
    RECOVERY_THRESHOLD,
    TIMEOUT,
    Dist,
    Interrupted,
    Recorder,
    bench_config,
    install_reason_log,
    ms,
    progress,
    running_daemon,
    sandbox_in_tmp,
    sec,
    timed_call,
)
from tests.bench.failover import Series

DOWN_BOUND = INTERVAL * FAILURE_THRESHOLD + INTERVAL  # "interval x threshold plus one tick"

STEADY_TICKS = 30
TRIALS = 5
LAG_DELAY = 5.0
LAG_TICKS = 15

DELAYED_REGION = "us-west"
DELAYED = "us-west-1"
OTHER_REPLICA = "eu-1"
REPLICAS = ("us-west-1", "eu-1")

SHARED_PARTS = ("steady", "detection", "lag")
"""Parts run one after the other on one shared sandbox with one daemon."""
SERIES_PARTS = ("failover", "failover-sync", "switchover")
"""Parts whose every run has a fresh sandbox of its own."""
DRILL_PART = "drill"
"""Drills (switchover and failover, with failback), every run on a fresh sandbox of its own."""
LEADER_PART = "leader"
"""Leader election and fencing on its own etcd cluster (fresh sandboxes for the agent)."""
PARTS = (*SHARED_PARTS, *SERIES_PARTS, DRILL_PART, LEADER_PART)
SECTION_OF = {
    "steady": 1,
    "detection": 2,
    "lag": 3,
    **dict.fromkeys(SERIES_PARTS, 4),
    DRILL_PART: 5,
    LEADER_PART: 6,
}
"""The report section (``## N.``) of each part."""


# --- 1. steady state -------------------------------------------------------------------------


@dataclass(frozen=True)
class Steady:
    ticks: int
    primary_latency: Dist
    replica_latency: Dist
    failed_probes: int
    tick_duration: Dist
    tick_period: Dist
    rss_kib: int
    hwm_kib: int
    histogram_mean: float
    histogram_count: int
    reasons: dict[str, int]


def proc_status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return -1


async def scrape_cycle_histogram(port: int) -> tuple[float, int]:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    total, count = math.nan, 0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "helios_cycle_duration_seconds_sum":
                total = s.value
            elif s.name == "helios_cycle_duration_seconds_count":
                count = int(s.value)
    return (total / count if count else math.nan), count


async def scrape_counter(port: int, name: str) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return int(
        sum(
            s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name == name
        )
    )


async def measure_steady(rec: Recorder) -> Steady:
    progress(f"steady state: recording {STEADY_TICKS} ticks")
    ticks = await rec.collect(STEADY_TICKS)
    primary: list[float] = []
    replica: list[float] = []
    failed = 0
    for t in ticks:
        for s in t.snap.samples:
            if not s.database.ok:
                failed += 1
                continue
            if s.node.name == PRIMARY:
                primary.append(s.database.latency)
            elif s.node.name in REPLICAS:
                replica.append(s.database.latency)
    periods = [b.snap.at - a.snap.at for a, b in itertools.pairwise(ticks)]
    reasons: dict[str, int] = {}
    for t in ticks:
        reasons[t.a.reason] = reasons.get(t.a.reason, 0) + 1
    assert rec.port is not None
    hist_mean, hist_count = await scrape_cycle_histogram(rec.port)
    return Steady(
        ticks=len(ticks),
        primary_latency=Dist(tuple(primary)),
        replica_latency=Dist(tuple(replica)),
        failed_probes=failed,
        tick_duration=Dist(tuple(t.duration for t in ticks)),
        tick_period=Dist(tuple(periods)),
        rss_kib=proc_status_kib("VmRSS"),
        hwm_kib=proc_status_kib("VmHWM"),
        histogram_mean=hist_mean,
        histogram_count=hist_count,
        reasons=reasons,
    )


# --- 2. detection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    failure: str  # "kill" | "hang"
    index: int
    phase: float
    """Seconds after the start of a tick at which the failure was injected."""
    detect: float
    """Failure -> end of the first tick judging the primary DOWN."""
    first_suspect: float
    down_reason: str
    failed_ticks: int
    restore_call: float
    """Seconds the start/unhang call took."""
    recover: float
    """start/unhang issued -> end of the first tick judging the primary HEALTHY again."""
    restore_phase: float
    """Seconds after the start of a tick at which start/unhang was called."""
    recovering_ticks: int
    all_healthy: float
    """start/unhang issued -> the first ALL_HEALTHY tick."""


async def run_trial(sb: Sandbox, rec: Recorder, failure: str, index: int) -> Trial:
    await rec.all_healthy()
    # Spread the injection points evenly over the tick: the phase decides the detection time.
    phase = (index + 0.5) / TRIALS * INTERVAL
    tick = await rec.next_tick()
    target = tick.start_mono + INTERVAL + phase
    await asyncio.sleep(max(0.0, target - time.monotonic()))
    inject = sb.kill if failure == "kill" else sb.hang
    restore = sb.start if failure == "kill" else sb.unhang
    t_fail, _ = await timed_call(lambda: inject(PRIMARY_REGION))
    actual_phase = (t_fail - tick.start_mono) % INTERVAL
    try:
        down = await rec.until(
            lambda a: a.node(PRIMARY).verdict is Verdict.DOWN,
            timeout=30,
            after=t_fail,
            what="primary DOWN",
        )
        # Restore at the same spread of phases: it decides how long the recovery takes.
        target = down.start_mono + INTERVAL + phase
        await asyncio.sleep(max(0.0, target - time.monotonic()))
    finally:
        t_back, call = await timed_call(lambda: restore(PRIMARY_REGION))
    restore_phase = (t_back - down.start_mono) % INTERVAL
    suspect = next(
        t
        for t in rec.ticks
        if t.mono >= t_fail and t.a.node(PRIMARY).verdict is not Verdict.HEALTHY
    )
    failed_ticks = sum(
        1
        for t in rec.ticks
        if t_fail <= t.mono <= down.mono
        and (s := t.snap.sample(PRIMARY)) is not None
        and not s.database.ok
    )
    ok = await rec.until(
        lambda a: a.node(PRIMARY).verdict is Verdict.HEALTHY,
        timeout=30,
        after=t_back,
        what="primary HEALTHY",
    )
    recovering = sum(
        1
        for t in rec.ticks
        if t_back <= t.mono < ok.mono and t.a.node(PRIMARY).reason == "NODE_RECOVERING"
    )
    healthy = await rec.all_healthy(after=t_back)
    trial = Trial(
        failure=failure,
        index=index + 1,
        phase=actual_phase,
        detect=down.mono - t_fail,
        first_suspect=suspect.mono - t_fail,
        down_reason=down.a.node(PRIMARY).reason,
        failed_ticks=failed_ticks,
        restore_call=call,
        recover=ok.mono - t_back,
        restore_phase=restore_phase,
        recovering_ticks=recovering,
        all_healthy=healthy.mono - t_back,
    )
    progress(
        f"  {failure} #{trial.index}: injected {trial.phase:.2f}s into a tick, DOWN after "
        f"{trial.detect:.2f}s ({trial.down_reason}), HEALTHY {trial.recover:.2f}s after "
        f"{'start' if failure == 'kill' else 'unhang'}"
    )
    return trial


async def measure_detection(sb: Sandbox, rec: Recorder) -> list[Trial]:
    trials = []
    for failure in ("kill", "hang"):
        progress(f"detection: {TRIALS} x {failure} of the primary")
        for i in range(TRIALS):
            trials.append(await run_trial(sb, rec, failure, i))
    return trials


# --- 3. lag accuracy -------------------------------------------------------------------------


class WriteLoad:
    """Single-row autocommit INSERTs on the primary in a loop, in a thread of its own."""

    def __init__(self, dsn: str, password: str) -> None:
        self._dsn = dsn
        self._password = password
        self._stop = threading.Event()
        self.commits = 0
        self.started = 0.0
        self.ended = 0.0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-write-load", daemon=True)

    def _run(self) -> None:
        try:
            with psycopg.connect(self._dsn, password=self._password, autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS bench_load (id bigserial PRIMARY KEY, v text)"
                )
                self.started = time.monotonic()
                while not self._stop.is_set():
                    conn.execute("INSERT INTO bench_load (v) VALUES (repeat('x', 200))")
                    self.commits += 1
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    @property
    def rate(self) -> float:
        elapsed = self.ended - self.started
        return self.commits / elapsed if elapsed > 0 else math.nan


def set_apply_delay(sb: Sandbox, value: str | None) -> None:
    """ALTER SYSTEM (or RESET) recovery_min_apply_delay on us-west, then reload."""
    with psycopg.connect(sb.dsn(DELAYED_REGION), password=sb.password(), autocommit=True) as conn:
        if value is None:
            conn.execute("ALTER SYSTEM RESET recovery_min_apply_delay")
        else:
            conn.execute(
                sql.SQL("ALTER SYSTEM SET recovery_min_apply_delay = {}").format(sql.Literal(value))
            )
        conn.execute("SELECT pg_reload_conf()")


@dataclass(frozen=True)
class Lag:
    delay: float
    delayed: Dist
    delayed_missing: int
    delayed_bytes: Dist
    other: Dist
    other_missing: int
    delayed_verdicts: dict[str, int]
    ramp: float
    """Delay set -> first tick where us-west's lag reached the delay."""
    clear: float
    """Delay reset -> first tick where us-west's lag read 0 again."""
    commits: int
    commit_rate: float
    load_seconds: float


async def measure_lag(sb: Sandbox, rec: Recorder) -> Lag:
    progress(f"lag: {LAG_DELAY:g}s apply delay on {DELAYED_REGION} under a write load")
    await rec.all_healthy()
    load = WriteLoad(sb.dsn(PRIMARY_REGION), sb.password())
    load.start()
    delay_set = False
    try:
        await rec.collect(2)
        t_set, _ = await timed_call(lambda: set_apply_delay(sb, f"{int(LAG_DELAY * 1000)}ms"))
        delay_set = True
        reached = await rec.until(
            lambda a: (a.node(DELAYED).lag_seconds or 0.0) >= LAG_DELAY,
            timeout=30,
            after=t_set,
            what=f"{DELAYED} lag >= {LAG_DELAY:g}s",
        )
        # The window: the LAG_TICKS ticks after the one where the lag first reached the delay.
        ticks = await rec.collect(LAG_TICKS)
        t_reset, _ = await timed_call(lambda: set_apply_delay(sb, None))
        delay_set = False
        cleared = await rec.until(
            lambda a: a.node(DELAYED).lag_seconds == 0.0,
            timeout=30,
            after=t_reset,
            what=f"{DELAYED} lag back to 0",
        )
    finally:
        await asyncio.to_thread(load.stop)
        if delay_set:
            await asyncio.to_thread(set_apply_delay, sb, None)
    if load.error is not None:
        raise RuntimeError(f"the write load failed: {load.error!r}") from load.error
    await rec.all_healthy()

    def lags(node: str) -> tuple[list[float], int]:
        got = [t.a.node(node).lag_seconds for t in ticks]
        return [x for x in got if x is not None], sum(1 for x in got if x is None)

    delayed, delayed_missing = lags(DELAYED)
    other, other_missing = lags(OTHER_REPLICA)
    lag_bytes = [b for t in ticks if (b := t.a.node(DELAYED).lag_bytes) is not None]
    verdicts: dict[str, int] = {}
    for t in ticks:
        v = t.a.node(DELAYED).verdict.value
        verdicts[v] = verdicts.get(v, 0) + 1
    return Lag(
        delay=LAG_DELAY,
        delayed=Dist(tuple(delayed)),
        delayed_missing=delayed_missing,
        delayed_bytes=Dist(tuple(float(b) for b in lag_bytes)),
        other=Dist(tuple(other)),
        other_missing=other_missing,
        delayed_verdicts=verdicts,
        ramp=reached.mono - t_set,
        clear=cleared.mono - t_reset,
        commits=load.commits,
        commit_rate=load.rate,
        load_seconds=load.ended - load.started,
    )


# --- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    parts: tuple[str, ...]
    steady: Steady | None = None
    trials: list[Trial] = field(default_factory=list)
    lag: Lag | None = None
    rss_end_kib: int = 0
    hwm_end_kib: int = 0
    ticks: int = 0
    cycle_errors: int = 0
    series: dict[str, Series] = field(default_factory=dict)
    drills: dict[str, drill.DrillSeries] = field(default_factory=dict)
    election: leader.LeaderPart | None = None

    @property
    def shared(self) -> bool:
        """Whether a part on the shared sandbox (steady, detection, lag) ran."""
        return any(p in SHARED_PARTS for p in self.parts)


async def run_shared(sb: Sandbox, parts: tuple[str, ...]) -> Results:
    """Sections 1-3 on one sandbox with one daemon."""
    # The detection trials kill or hang the primary and bring it back: automatic failover
    # would (rightly) promote a replica instead. It is measured in section 4.
    cfg = bench_config(sb, automatic=False)
    progress("daemon started (failover.automatic: false); waiting for ALL_HEALTHY")
    async with running_daemon(cfg) as rec:
        steady = await measure_steady(rec) if "steady" in parts else None
        trials = await measure_detection(sb, rec) if "detection" in parts else []
        lag = await measure_lag(sb, rec) if "lag" in parts else None
        assert rec.port is not None
        cycle_errors = await scrape_counter(rec.port, "helios_cycle_errors_total")
        ticks = len(rec.ticks)
    return Results(
        parts,
        steady,
        trials,
        lag,
        rss_end_kib=proc_status_kib("VmRSS"),
        hwm_end_kib=proc_status_kib("VmHWM"),
        ticks=ticks,
        cycle_errors=cycle_errors,
    )


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    date: str
    nproc: int
    cpu: str
    ram_gib: float
    kernel: str
    python: str
    postgres: str
    load_start: float
    load_end: float
    runtime: float


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return math.nan


def postgres_version() -> str:
    out = subprocess.run(
        [find_pg_binaries().postgres, "--version"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return out.stdout.strip() or f"unknown ({out.stderr.strip()})"


def dist_row(name: str, d: Dist, fmt: Callable[[float], str]) -> str:
    return f"| {name} | {d.n} | {fmt(d.p(0.5))} | {fmt(d.p(0.95))} | {fmt(d.max)} |"


def findings(r: Results) -> list[str]:
    """Anomalies worth a reader's attention, computed from the numbers (never hidden)."""
    return [f for section in sorted(_findings_by_section(r).items()) for f in section[1]]


def _findings_by_section(r: Results) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    if r.steady is not None:
        out[1] = _steady_findings(r.steady)
    if r.trials:
        out[2] = _detection_findings(r.trials)
    if r.lag is not None:
        out[3] = _lag_findings(r.lag)
    if r.shared and r.cycle_errors:
        first = min(SECTION_OF[p] for p in r.parts if p in SHARED_PARTS)
        out.setdefault(first, []).append(
            f"{r.cycle_errors} tick(s) failed unexpectedly (helios_cycle_errors_total)."
        )
    if r.series:
        out[4] = failover.findings(r.series)
    if r.drills:
        out[5] = drill.findings(r.drills)
    if r.election is not None:
        out[6] = leader.findings(r.election)
    return out


def _steady_findings(s: Steady) -> list[str]:
    out = []
    if s.failed_probes:
        out.append(f"{s.failed_probes} probe(s) failed during the steady-state window.")
    if any(k != "ALL_HEALTHY" for k in s.reasons):
        out.append(f"Steady-state ticks were not all ALL_HEALTHY: {s.reasons}.")
    if s.tick_duration.max > TIMEOUT:
        out.append(
            f"A steady-state tick took {sec(s.tick_duration.max, 3)}, above the probe timeout."
        )
    if s.tick_period.n and abs(s.tick_period.max - INTERVAL) > 0.1:
        out.append(f"Tick period deviated from {INTERVAL:g}s: max {sec(s.tick_period.max, 3)}.")
    return out


def _detection_findings(trials: list[Trial]) -> list[str]:
    out = []
    for t in trials:
        if t.detect > DOWN_BOUND:
            out.append(
                f"{t.failure} #{t.index}: DOWN after {sec(t.detect)}, above the "
                f"{DOWN_BOUND:g}s bound."
            )
        if t.detect < INTERVAL * (FAILURE_THRESHOLD - 1):
            out.append(f"{t.failure} #{t.index}: DOWN after only {sec(t.detect)} (too early?).")
        if t.recovering_ticks < RECOVERY_THRESHOLD - 1:
            out.append(
                f"{t.failure} #{t.index}: only {t.recovering_ticks} NODE_RECOVERING tick(s) "
                "before HEALTHY."
            )
    return out


def _lag_findings(lag: Lag) -> list[str]:
    out = []
    if lag.delayed_missing:
        out.append(f"{DELAYED}: lag not measured in {lag.delayed_missing} tick(s) of the window.")
    if lag.delayed.n and lag.delayed.min < lag.delay - 0.05:
        out.append(
            f"{DELAYED}: lag read {sec(lag.delayed.min)}, below the injected {lag.delay:g}s "
            "(the heartbeat lag is documented as an upper bound)."
        )
    if lag.delayed.n and lag.delayed.max > lag.delay + INTERVAL + 0.05:
        out.append(
            f"{DELAYED}: lag read {sec(lag.delayed.max)}, more than one interval above the "
            f"injected {lag.delay:g}s (the documented accuracy is one interval)."
        )
    if lag.delayed.n and abs(lag.delayed.mean - lag.delay) > INTERVAL / 2:
        out.append(
            f"{DELAYED}: the mean reading ({sec(lag.delayed.mean)}) is "
            f"{sec(lag.delayed.mean - lag.delay)} off the injected {lag.delay:g}s: within the "
            "documented one-interval accuracy, but a systematic bias rather than noise "
            f"(readings {sec(lag.delayed.min, 3)}-{sec(lag.delayed.max, 3)})."
        )
    if lag.other.n and lag.other.max > 0.0:
        out.append(f"{OTHER_REPLICA}: lag was not 0 in every tick (max {sec(lag.other.max)}).")
    if lag.other_missing:
        out.append(f"{OTHER_REPLICA}: lag not measured in {lag.other_missing} tick(s).")
    return out


def render(m: Machine, r: Results) -> str:
    lines: list[str] = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add(
        "> **Generated file** — written by `make bench` (`tests/bench/run_bench.py`); a full run "
        "replaces it entirely, a partial run (`--only PART`) only the sections of its parts. Do "
        "not edit by hand."
    )
    add("")
    add(f"Run of {m.date} (total {m.runtime:.0f} s, sandbox creation included).")
    if r.parts != PARTS:
        add(
            f"Partial run (`--only {','.join(r.parts)}`): the sections of the other parts "
            f"({', '.join(p for p in PARTS if p not in r.parts)}) are missing."
        )
    add("")
    add("## Machine and setup")
    add("")
    add("| | |")
    add("|---|---|")
    add(f"| CPUs (nproc) | {m.nproc} ({m.cpu}) |")
    add(f"| RAM | {m.ram_gib:.1f} GiB |")
    add(f"| kernel | {m.kernel} |")
    add(f"| Python | {m.python} |")
    add(f"| PostgreSQL | {m.postgres} |")
    add(f"| load average (1 min), start / end | {m.load_start:.2f} / {m.load_end:.2f} |")
    add(
        f"| probes | interval {INTERVAL:g} s, timeout {TIMEOUT:g} s, failure threshold "
        f"{FAILURE_THRESHOLD}, recovery threshold {RECOVERY_THRESHOLD}, heartbeat on |"
    )
    add("")
    add(
        "The sandbox (primary `us-east`, streaming replicas `us-west` and `eu`, and the DNS "
        "stand-ins) runs on this machine on loopback ports, in a fresh directory under /tmp "
        "(sections 1-3 share one; every run of sections 4 and 5 has its own; section 6 runs "
        "its own etcd cluster, and fresh sandboxes for the node agent); the daemon "
        "(`orchestrator.app.run_daemon`) runs inside the benchmark process, with the sandbox's "
        "generated configuration and the probe settings above (in sections 1-3 with "
        "`failover.automatic: false`: their trials kill or freeze the primary and bring it "
        "back, where automatic failover would promote a replica instead; section 4 measures "
        "that; section 5 runs drills as `orchestrator drill` does, without the daemon). "
        "Everything shares the CPUs: "
        "the numbers include that contention (see the load average)."
    )
    add("")
    if r.steady is not None:
        lines.extend(_render_steady(r, r.steady))
    if r.trials:
        lines.extend(_render_detection(r))
    if r.lag is not None:
        lines.extend(_render_lag(r.lag))
    if r.series:
        lines.extend(failover.render_section(r.series))
    if r.drills:
        lines.extend(drill.render_section(r.drills))
    if r.election is not None:
        lines.extend(leader.render_section(r.election))
    add("## Findings")
    add("")
    add(
        "Computed from the numbers above: anything outside a documented bound or a target, "
        "failed probes, ticks or runs, and systematic biases."
    )
    add("")
    found = findings(r)
    if found:
        lines.extend(f"- {f}" for f in found)
    else:
        add("- Nothing: every figure is within its documented bound, without systematic bias.")
    add("")
    return "\n".join(lines)


def _render_steady(r: Results, s: Steady) -> list[str]:
    lines: list[str] = []
    add = lines.append
    add("## 1. Steady state")
    add("")
    add(
        f"Once every region is HEALTHY, {s.ticks} consecutive ticks are recorded through the "
        "`on_cycle` hook. Probe latency is the `latency` of each database observation in the "
        "snapshot (connect if needed, then the probe's SQL); tick duration is from the tick's "
        "start (`snapshot.at`) to the hook call (probes, judgement, heartbeat write, metrics, "
        "log line); the period is the time between two tick starts. Memory is the resident set "
        "of the benchmark process, which includes the daemon, the psycopg connections and the "
        "benchmark itself."
    )
    add("")
    add("| measure | n | p50 | p95 | max |")
    add("|---|---|---|---|---|")
    add(dist_row(f"probe latency, primary (`{PRIMARY}`)", s.primary_latency, ms))
    add(dist_row(f"probe latency, replicas (`{'`, `'.join(REPLICAS)}`)", s.replica_latency, ms))
    add(dist_row("tick duration", s.tick_duration, ms))
    add(dist_row("tick period (start to start)", s.tick_period, lambda x: sec(x, 3)))
    add("")
    add(
        f"Failed probes in the window: {s.failed_probes}. Tick reasons: "
        + ", ".join(f"`{k}` x {v}" for k, v in sorted(s.reasons.items()))
        + "."
    )
    add(
        f"Cross-check: `helios_cycle_duration_seconds` histogram mean over all "
        f"{s.histogram_count} ticks so far (start-up included): {ms(s.histogram_mean)}."
    )
    add(
        f"Memory: VmRSS {s.rss_kib / 1024:.1f} MiB, peak (VmHWM) {s.hwm_kib / 1024:.1f} MiB "
        "(whole benchmark process) after the steady-state window; at the end of the daemon on "
        f"this sandbox (after {r.ticks} ticks and the other parts on it) VmRSS "
        f"{r.rss_end_kib / 1024:.1f} MiB, VmHWM {r.hwm_end_kib / 1024:.1f} MiB. "
        f"`helios_cycle_errors_total` at the end: {r.cycle_errors}."
    )
    add("")
    return lines


def _render_detection(r: Results) -> list[str]:
    lines: list[str] = []
    add = lines.append
    add("## 2. Failure detection and recovery")
    add("")
    add(
        f"{TRIALS} trials each of SIGKILL of the primary's postmaster (`sandbox.kill`) and "
        "SIGSTOP of all its processes (`sandbox.hang`, a frozen host). Each trial waits for "
        "`ALL_HEALTHY`, then injects the failure at a point spread evenly across the tick "
        "(the phase, in seconds after a tick start, decides how long detection takes); "
        "detection is from the failure to the end of the first tick judging `us-east-1` DOWN. "
        "Recovery is from the `start`/`unhang` call (issued after the DOWN tick at the same "
        "spread of phases; for a kill it includes PostgreSQL's crash recovery and start-up) "
        f"to the first tick judging it HEALTHY again, after {RECOVERY_THRESHOLD} good probes "
        f"(so about {RECOVERY_THRESHOLD - 1} intervals plus the wait for the next tick)."
    )
    add("")
    add(
        f"Theoretical bound for detection: interval x failure threshold + one tick = "
        f"{INTERVAL:g} x {FAILURE_THRESHOLD} + {INTERVAL:g} = **{DOWN_BOUND:.1f} s**."
    )
    add("")
    add(
        "| failure | n | detection min | median | max | above bound | recovery min | median "
        "| max | to ALL_HEALTHY (median) |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|")
    for failure in ("kill", "hang"):
        ts = [t for t in r.trials if t.failure == failure]
        d = Dist(tuple(t.detect for t in ts))
        rc = Dist(tuple(t.recover for t in ts))
        ah = Dist(tuple(t.all_healthy for t in ts))
        over = sum(1 for t in ts if t.detect > DOWN_BOUND)
        add(
            f"| {failure} | {len(ts)} | {sec(d.min)} | {sec(d.median)} | {sec(d.max)} | "
            f"{over} | {sec(rc.min)} | {sec(rc.median)} | {sec(rc.max)} | {sec(ah.median)} |"
        )
    add("")
    add("Per trial:")
    add("")
    add(
        "| failure | # | failure phase | first non-HEALTHY | DOWN after | DOWN reason "
        "| failed probes | restore phase | start/unhang call | NODE_RECOVERING ticks "
        "| HEALTHY after | ALL_HEALTHY after |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in r.trials:
        add(
            f"| {t.failure} | {t.index} | {sec(t.phase)} | {sec(t.first_suspect)} | "
            f"{sec(t.detect)} | `{t.down_reason}` | {t.failed_ticks} | {sec(t.restore_phase)} | "
            f"{sec(t.restore_call)} | {t.recovering_ticks} | {sec(t.recover)} | "
            f"{sec(t.all_healthy)} |"
        )
    add("")
    return lines


def _render_lag(lag: Lag) -> list[str]:
    lines: list[str] = []
    add = lines.append
    add("## 3. Replication lag accuracy")
    add("")
    add(
        f"`recovery_min_apply_delay = '{lag.delay:g}s'` is set on `{DELAYED_REGION}` (ALTER "
        "SYSTEM + `pg_reload_conf()`) while a thread runs single-row autocommit INSERTs on the "
        f"primary. Once `{DELAYED}`'s reported lag first reaches the delay, the next "
        f"{LAG_TICKS} ticks are sampled, with `{OTHER_REPLICA}` (no delay) in the same window; "
        "then the setting is RESET."
    )
    add("")
    add(
        "The heartbeat lag is documented as an upper bound exact to one interval, so the "
        f"expected reading for `{DELAYED}` lies between {lag.delay:g} s and "
        f"{lag.delay + INTERVAL:g} s."
    )
    add("")
    add("| replica | injected delay | n | mean | min | max | mean - injected |")
    add("|---|---|---|---|---|---|---|")
    add(
        f"| `{DELAYED}` | {sec(lag.delay, 1)} | {lag.delayed.n} | {sec(lag.delayed.mean)} | "
        f"{sec(lag.delayed.min)} | {sec(lag.delayed.max)} | "
        f"{sec(lag.delayed.mean - lag.delay)} |"
    )
    add(
        f"| `{OTHER_REPLICA}` | 0 s | {lag.other.n} | {sec(lag.other.mean)} | "
        f"{sec(lag.other.min)} | {sec(lag.other.max)} | {sec(lag.other.mean)} |"
    )
    add("")
    add(
        f"`{DELAYED}` readings, tick by tick (s): "
        + ", ".join(f"{x:.3f}" for x in lag.delayed.values)
        + "."
    )
    add("")
    add(
        f"Write load: {lag.commits} commits in {lag.load_seconds:.1f} s = "
        f"**{lag.commit_rate:.0f} commits/s** (one connection, `fsync = on`)."
        f" `{DELAYED}` lag in bytes during the window: median "
        f"{lag.delayed_bytes.median / 1024:.0f} KiB, max {lag.delayed_bytes.max / 1024:.0f} KiB. "
        f"Its verdicts in the window: "
        + ", ".join(f"{k} x {v}" for k, v in sorted(lag.delayed_verdicts.items()))
        + f". The lag first reached {lag.delay:g} s {lag.ramp:.1f} s after the delay was set, "
        f"and read 0 again {lag.clear:.1f} s after it was reset."
    )
    add("")
    return lines


# --- writing: a full run replaces the file, a partial run only its sections ----------------

_HEADING = re.compile(r"^## ", re.MULTILINE)
_NUMBERED = re.compile(r"## (\d+)\. ")
_RUN_OF = re.compile(r"^Run of (.+?) \(", re.MULTILINE)
TITLE = "# Benchmarks"


def split_sections(text: str) -> tuple[str, list[str]]:
    """(the text before the first ``## `` heading, the chunks from each ``## `` heading up to
    the next one); joined again they are ``text`` exactly."""
    starts = [m.start() for m in _HEADING.finditer(text)]
    if not starts:
        return text, []
    return text[: starts[0]], [text[a:b] for a, b in itertools.pairwise([*starts, len(text)])]


def section_number(chunk: str) -> int | None:
    m = _NUMBERED.match(chunk)
    return int(m.group(1)) if m else None


def merge_sections(old: str, new: dict[int, str]) -> str:
    """``old`` with each section ``## N.`` of ``new`` in place of its namesake, or inserted in
    order (before the first section with a larger number, else after the last numbered one,
    else before ``## Findings``); every other byte of ``old`` stays as it was."""
    preamble, chunks = split_sections(old)
    for n, text in sorted(new.items()):
        numbers = [section_number(c) for c in chunks]
        if n in numbers:
            chunks[numbers.index(n)] = text
            continue
        at = next((i for i, k in enumerate(numbers) if k is not None and k > n), None)
        if at is None:
            numbered = [i for i, k in enumerate(numbers) if k is not None]
            if numbered:
                at = numbered[-1] + 1
            else:
                at = next(
                    (i for i, c in enumerate(chunks) if c.startswith("## Findings")), len(chunks)
                )
        chunks.insert(at, text)
    return preamble + "".join(chunks)


def merges_into(path: Path, parts: tuple[str, ...]) -> str | None:
    """The existing report a partial run's sections go into (None: write the file whole)."""
    if parts == PARTS or not path.is_file():
        return None
    old = path.read_text(encoding="utf-8")
    return old if old.startswith(TITLE) else None


def partial_update(m: Machine, r: Results, old: str, report: str) -> str:
    """``old`` with the sections of the parts that ran taken from ``report``, each with a note
    on the partial run and its findings for that section."""
    _, chunks = split_sections(report)
    found = _findings_by_section(r)
    ran = {SECTION_OF[p] for p in r.parts}
    previous = _RUN_OF.search(old)
    sections: dict[int, str] = {}
    for chunk in chunks:
        n = section_number(chunk)
        if n is None or n not in ran:
            continue
        mine = found.get(n, [])
        note = [
            f"> **Partial update**: this section comes from the run of {m.date} with `--only "
            f"{','.join(r.parts)}` (total {m.runtime:.0f} s; load average (1 min) start / end "
            f"{m.load_start:.2f} / {m.load_end:.2f}); the machine table above and the Findings "
            f"at the end are from the run of {previous.group(1) if previous else 'an earlier run'}"
            ". This section's findings in the partial run:" + (" none." if not mine else ""),
            *(f"> - {f}" for f in mine),
        ]
        sections[n] = chunk.rstrip("\n") + "\n\n" + "\n".join(note) + "\n\n"
    return merge_sections(old, sections)


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_parts(text: str) -> tuple[str, ...]:
    wanted = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in PARTS]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PARTS)}"
        )
    return tuple(p for p in PARTS if p in wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", type=Path, help="replace this Markdown file with the results")
    parser.add_argument(
        "--only",
        type=parse_parts,
        default=PARTS,
        metavar="PART[,PART...]",
        help=f"run only these parts (default: all): {', '.join(PARTS)}",
    )
    parser.add_argument(
        "--runs",
        type=positive,
        default=None,
        help=f"runs per failover/switchover scenario (default {failover.RUNS}), per drill "
        f"kind (default {drill.RUNS}) and per leader-election measure (default {leader.RUNS})",
    )
    args = parser.parse_args(argv)
    parts: tuple[str, ...] = args.only
    series = [p for p in SERIES_PARTS if p in parts]
    partial_series = 0 < len(series) < len(SERIES_PARTS)
    if args.write is not None and partial_series and merges_into(args.write, parts) is not None:
        parser.error(
            f"section 4 holds {', '.join(SERIES_PARTS)} together: a partial run written "
            f"into the existing {args.write} would drop the others; select all three or "
            "none of them (or write to a new file)"
        )
    signal.signal(signal.SIGTERM, _sigterm)
    configure_logging("warning")  # no per-tick log lines; warnings and errors still show
    install_reason_log()
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    progress(f"parts: {', '.join(parts)}")
    try:
        pg = postgres_version()
        results = Results(parts)
        if any(p in SHARED_PARTS for p in parts):
            with sandbox_in_tmp() as sb:
                results = asyncio.run(run_shared(sb, parts))
        for name in SERIES_PARTS:
            if name in parts:
                runs = args.runs or failover.RUNS
                progress(f"{name}: {runs} runs, each on a fresh sandbox")
                results.series[name] = failover.run_series(name, runs)
        if DRILL_PART in parts:
            runs = args.runs or drill.RUNS
            for kind in drill.KINDS:
                progress(f"drill {kind} (with failback): {runs} runs, each on a fresh sandbox")
                results.drills[kind] = drill.run_series(kind, runs)
        if LEADER_PART in parts:
            runs = args.runs or leader.RUNS
            progress(f"leader election and fencing: {runs} trial(s) per measure")
            results = replace(results, election=leader.run_part(runs))
    except (KeyboardInterrupt, Interrupted):
        progress("interrupted; nothing written")
        return 130
    except (SandboxError, RuntimeError, TimeoutError, OSError, psycopg.Error) as exc:
        progress(f"benchmark failed: {exc}; nothing written")
        return 1
    machine = Machine(
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        nproc=len(os.sched_getaffinity(0)),
        cpu=cpu_model(),
        ram_gib=ram_gib(),
        kernel=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        postgres=pg,
        load_start=load_start,
        load_end=os.getloadavg()[0],
        runtime=time.monotonic() - started,
    )
    report = render(machine, results)
    print(report)
    if args.write is not None:
        old = merges_into(args.write, parts)
        text = report + "\n" if old is None else partial_update(machine, results, old, report)
        tmp = args.write.with_name(args.write.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(args.write)
        sections = ", ".join(str(n) for n in sorted({SECTION_OF[p] for p in parts}))
        how = "" if old is None else f" (section(s) {sections} only; the rest as it was)"
        progress(f"wrote {args.write}{how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
