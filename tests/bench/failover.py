"""Failover and switchover under a write load through the service name (``make bench`` parts
``failover``, ``failover-sync`` and ``switchover``).

Every run gets a fresh sandbox (own /tmp directory, own 16-port block, destroyed afterwards) and
the daemon in this process with the default probe settings. A thread writes through the service
name: it resolves ``db.helios.test.`` at the sandbox's Route53 name server, keeps one connection
to ``<answer>:<service port>`` and runs single-row autocommit ``INSERT ... RETURNING id`` in a
loop; on any error it drops the connection, resolves the name again and reconnects. Every
acknowledged commit is recorded (client sequence number, id, monotonic time, address).

* ``failover``: ``sandbox.kill("us-east")`` (SIGKILL of the postmaster) at a spread of phases
  within a tick; the daemon detects, confirms, fences, promotes ``us-west``, moves DNS.
* ``failover-sync``: the same with ``synchronous_standby_names = 'ANY 1 ("us-west", "eu")'`` set
  on the primary before the load.
* ``switchover``: ``orchestrator switchover --to us-west`` as a subprocess while the daemon runs.

Measured per run: write unavailability (last acknowledged commit through the old primary ->
first acknowledged commit through the new primary), acknowledged commits missing on the new
primary, and the incident's timeline, RTO and RPO.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from orchestrator.config import load_config
from orchestrator.errors import SandboxError
from orchestrator.incidents import Incident, IncidentStore
from orchestrator.journal import Journal
from orchestrator.model import Verdict
from orchestrator.sandbox import Sandbox
from orchestrator.sandbox.cluster import RESOLVE_TIMEOUT
from orchestrator.sandbox.dns import RECORD, query_a
from tests.bench.common import (
    FAILURE_THRESHOLD,
    INTERVAL,
    PRIMARY,
    PRIMARY_REGION,
    REASONS,
    Dist,
    bench_config,
    progress,
    running_daemon,
    sandbox_in_tmp,
    sec,
    timed_call,
)

RUNS = 5
FAILOVER_TARGET = 5.0
SWITCHOVER_TARGET = 1.5
PEERS_FAILOVER = "about 20-30 s"
PEERS_SWITCHOVER = "about 2.5 s"

NEW_REGION = "us-west"
NEW_PRIMARY = "us-west-1"
OTHER_REGION = "eu"

TABLE = "bench_acks"
WARMUP = 2.0
"""Seconds of write load (and at least 50 commits) before the failure or switchover."""
LOAD_PAUSE = 0.002
"""Pause between two commits of the load: keeps it continuous without taking a whole CPU."""
RETRY_PAUSE = 0.02
"""Pause after a failed attempt before resolving and reconnecting."""
TAIL = 0.5
"""Seconds the load goes on after the first commit through the new primary."""

EXE = Path(sys.executable).with_name("orchestrator")

# Failover timeline events in order; each phase is the time from one to the next.
FAILOVER_EVENTS = (
    "first_failure",
    "confirmed",
    "fenced",
    "promoted",
    "dns_switched",
    "first_verified_write",
)
FAILOVER_STEPS = ("fence", "promote", "ensure_slots", "repoint", "switch_dns", "verify_write")
SWITCHOVER_STEPS = (
    "stop_writes",
    "wait_replay",
    "promote",
    "ensure_slots",
    "repoint",
    "switch_dns",
    "rejoin",
    "verify_write",
)


# --- the write load --------------------------------------------------------------------------


class ServiceResolver:
    """``Sandbox.resolve_service()`` without re-reading and re-validating the generated config
    on every call: the same query (``db.helios.test. A``, recursion not desired) to the same
    Route53 name server with the same timeout. ``resolve_service`` parses the YAML config each
    time (about 0.1-0.2 s here), which would add that much to every reconnect and so to every
    measured unavailability; a client's resolver does not. Like the stand-in name servers'
    record (TTL 60 s), nothing is cached: a client honouring the TTL would add up to 60 s."""

    def __init__(self, sb: Sandbox) -> None:
        cfg = load_config(sb.config_path())
        servers = [
            ns for ns in (cfg.dns.nameservers if cfg.dns else []) if ns.provider == "route53"
        ]
        if not servers:
            raise SandboxError(f"{sb.config_path()} names no route53 name server")
        self.address, self.port = servers[0].address, servers[0].port

    def __call__(self) -> str:
        values = query_a(self.address, self.port, RECORD, RESOLVE_TIMEOUT)
        if len(values) != 1:
            raise SandboxError(f"{RECORD} A: expected one address, the name server gave {values}")
        return values[0]


@dataclass(frozen=True)
class Ack:
    seq: int
    """The client's own sequence number (unique per run; ids can be reused after a failover,
    since the sequence's WAL may be lost with the commits)."""
    id: int
    mono: float
    """Monotonic time at which the acknowledgement was received."""
    addr: str
    """The address the service name resolved to for this connection."""


class AckLoad:
    """One connection through the service name, in a thread; see the module docstring."""

    def __init__(self, resolve: Callable[[], str], port: int, password: str) -> None:
        self._resolve = resolve
        self._port = port
        self._password = password
        self._stop = threading.Event()
        self.acked: list[Ack] = []
        self.failed: list[tuple[float, str]] = []
        """(monotonic time, exception class) of every failed attempt."""
        self.connects: list[tuple[float, str]] = []
        self.started = 0.0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-ack-load", daemon=True)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        addr = ""
        seq = 0
        self.started = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        addr = self._resolve()
                        conn = psycopg.connect(
                            host=addr,
                            port=self._port,
                            dbname="postgres",
                            user="helios",
                            password=self._password,
                            autocommit=True,
                            connect_timeout=2,
                        )
                        self.connects.append((time.monotonic(), addr))
                    seq += 1
                    row = conn.execute(
                        sql.SQL("INSERT INTO {} (seq) VALUES (%s) RETURNING id").format(
                            sql.Identifier(TABLE)
                        ),
                        (seq,),
                    ).fetchone()
                    now = time.monotonic()
                    assert row is not None
                    self.acked.append(Ack(seq, int(row[0]), now, addr))
                except (psycopg.Error, OSError, SandboxError) as exc:
                    self.failed.append((time.monotonic(), type(exc).__name__))
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                    conn = None
                    self._stop.wait(RETRY_PAUSE)
                    continue
                self._stop.wait(LOAD_PAUSE)
        except BaseException as exc:
            self.error = exc
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        if self._thread.is_alive():
            self.error = self.error or RuntimeError("the write load did not stop within 15s")

    def through(self, addr: str) -> list[Ack]:
        return [a for a in self.acked if a.addr == addr]

    async def until_through(self, addr: str, after: float, timeout: float) -> Ack:
        """The first acknowledged commit through ``addr`` after ``after`` (monotonic)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            acked = self.acked
            for a in acked[seen:]:
                if a.addr == addr and a.mono > after:
                    return a
            seen = len(acked)
            if self.error is not None:
                raise RuntimeError(f"the write load failed: {self.error!r}") from self.error
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no commit through {addr} within {timeout:g}s")
            await asyncio.sleep(0.02)

    async def warm_up(self) -> None:
        deadline = time.monotonic() + 30
        while len(self.acked) < 50 or time.monotonic() - self.started < WARMUP:
            if self.error is not None:
                raise RuntimeError(f"the write load failed: {self.error!r}") from self.error
            if time.monotonic() >= deadline:
                raise TimeoutError(f"write load: only {len(self.acked)} commits in 30s")
            await asyncio.sleep(0.05)


def create_table(sb: Sandbox) -> None:
    with psycopg.connect(sb.dsn(PRIMARY_REGION), password=sb.password(), autocommit=True) as c:
        c.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, seq bigint NOT NULL, "
                "at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ).format(sql.Identifier(TABLE))
        )


def seqs_on(sb: Sandbox, region: str) -> set[int]:
    with psycopg.connect(sb.dsn(region), password=sb.password(), autocommit=True) as c:
        rows = c.execute(sql.SQL("SELECT seq FROM {}").format(sql.Identifier(TABLE))).fetchall()
    return {int(r[0]) for r in rows}


def show(sb: Sandbox, region: str, setting: str) -> str:
    with psycopg.connect(sb.dsn(region), password=sb.password(), autocommit=True) as c:
        row = c.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
    return "" if row is None else str(row[0])


def enable_sync(sb: Sandbox) -> tuple[str, str]:
    """``synchronous_standby_names = 'ANY 1 (<every streaming replica>)'`` on the primary, by
    the replicas' actual ``application_name`` (quoted); waits until pg_stat_replication shows
    them all as quorum (or sync) standbys. Returns (the setting, their sync states)."""
    with psycopg.connect(sb.dsn(PRIMARY_REGION), password=sb.password(), autocommit=True) as c:
        names = [
            str(r[0])
            for r in c.execute(
                "SELECT application_name FROM pg_stat_replication ORDER BY application_name"
            ).fetchall()
        ]
        if sorted(names) != sorted([NEW_REGION, OTHER_REGION]):
            raise RuntimeError(f"unexpected replicas in pg_stat_replication: {names}")
        quoted = ", ".join('"' + n.replace('"', '""') + '"' for n in names)
        value = f"ANY 1 ({quoted})"
        c.execute(
            sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(value))
        )
        c.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 15
        while True:
            rows = c.execute(
                "SELECT application_name, sync_state FROM pg_stat_replication "
                "ORDER BY application_name"
            ).fetchall()
            states = {str(r[0]): str(r[1]) for r in rows}
            shown = c.execute("SHOW synchronous_standby_names").fetchone()
            if (
                shown is not None
                and shown[0] == value
                and len(states) == 2
                and all(s in ("quorum", "sync") for s in states.values())
            ):
                commit = c.execute("SHOW synchronous_commit").fetchone()
                desc = ", ".join(f"{k}={v}" for k, v in states.items())
                return value, f"{desc}; synchronous_commit={commit[0] if commit else '?'}"
            if time.monotonic() >= deadline:
                raise RuntimeError(f"sync replication not in effect within 15s: {states}")
            time.sleep(0.1)


async def wait_incident(
    store: IncidentStore, pred: Callable[[Incident], bool], timeout: float
) -> Incident:
    deadline = time.monotonic() + timeout
    while True:
        found = [i for i in await asyncio.to_thread(store.all) if pred(i)]
        if found:
            return found[-1]
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no matching incident within {timeout:g}s")
        await asyncio.sleep(0.1)


def step_durations(state_dir: str, run_id: str | None) -> dict[str, float]:
    """Step name -> seconds, from the run's journal records (the last attempt's total)."""
    if run_id is None:
        return {}
    out: dict[str, float] = {}
    for r in Journal.in_state_dir(state_dir).records():
        if r.get("run") == run_id and r.get("kind") in ("step_finished", "step_failed"):
            out[str(r["step"])] = float(r.get("duration", math.nan))
    return out


def run_started_at(state_dir: str, run_id: str | None) -> float | None:
    if run_id is None:
        return None
    rec = Journal.in_state_dir(state_dir).runs().get(run_id)
    return rec.started_at if rec is not None else None


# --- failover --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailoverRun:
    mode: str  # "async" | "sync"
    index: int
    sync_setting: str
    phase: float
    """Seconds after the start of a tick at which the kill was issued."""
    kill_call: float
    """Seconds ``sandbox.kill`` took (sandbox lock, SIGKILL, wait until the postmaster is
    gone); the SIGKILL itself is sent a few ms into it."""
    rate: float
    """Commits/s of the load before the kill."""
    acked: int
    acked_old: int
    last_before: float
    """Kill - last acknowledged commit through the old primary (s)."""
    unavailability: float
    """Last acknowledged commit through the old primary -> first through the new one (s)."""
    failed_attempts: int
    lost: int
    lost_on_other: int
    """Of the lost commits, how many the other replica (eu) has."""
    oldest_lost: float | None
    """Age (s before the kill) of the oldest acknowledged commit missing on the new primary."""
    loss_window: float | None
    """The incident's RPO (s) + one interval: where acknowledged commits may be lost."""
    within_window: bool | None
    status: str
    new_primary: str | None
    rto: float | None
    rpo: float | None
    rpo_bytes: int | None
    events: dict[str, float]
    """Timeline event -> seconds after the kill."""
    down_after: float
    """Kill -> end of the first tick judging the primary DOWN."""
    run_started: float | None
    """Kill -> the failover run's journal start."""
    first_ack_after: float
    """Kill -> first acknowledged commit through the new primary."""
    steps: dict[str, float]
    new_primary_sync: str
    """``synchronous_standby_names`` on the promoted replica afterwards."""
    notes: tuple[str, ...]

    def phase_between(self, a: str, b: str) -> float:
        if a in self.events and b in self.events:
            return self.events[b] - self.events[a]
        return math.nan

    @property
    def detection(self) -> float:
        return self.phase_between("first_failure", "confirmed")

    @property
    def dns_to_client(self) -> float:
        return self.first_ack_after - self.events.get("dns_switched", math.nan)


async def failover_trial(sb: Sandbox, mode: str, index: int) -> FailoverRun:
    await asyncio.to_thread(create_table, sb)
    setting = "(async: synchronous_standby_names empty)"
    if mode == "sync":
        value, states = await asyncio.to_thread(enable_sync, sb)
        setting = f"`{value}` ({states})"
    cfg = bench_config(sb)
    store = IncidentStore(cfg.state_dir)
    old_addr, new_addr = sb.host(PRIMARY_REGION), sb.host(NEW_REGION)
    load = AckLoad(ServiceResolver(sb), sb.service_port, sb.password())
    async with running_daemon(cfg) as rec:
        load.start()
        try:
            await load.warm_up()
            # Spread the kills over the tick: the phase decides how long detection takes.
            phase = (index + 0.5) / RUNS * INTERVAL
            tick = await rec.next_tick()
            await asyncio.sleep(max(0.0, tick.start_mono + INTERVAL + phase - time.monotonic()))
            offset = time.time() - time.monotonic()
            t_kill, kill_call = await timed_call(lambda: sb.kill(PRIMARY_REGION))
            actual_phase = (t_kill - tick.start_mono) % INTERVAL
            await rec.until(
                lambda a: (
                    a.primary == NEW_PRIMARY and a.node(NEW_PRIMARY).verdict is Verdict.HEALTHY
                ),
                timeout=60,
                after=t_kill,
                what=f"{NEW_PRIMARY} primary",
            )
            first = await load.until_through(new_addr, t_kill, timeout=30)
            await asyncio.sleep(TAIL)
        finally:
            await asyncio.to_thread(load.stop)
        if load.error is not None:
            raise RuntimeError(f"the write load failed: {load.error!r}") from load.error
        inc = await wait_incident(store, lambda i: bool(i.run_id) and not i.is_open, timeout=60)
        down = next(
            (
                t
                for t in rec.ticks
                if t.mono >= t_kill and t.a.node(PRIMARY).verdict is Verdict.DOWN
            ),
            None,
        )
    on_new = await asyncio.to_thread(seqs_on, sb, NEW_REGION)
    new_sync = await asyncio.to_thread(show, sb, NEW_REGION, "synchronous_standby_names")
    old = load.through(old_addr)
    before = [a for a in old if a.mono <= t_kill]
    last = old[-1]
    lost = [a for a in old if a.seq not in on_new]
    lost_on_other = 0
    if lost:
        with contextlib.suppress(psycopg.Error):
            on_other = await asyncio.to_thread(seqs_on, sb, OTHER_REGION)
            lost_on_other = sum(1 for a in lost if a.seq in on_other)
    oldest = max((t_kill - a.mono for a in lost), default=None)
    window = None if inc.rpo_seconds is None else inc.rpo_seconds + INTERVAL
    kill_wall = t_kill + offset
    events = {str(e["event"]): float(e["at"]) - kill_wall for e in inc.timeline}
    started = await asyncio.to_thread(run_started_at, cfg.state_dir, inc.run_id)
    notes = list(inc.notes)
    if last.mono > t_kill + 0.5:
        notes.append(
            "a commit through the old primary was acknowledged "
            f"{last.mono - t_kill:.2f}s after the kill"
        )
    span = (before[-1].mono - before[0].mono) if len(before) > 1 else math.nan
    return FailoverRun(
        mode=mode,
        index=index + 1,
        sync_setting=setting,
        phase=actual_phase,
        kill_call=kill_call,
        rate=(len(before) - 1) / span if span and span > 0 else math.nan,
        acked=len(load.acked),
        acked_old=len(old),
        last_before=t_kill - last.mono,
        unavailability=first.mono - last.mono,
        failed_attempts=len(load.failed),
        lost=len(lost),
        lost_on_other=lost_on_other,
        oldest_lost=oldest,
        loss_window=window,
        within_window=None if window is None else all(t_kill - a.mono <= window for a in lost),
        status=inc.status,
        new_primary=inc.new_primary,
        rto=inc.rto_seconds,
        rpo=inc.rpo_seconds,
        rpo_bytes=inc.rpo_bytes,
        events=events,
        down_after=math.nan if down is None else down.mono - t_kill,
        run_started=None if started is None else started - kill_wall,
        first_ack_after=first.mono - t_kill,
        steps=await asyncio.to_thread(step_durations, cfg.state_dir, inc.run_id),
        new_primary_sync=new_sync,
        notes=tuple(notes),
    )


# --- switchover ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchoverRun:
    index: int
    rate: float
    acked: int
    acked_old: int
    unavailability: float
    failed_attempts: int
    lost: int
    exit_code: int
    status: str
    command: float
    """Wall time of the whole ``orchestrator switchover`` command (process start to exit)."""
    cli_startup: float | None
    """Process start -> the run's journal start (interpreter, imports, probe, plan)."""
    writes_stopped_to_first_ack: float | None
    steps: dict[str, float]
    events: dict[str, float]
    """Timeline event -> seconds after the command was started."""
    last_ack_old: float
    """Command start -> last commit through the old primary."""
    first_ack_new: float
    """Command start -> first commit through the new primary."""
    all_healthy_after: float | None
    """Command exit -> the daemon's first ALL_HEALTHY tick with us-west primary."""
    daemon_reasons: dict[str, int]
    daemon_incidents: int
    """Incidents the daemon opened during the switchover (its own, not the switchover's)."""
    stale_fenced: int
    """Times the daemon fenced the old primary as a stale primary (its log reason
    ``STALE_PRIMARY_FENCED``), i.e. concurrently with the switchover's own rejoin."""
    daemon_logged: dict[str, int]
    """Reason codes of the daemon's warnings and errors from the command's start to the end."""
    old_role: str
    notes: tuple[str, ...]


async def switchover_trial(sb: Sandbox, index: int) -> SwitchoverRun:
    await asyncio.to_thread(create_table, sb)
    cfg = bench_config(sb)
    config = Path(sb.config_path()).with_name("bench.yaml")
    store = IncidentStore(cfg.state_dir)
    old_addr, new_addr = sb.host(PRIMARY_REGION), sb.host(NEW_REGION)
    load = AckLoad(ServiceResolver(sb), sb.service_port, sb.password())
    argv = [*_exe(), "switchover", "--to", NEW_REGION, "--config", str(config), "-o", "json"]
    notes: list[str] = []
    async with running_daemon(cfg) as rec:
        load.start()
        try:
            await load.warm_up()
            incidents_before = {i.id for i in await asyncio.to_thread(store.all)}
            offset = time.time() - time.monotonic()
            t0 = time.monotonic()
            proc = await asyncio.to_thread(
                subprocess.run, argv, capture_output=True, text=True, timeout=300, check=False
            )
            t_end = time.monotonic()
            if proc.returncode != 0:
                notes.append(
                    f"`orchestrator switchover` exited {proc.returncode}: "
                    + (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1][:300]
                )
            first = await load.until_through(new_addr, t0, timeout=30)
            await asyncio.sleep(TAIL)
        finally:
            await asyncio.to_thread(load.stop)
        if load.error is not None:
            raise RuntimeError(f"the write load failed: {load.error!r}") from load.error
        healthy_after: float | None = None
        try:
            ok = await rec.until(
                lambda a: a.reason == "ALL_HEALTHY" and a.primary == NEW_PRIMARY,
                timeout=60,
                after=t_end,
                what=f"ALL_HEALTHY with {NEW_PRIMARY} primary",
            )
            healthy_after = ok.mono - t_end
        except TimeoutError as exc:
            notes.append(str(exc))
        reasons: dict[str, int] = {}
        for t in rec.ticks:
            if t.mono >= t0 and t.start_mono <= t_end:
                reasons[t.a.reason] = reasons.get(t.a.reason, 0) + 1
        incidents = await asyncio.to_thread(store.all)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = {}
        notes.append(f"unparsable switchover output: {proc.stdout[-300:]!r}")
    run_id = doc.get("run")
    inc = next((i for i in incidents if i.run_id == run_id), None) if run_id else None
    own = [i for i in incidents if i.id not in incidents_before and i is not inc]
    logged = REASONS.between(t0, time.monotonic())
    for i in own:
        notes.append(
            f"the daemon opened an incident of its own for {i.primary} (status {i.status}, "
            f"timeline {', '.join(str(e['event']) for e in i.timeline)})"
        )
    events: dict[str, float] = {}
    if inc is not None:
        events = {str(e["event"]): float(e["at"]) - (t0 + offset) for e in inc.timeline}
    started = await asyncio.to_thread(run_started_at, cfg.state_dir, run_id)
    on_new = await asyncio.to_thread(seqs_on, sb, NEW_REGION)
    old = load.through(old_addr)
    before = [a for a in old if a.mono <= t0]
    lost = [a for a in old if a.seq not in on_new]
    last = old[-1]
    role = next((r.role for r in sb.status().regions if r.region == PRIMARY_REGION), "?")
    span = (before[-1].mono - before[0].mono) if len(before) > 1 else math.nan
    stopped = events.get("writes_stopped")
    return SwitchoverRun(
        index=index + 1,
        rate=(len(before) - 1) / span if span and span > 0 else math.nan,
        acked=len(load.acked),
        acked_old=len(old),
        unavailability=first.mono - last.mono,
        failed_attempts=len(load.failed),
        lost=len(lost),
        exit_code=proc.returncode,
        status=str(doc.get("status", "?")),
        command=t_end - t0,
        cli_startup=None if started is None else started - (t0 + offset),
        writes_stopped_to_first_ack=None if stopped is None else (first.mono - t0) - stopped,
        steps={str(s["name"]): float(s["seconds"]) for s in doc.get("steps", [])},
        events=events,
        last_ack_old=last.mono - t0,
        first_ack_new=first.mono - t0,
        all_healthy_after=healthy_after,
        daemon_reasons=reasons,
        daemon_incidents=len(own),
        stale_fenced=logged.get("STALE_PRIMARY_FENCED", 0),
        daemon_logged=logged,
        old_role=role,
        notes=tuple(notes),
    )


def _exe() -> list[str]:
    return [str(EXE)] if EXE.exists() else [sys.executable, "-m", "orchestrator"]


# --- the series ------------------------------------------------------------------------------


@dataclass
class Series:
    name: str  # "failover" | "failover-sync" | "switchover"
    failovers: list[FailoverRun] = field(default_factory=list)
    switchovers: list[SwitchoverRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cli_startup: tuple[float, ...] = ()
    """Wall time of ``orchestrator --help`` (interpreter start-up and the CLI's imports)."""


def cli_startup(n: int = 5) -> tuple[float, ...]:
    """Seconds a fresh ``orchestrator`` process needs just to start (``--help``), ``n`` times:
    the floor of every step that runs a CLI (``fence_command``, the switchover command)."""
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        subprocess.run([*_exe(), "--help"], capture_output=True, timeout=60, check=True)
        out.append(time.monotonic() - t0)
    return tuple(out)


def run_series(name: str, runs: int = RUNS) -> Series:
    """``runs`` runs of one scenario, each on a fresh sandbox. A run that fails is recorded
    (with its error) and the series goes on; Ctrl-C stops everything."""
    series = Series(name)
    started = time.monotonic()
    series.cli_startup = cli_startup()
    for i in range(runs):
        label = f"{name} #{i + 1}: "
        try:
            with sandbox_in_tmp(label) as sb:
                if name == "switchover":
                    s = asyncio.run(switchover_trial(sb, i))
                    series.switchovers.append(s)
                    progress(
                        f"{label}unavailability {s.unavailability:.3f}s, command {s.command:.2f}s "
                        f"(exit {s.exit_code}), lost {s.lost} of {s.acked_old} acked"
                    )
                else:
                    mode = "sync" if name == "failover-sync" else "async"
                    f = asyncio.run(failover_trial(sb, mode, i))
                    series.failovers.append(f)
                    progress(
                        f"{label}kill at phase {f.phase:.2f}s: unavailability "
                        f"{f.unavailability:.2f}s, detection {f.detection:.2f}s, RTO "
                        f"{_opt(f.rto)}, RPO {_opt(f.rpo)}, lost {f.lost} "
                        f"of {f.acked_old} acked, incident {f.status}"
                    )
        except (SandboxError, RuntimeError, TimeoutError, OSError, psycopg.Error) as exc:
            progress(f"{label}FAILED: {exc!r}")
            series.errors.append(f"run {i + 1}: {type(exc).__name__}: {exc}")
    series.seconds = time.monotonic() - started
    return series


# --- the report ------------------------------------------------------------------------------


def _med(values: list[float]) -> float:
    xs = [v for v in values if not math.isnan(v)]
    return Dist(tuple(xs)).median


def _mmm(values: list[float], digits: int = 2) -> str:
    d = Dist(tuple(v for v in values if not math.isnan(v)))
    if not d.n:
        return "n/a"
    return f"{sec(d.min, digits)} / **{sec(d.median, digits)}** / {sec(d.max, digits)}"


def _opt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f} s"


def _zero(runs: list[Any], lost: int) -> str:
    if not runs:
        return "no data"
    return "met" if lost == 0 else "**missed**"


def _met(value: float, target: float) -> str:
    if math.isnan(value):
        return "no data"
    return "met" if value <= target else "**missed**"


def _failover_phases(runs: list[FailoverRun]) -> list[tuple[str, list[float]]]:
    """(label, per-run seconds) for each part of the client's write unavailability."""
    return [
        ("last commit before -> kill issued", [r.last_before for r in runs]),
        (
            "kill -> first failed tick (`first_failure`, a tick start)",
            [r.events.get("first_failure", math.nan) for r in runs],
        ),
        ("`first_failure` -> `confirmed` (detection)", [r.detection for r in runs]),
        (
            "`confirmed` -> run started (rest of the tick, plan incl. DNS reads)",
            [
                (r.run_started - r.events["confirmed"])
                if r.run_started is not None and "confirmed" in r.events
                else math.nan
                for r in runs
            ],
        ),
        (
            "run started -> `fenced` (fence step)",
            [
                (r.events["fenced"] - r.run_started)
                if r.run_started is not None and "fenced" in r.events
                else math.nan
                for r in runs
            ],
        ),
        ("`fenced` -> `promoted`", [r.phase_between("fenced", "promoted") for r in runs]),
        (
            "`promoted` -> `dns_switched` (slots, repoint, DNS on 3 providers)",
            [r.phase_between("promoted", "dns_switched") for r in runs],
        ),
        ("`dns_switched` -> first client commit", [r.dns_to_client for r in runs]),
    ]


def render_section(series: dict[str, Series]) -> list[str]:
    lines: list[str] = []
    add = lines.append
    fo, fs, so = series.get("failover"), series.get("failover-sync"), series.get("switchover")
    add("## 4. Failover and switchover under a write load")
    add("")
    add(
        f"Each run uses a **fresh sandbox** (own /tmp directory and 16-port block, destroyed "
        f"afterwards) and the daemon in this process with the default probe settings (interval "
        f"{INTERVAL:g} s, timeout 0.8 s, thresholds 3/3) and the sandbox's generated failover "
        "configuration (fence by `fence_command`, DNS on Route53, Cloudflare and Google Cloud "
        "DNS stand-ins, verify write through the service name). A thread writes through the "
        "service name: it resolves `db.helios.test.` at the sandbox's Route53 name server "
        "(no caching), keeps one connection to `<answer>:<service port>` and commits "
        f"single-row autocommit `INSERT ... RETURNING id` in a loop ({LOAD_PAUSE * 1000:g} ms "
        f"pause between commits); after any error it waits {RETRY_PAUSE * 1000:g} ms, resolves "
        "again and reconnects. Every acknowledged commit is recorded with the client's own "
        "sequence number, its time and the address it went to."
    )
    add("")
    add(
        "**Write unavailability** = first commit acknowledged through the new primary's "
        "address minus the last one acknowledged through the old primary's (what a client "
        "sees). **Acknowledged commits lost** = commits acknowledged through the old primary "
        "whose sequence number is missing on the new primary afterwards. Failover: "
        '`sandbox.kill("us-east")` (SIGKILL of the postmaster) issued at a spread of points '
        f"within the tick, after {WARMUP:g} s of load; the incident's timeline, RTO "
        "(first failure -> first verified write) and RPO (the promoted replica's lag at the "
        "moment of loss) come from `IncidentStore`. Switchover: `orchestrator switchover --to "
        "us-west` as a subprocess while the daemon runs; its duration is the process's wall "
        "time (interpreter start-up and the rejoin of the old primary included)."
    )
    add("")
    add(
        f"Targets: failover median <= {FAILOVER_TARGET:g} s, switchover median <= "
        f"{SWITCHOVER_TARGET:g} s (best-known peers: {PEERS_FAILOVER} and {PEERS_SWITCHOVER} "
        "on this kind of machine), zero acknowledged commits lost with synchronous "
        "replication, and with asynchronous replication a loss no larger than the lag the "
        f"incident reports (loss window = incident RPO + one interval, {INTERVAL:g} s)."
    )
    add("")
    add(
        "| scenario | runs ok | write unavailability min / **median** / max | target | "
        "acked commits lost (total; runs with loss) | incident RTO median | other |"
    )
    add("|---|---|---|---|---|---|---|")
    for s, label in ((fo, "failover, async replication"), (fs, "failover, sync (`ANY 1`)")):
        if s is None:
            continue
        runs = s.failovers
        u = [r.unavailability for r in runs]
        lost = sum(r.lost for r in runs)
        with_loss = sum(1 for r in runs if r.lost)
        other = (
            "losses within the reported window: "
            + f"{sum(1 for r in runs if r.within_window)}/{len(runs)} runs"
            if s.name == "failover"
            else f"lost-commit target 0: {_zero(runs, lost)}"
        )
        add(
            f"| {label} | {len(runs)}/{len(runs) + len(s.errors)} | {_mmm(u)} | <= "
            f"{FAILOVER_TARGET:g} s: {_met(_med(u), FAILOVER_TARGET)} | {lost}; {with_loss} | "
            f"{sec(_med([r.rto for r in runs if r.rto is not None]))} | {other} |"
        )
    if so is not None:
        runs2 = so.switchovers
        u = [r.unavailability for r in runs2]
        lost = sum(r.lost for r in runs2)
        add(
            f"| switchover | {len(runs2)}/{len(runs2) + len(so.errors)} | {_mmm(u, 3)} | <= "
            f"{SWITCHOVER_TARGET:g} s: {_met(_med(u), SWITCHOVER_TARGET)} | {lost}; "
            f"{sum(1 for r in runs2 if r.lost)} | n/a | lost-commit target 0: "
            f"{_zero(runs2, lost)} |"
        )
        c = [r.command for r in runs2]
        add(
            f"| switchover command, end to end (for comparison) | {len(runs2)}/"
            f"{len(runs2) + len(so.errors)} | {_mmm(c)} | (<= {SWITCHOVER_TARGET:g} s: "
            f"{_met(_med(c), SWITCHOVER_TARGET).replace('*', '')}) | | | includes CLI "
            "start-up and the rejoin of the old primary |"
        )
    add("")
    for s, title in (
        (fo, "Failover, asynchronous replication (the sandbox's default)"),
        (fs, "Failover, synchronous replication"),
    ):
        if s is None:
            continue
        lines.extend(_render_failover(s, title))
    if so is not None:
        lines.extend(_render_switchover(so))
    lines.extend(_analysis(fo, fs, so))
    return lines


def _render_failover(s: Series, title: str) -> list[str]:
    lines: list[str] = []
    add = lines.append
    runs = s.failovers
    add(f"### {title}")
    add("")
    if s.name == "failover-sync" and runs:
        add(
            "Set on the primary with ALTER SYSTEM + `pg_reload_conf()` before the load, by the "
            "replicas' actual `application_name`s; `pg_stat_replication` then showed: "
            + "; ".join(sorted({r.sync_setting for r in runs}))
            + ". The setting lives in the old primary's `postgresql.auto.conf` only: on the "
            "promoted `us-west` afterwards `synchronous_standby_names` was "
            + ", ".join(sorted({f"'{r.new_primary_sync}'" for r in runs}))
            + " (commits after the failover are asynchronous again)."
        )
        add("")
    add(
        f"{len(runs)} of {len(runs) + len(s.errors)} runs completed ({s.seconds:.0f} s for the "
        "series, sandbox creation included)."
        + (" Failed runs: " + "; ".join(s.errors) if s.errors else "")
    )
    add("")
    if not runs:
        return lines
    add(
        "| # | kill phase | commits/s | unavailability | kill -> DOWN tick | detection | "
        "kill -> `dns_switched` | kill -> first commit | RTO | RPO (lag) | acked | lost | "
        "oldest lost (before kill) | loss window | within |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        add(
            f"| {r.index} | {sec(r.phase)} | {r.rate:.0f} | {sec(r.unavailability)} | "
            f"{sec(r.down_after)} | {sec(r.detection)} | "
            f"{sec(r.events.get('dns_switched', math.nan))} | {sec(r.first_ack_after)} | "
            f"{_opt(r.rto)} | {_opt(r.rpo)} / {r.rpo_bytes if r.rpo_bytes is not None else '?'} B"
            f" | {r.acked_old} | {r.lost}"
            + (f" ({r.lost_on_other} on eu)" if r.lost else "")
            + f" | {_opt(r.oldest_lost, 3)} | {_opt(r.loss_window)} | "
            f"{'n/a' if r.within_window is None else ('yes' if r.within_window else '**no**')} |"
        )
    add("")
    add(
        "Where the unavailability goes (median of the runs; from the incident timelines, wall "
        "clock, and the client's monotonic clock):"
    )
    add("")
    add("| phase | min | median | max |")
    add("|---|---|---|---|")
    for label, vals in _failover_phases(runs):
        d = Dist(tuple(v for v in vals if not math.isnan(v)))
        add(f"| {label} | {sec(d.min, 3)} | {sec(d.median, 3)} | {sec(d.max, 3)} |")
    u = Dist(tuple(r.unavailability for r in runs))
    add(
        f"| **write unavailability** | {sec(u.min, 3)} | **{sec(u.median, 3)}** | {sec(u.max, 3)} |"
    )
    add("")
    add(
        f"`sandbox.kill` took {sec(_med([r.kill_call for r in runs]), 3)} (median; sandbox "
        'lock, SIGKILL, wait until the postmaster is gone): a negative "last commit before -> '
        'kill issued" is a commit acknowledged after the call began but before the SIGKILL. '
        "The fence step runs the sandbox's `fence_command`, a new `python -m orchestrator "
        "sandbox fence us-east` process; a bare `orchestrator --help` takes "
        f"{sec(Dist(s.cli_startup).median)} on this machine (median of {len(s.cli_startup)})."
    )
    add(
        "Runbook steps (journal durations, median): "
        + ", ".join(
            f"`{st}` {sec(_med([r.steps.get(st, math.nan) for r in runs]))}"
            for st in FAILOVER_STEPS
        )
        + "."
    )
    notes = [f"#{r.index}: {n}" for r in runs for n in r.notes]
    statuses = {r.status for r in runs}
    attempts = _med([float(r.failed_attempts) for r in runs])
    add(
        f"Incident status: {', '.join(sorted(statuses)) or 'n/a'}; new primary: "
        f"{', '.join(sorted({r.new_primary or '?' for r in runs})) or 'n/a'}; failed write "
        f"attempts of the client per run: median {attempts:.0f}."
    )
    if notes:
        add("Incident notes: " + "; ".join(notes))
    add("")
    return lines


def _render_switchover(s: Series) -> list[str]:
    lines: list[str] = []
    add = lines.append
    runs = s.switchovers
    add("### Planned switchover (`orchestrator switchover --to us-west`)")
    add("")
    add(
        f"{len(runs)} of {len(runs) + len(s.errors)} runs completed ({s.seconds:.0f} s for the "
        "series, sandbox creation included)."
        + (" Failed runs: " + "; ".join(s.errors) if s.errors else "")
    )
    add("")
    if not runs:
        return lines
    add(
        "| # | commits/s | unavailability | command | exit | CLI start -> run start | "
        + " | ".join(f"`{st}`" for st in SWITCHOVER_STEPS)
        + " | acked | lost | old primary now | ALL_HEALTHY after exit | daemon: "
        "`SPLIT_BRAIN` ticks / stale-primary fences / own incidents |"
    )
    add("|" + "---|" * (11 + len(SWITCHOVER_STEPS)))
    for r in runs:
        add(
            f"| {r.index} | {r.rate:.0f} | {sec(r.unavailability, 3)} | {sec(r.command)} | "
            f"{r.exit_code} | {_opt(r.cli_startup)} | "
            + " | ".join(sec(r.steps.get(st, math.nan)) for st in SWITCHOVER_STEPS)
            + f" | {r.acked_old} | {r.lost} | {r.old_role} | {_opt(r.all_healthy_after)} | "
            f"{r.daemon_reasons.get('SPLIT_BRAIN', 0)} / {r.stale_fenced} / "
            f"{r.daemon_incidents} |"
        )
    add("")
    add(
        "Timeline of the median run's client view: last commit through the old primary "
        f"{sec(_med([r.last_ack_old for r in runs]))} after the command started, first "
        f"through the new one {sec(_med([r.first_ack_new for r in runs]))} (medians); "
        "`writes_stopped` -> first commit through the new primary: "
        f"{sec(_med([r.writes_stopped_to_first_ack or math.nan for r in runs]), 3)} (median)."
    )
    reasons: dict[str, int] = {}
    for r in runs:
        for k, v in r.daemon_reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    logged: dict[str, int] = {}
    for r in runs:
        for k, v in r.daemon_logged.items():
            logged[k] = logged.get(k, 0) + v
    add(
        "The daemon's tick reasons while the command ran (all runs): "
        + ", ".join(f"`{k}` x {v}" for k, v in sorted(reasons.items()))
        + "; its warnings and errors (reason codes) from the command's start until the end of "
        "the run: "
        + (", ".join(f"`{k}` x {v}" for k, v in sorted(logged.items())) or "none")
        + f". Incidents the daemon opened on its own: {sum(r.daemon_incidents for r in runs)}."
    )
    notes = [f"#{r.index}: {n}" for r in runs for n in r.notes]
    if notes:
        add("Notes: " + "; ".join(notes))
    add("")
    return lines


def _outliers(runs: list[FailoverRun]) -> str:
    """For each run above the target: the phase that exceeded its median the most."""
    phases = _failover_phases(runs)
    medians = [_med(vals) for _, vals in phases]
    out = []
    for i, r in enumerate(runs):
        if r.unavailability <= FAILOVER_TARGET:
            continue
        excess = [
            (vals[i] - m, label)
            for (label, vals), m in zip(phases, medians, strict=True)
            if not math.isnan(vals[i])
        ]
        if excess:
            extra, label = max(excess)
            out.append(
                f" Run #{r.index} ({sec(r.unavailability)}) is above the target mostly because "
                f'of "{label}": {sec(extra)} more than its median.'
            )
    return "".join(out)


def _analysis(fo: Series | None, fs: Series | None, so: Series | None) -> list[str]:
    """Why a target is missed (or how much margin there is), computed from the numbers."""
    out: list[str] = []
    for s, label in ((fo, "async"), (fs, "sync")):
        if s is None or not s.failovers:
            continue
        runs = s.failovers
        u = _med([r.unavailability for r in runs])
        phases = {k: _med(v) for k, v in _failover_phases(runs)}
        labels = list(phases)
        detect = phases[labels[1]] + phases[labels[2]]
        execute = sum(phases[k] for k in labels[3:7])
        verdict = (
            f"**misses** the {FAILOVER_TARGET:g} s target by {u - FAILOVER_TARGET:.2f} s"
            if u > FAILOVER_TARGET
            else f"meets the {FAILOVER_TARGET:g} s target ({FAILOVER_TARGET - u:.2f} s margin)"
        )
        steps = {st: _med([r.steps.get(st, math.nan) for r in runs]) for st in FAILOVER_STEPS}
        out.append(
            f"- Failover ({label}): median write unavailability {sec(u)} {verdict}. Detection "
            f"is bounded below by the settings: the primary is DOWN after {FAILURE_THRESHOLD} "
            f"failed probes {INTERVAL:g} s apart, i.e. {(FAILURE_THRESHOLD - 1) * INTERVAL:g}-"
            f"{FAILURE_THRESHOLD * INTERVAL:g} s after the kill depending on its phase, and the "
            "loss is confirmed in the same tick once the replicas' WAL receivers stopped; "
            f"kill -> `confirmed` took {sec(detect)} (median). Execution (run start to "
            f"`dns_switched`, plus the planning before it) took {sec(execute)}: `fence` "
            f"{sec(steps['fence'])} (a new `python -m orchestrator sandbox fence` process, "
            f"while a bare `orchestrator --help` takes {sec(Dist(s.cli_startup).median)} "
            "here; then the sandbox lock, SIGKILL of what is left, and the driver's status "
            f"checks before and after), `promote` {sec(steps['promote'])}, `switch_dns` "
            f"{sec(steps['switch_dns'])}; the client needed {sec(phases[labels[7]])} more to "
            "resolve the new address and commit." + _outliers(runs)
        )
    if fo is not None and fo.failovers:
        bad = [r for r in fo.failovers if r.within_window is False]
        lost = sum(r.lost for r in fo.failovers)
        out.append(
            f"- Async loss: {lost} acknowledged commit(s) lost over {len(fo.failovers)} runs; "
            + (
                "every loss lies within the incident's reported window (RPO + one interval)."
                if not bad
                else f"**{len(bad)} run(s) lost commits older than the reported window** "
                "(the incident understated the loss)."
            )
        )
    if fs is not None and fs.failovers:
        lost = sum(r.lost for r in fs.failovers)
        on_eu = sum(r.lost_on_other for r in fs.failovers)
        out.append(
            f"- Sync loss: {lost} acknowledged commit(s) lost over {len(fs.failovers)} runs"
            + (
                " (target 0: met)."
                if lost == 0
                else f" (target 0: **missed**; {on_eu} of them were on `eu`: with `ANY 1` a "
                "commit is acknowledged once either replica flushed it, but the candidate is "
                "chosen by region preference, not by who has the most WAL)."
            )
        )
    if so is not None and so.switchovers:
        runs2 = so.switchovers
        u = _med([r.unavailability for r in runs2])
        steps = {st: _med([r.steps.get(st, math.nan) for r in runs2]) for st in SWITCHOVER_STEPS}
        window = sum(steps[st] for st in SWITCHOVER_STEPS[:6])
        command = _med([r.command for r in runs2])
        verdict = (
            f"**misses** the {SWITCHOVER_TARGET:g} s target by {u - SWITCHOVER_TARGET:.3f} s"
            if u > SWITCHOVER_TARGET
            else f"meets the {SWITCHOVER_TARGET:g} s target ({SWITCHOVER_TARGET - u:.3f} s margin)"
        )
        lost = sum(r.lost for r in runs2)
        out.append(
            f"- Switchover: median write unavailability {sec(u, 3)} {verdict}. Writes stop at "
            "`stop_writes` and resume once DNS points at `us-west`: the steps in between "
            + ", ".join(f"`{st}` {sec(steps[st], 3)}" for st in SWITCHOVER_STEPS[:6])
            + f" add up to {sec(window, 3)} (medians). The command itself takes "
            f"{sec(command)} (median"
            + (
                f"; read as the command's duration, the {SWITCHOVER_TARGET:g} s target would "
                "be missed"
                if command > SWITCHOVER_TARGET
                else ""
            )
            + "): CLI start-up to run start "
            f"{sec(_med([r.cli_startup or math.nan for r in runs2]))}, and `rejoin` "
            f"{sec(steps['rejoin'])} after the switch, which clients do not wait for. "
            f"Acknowledged commits lost: {lost}"
            + (" (target 0: met)." if lost == 0 else " (target 0: **missed**).")
        )
        split = [r for r in runs2 if r.daemon_reasons.get("SPLIT_BRAIN", 0)]
        own = sum(r.daemon_incidents for r in runs2)
        fenced = [r for r in runs2 if r.stale_fenced]
        if split or own or fenced:
            out.append(
                "- Switchover and the running daemon: the daemon keeps judging every tick while "
                "the command runs. Between `promote` and `rejoin` the old primary is read-only "
                "(`stop_writes`) but still a primary, on the older timeline: in "
                f"{len(split)} of {len(runs2)} runs the daemon reported `SPLIT_BRAIN` "
                f"({sum(r.daemon_reasons.get('SPLIT_BRAIN', 0) for r in runs2)} tick(s) in "
                "all). "
                + (
                    f"In {len(fenced)} run(s) it fenced the old primary itself as a stale "
                    "primary (`STALE_PRIMARY_FENCED`) while the switchover's `rejoin` was "
                    "fencing and rewinding the same node. "
                    if fenced
                    else "It never fenced the old primary itself (no `STALE_PRIMARY_FENCED`). "
                )
                + f"The command exited 0 in {sum(1 for r in runs2 if r.exit_code == 0)} of "
                f"{len(runs2)} runs. "
                + (
                    f"The daemon opened {own} incident(s) of its own (see the notes above). "
                    if own
                    else "The daemon opened no incident of its own. "
                )
                + (
                    "No commit acknowledged through the old primary is missing on the new one."
                    if lost == 0
                    else f"{lost} commit(s) acknowledged through the old primary are missing "
                    "on the new one."
                )
            )
    if not out:
        return []
    return ["### Analysis", "", *out, ""]


def findings(series: dict[str, Series]) -> list[str]:
    """Misses of a target, failed runs and anomalies of section 4 (never hidden)."""
    out: list[str] = []
    for name, s in series.items():
        out.extend(f"{name}: {e}" for e in s.errors)
        for r in s.failovers:
            tag = f"{name} #{r.index}"
            if r.status != "failed_over" or r.new_primary != NEW_PRIMARY:
                out.append(f"{tag}: incident {r.status}, new primary {r.new_primary}.")
            if r.mode == "sync" and r.lost:
                out.append(
                    f"{tag}: {r.lost} acknowledged commit(s) lost with synchronous replication "
                    f"({r.lost_on_other} of them on `eu`)."
                )
            if r.within_window is False:
                out.append(
                    f"{tag}: lost commits up to {_opt(r.oldest_lost, 3)} before the kill, "
                    f"beyond the reported loss window {_opt(r.loss_window)}."
                )
            if r.rpo is None or r.rto is None:
                out.append(f"{tag}: the incident reports no RTO or RPO.")
            out.extend(f"{tag}: {n}" for n in r.notes)
        if s.failovers:
            u = _med([r.unavailability for r in s.failovers])
            if u > FAILOVER_TARGET:
                out.append(
                    f"{name}: median write unavailability {sec(u)} misses the "
                    f"{FAILOVER_TARGET:g} s target (see the analysis in section 4)."
                )
        for w in s.switchovers:
            tag = f"{name} #{w.index}"
            if w.exit_code != 0 or w.status != "completed":
                out.append(f"{tag}: the command exited {w.exit_code} (run {w.status}).")
            if w.lost:
                out.append(f"{tag}: {w.lost} acknowledged commit(s) lost in a planned switchover.")
            if w.old_role != "replica":
                out.append(f"{tag}: the old primary's role afterwards is {w.old_role}.")
            if w.stale_fenced:
                out.append(
                    f"{tag}: the daemon fenced the old primary as a stale primary during the "
                    "switchover (concurrently with the switchover's `rejoin`)."
                )
            if w.daemon_incidents:
                out.append(f"{tag}: the daemon opened {w.daemon_incidents} incident(s) of its own.")
            out.extend(f"{tag}: {n}" for n in w.notes)
        if s.switchovers:
            u = _med([w.unavailability for w in s.switchovers])
            command = _med([w.command for w in s.switchovers])
            if command > SWITCHOVER_TARGET:
                out.append(
                    f"{name}: the `orchestrator switchover` command takes {sec(command)} end to "
                    f"end (median), above {SWITCHOVER_TARGET:g} s, while writes are unavailable "
                    f"for {sec(u, 3)} of it (CLI start-up before, the old primary's rejoin after)."
                )
            if u > SWITCHOVER_TARGET:
                out.append(
                    f"{name}: median write unavailability {sec(u, 3)} misses the "
                    f"{SWITCHOVER_TARGET:g} s target (see the analysis in section 4)."
                )
        expected = len(s.failovers) + len(s.switchovers) + len(s.errors)
        if expected < RUNS:
            out.append(f"{name}: only {expected} run(s) (fewer than the {RUNS} the issue asks).")
    return out
