"""``orchestrator drill``: run (or plan, ``--dry-run``) a DR drill; presentation and exit codes.

Exit codes: 0 the drill passed (or the dry run's pre-checks and plan passed); 1 it failed or
was aborted; 2 bad input; 4 refused by a pre-check (nothing was changed).

The health verdicts come from a private observer ticking like the daemon (:class:`TickAssessor`):
several ticks before the pre-checks, so verdicts and replication lag are real, not one probe.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from orchestrator.apiclient import (
    add_daemon_arguments,
    client_for,
    require_daemon_when_coordinated,
)
from orchestrator.cli_failover import open_switcher_or_none
from orchestrator.config import Config, load_config
from orchestrator.drill import DrillRunner
from orchestrator.errors import HeliosError
from orchestrator.failover import FailoverService
from orchestrator.loop import DaemonState, Loop
from orchestrator.model import Assessment
from orchestrator.notify import open_notifier
from orchestrator.observability.metrics import Metrics

WARMUP_TICKS = 3


def _print(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


class TickAssessor:
    """``assess()`` for the CLI: probes every node, judges with the daemon's health window and
    writes the heartbeat on the primary, one tick per probe interval.

    The first call runs ``warmup`` ticks (verdicts and heartbeat lag settle); every later call
    runs the next tick on the interval's schedule, so polling it never probes faster than the
    daemon would. Each call is bounded by the probe timeout per tick. :meth:`aclose` closes
    every probe and heartbeat connection (bounded)."""

    def __init__(self, cfg: Config, warmup: int = WARMUP_TICKS) -> None:
        from orchestrator.app import build_observer, health_settings, heartbeat_factory, topology

        topo = topology(cfg)
        self._interval = cfg.probes.interval
        self._warmup = max(1, warmup)
        self._state = DaemonState(
            topo=topo, priorities={r.name: r.priority for r in cfg.regions}, interval=self._interval
        )
        self._loop = Loop(
            state=self._state,
            observer=build_observer(cfg),
            settings=health_settings(cfg),
            metrics=Metrics(CollectorRegistry(), topo),
            heartbeat=heartbeat_factory(cfg) if cfg.probes.heartbeat else None,
        )
        self._next: float | None = None

    async def __call__(self) -> Assessment:
        ticks = self._warmup if self._next is None else 1
        a: Assessment | None = None
        for _ in range(ticks):
            if self._next is not None:
                await asyncio.sleep(max(0.0, self._next - time.monotonic()))
            self._next = time.monotonic() + self._interval
            a = await self._loop.tick()
        assert a is not None
        return a

    async def aclose(self) -> None:
        await self._loop.aclose()


def cmd_drill(args: argparse.Namespace) -> int:
    from orchestrator.cli import config_path

    cfg = load_config(config_path(args))
    if args.daemon is not None:
        return _drill_via_daemon(cfg, args)
    return asyncio.run(_drill(cfg, args))


def _drill_via_daemon(cfg: Config, args: argparse.Namespace) -> int:
    """The drill run (or planned) by the running daemon, judged on its own ticks."""
    body = {
        "execute": not args.dry_run,
        "kind": args.kind,
        "to": args.to,
        "failback": args.failback,
    }
    with client_for(cfg, args) as client:
        doc = client.post("/v1/drill", body)
        if args.dry_run:
            record, planned = doc["drill"], doc["planned"]
        else:
            if args.output != "json":
                _print(f"drill {doc['drill']} accepted by the daemon at {client.base}")
            patience = cfg.drill.max_duration + 60.0
            record = client.wait(
                str(doc["links"]["drill"]), lambda d: d.get("result") != "running", patience
            )
            planned = []
    if args.output == "json":
        out = dict(record)
        if args.dry_run:
            out["planned"] = planned
        _print(json.dumps(out, indent=2, default=str))
    elif "legs" in record:
        _print(render(record, planned))
    else:
        _print(f"drill {record['id']}: {record['result']} ({record.get('reason', '')})")
    return _exit_status(str(record["result"]))


def _exit_status(result: str) -> int:
    if result == "refused":
        return 4
    return 0 if result in ("passed", "planned") else 1


async def _drill(cfg: Config, args: argparse.Namespace) -> int:
    require_daemon_when_coordinated(cfg, args)
    assessor = TickAssessor(cfg)
    try:
        async with open_switcher_or_none(cfg) as switcher, open_notifier(cfg) as notifier:
            service = FailoverService(cfg, switcher, notifier)
            try:
                runner = DrillRunner(cfg, service, assessor, trigger="manual")
                record = await runner.run(args.kind, args.to, args.failback, args.dry_run)
                if notifier is not None and not args.dry_run and cfg.notifications.send_drills:
                    await notifier.drill_event(record, "drill_finished", time.time())
                    await asyncio.to_thread(runner.store.save, record)
            finally:
                await service.aclose()
    finally:
        await assessor.aclose()
    reports = [] if args.dry_run else _write_reports(record, cfg)
    if args.output == "json":
        doc = dict(record)
        if args.dry_run:
            doc["planned"] = runner.planned  # dry run only; never stored
        _print(json.dumps(doc, indent=2, default=str))
    else:
        _print(render(record, runner.planned))
        if not args.dry_run:
            _print(f"record: {runner.store.path(record['id'])}")
        for p in reports:
            _print(f"report: {p}")
    return _exit_status(str(record["result"]))


def _write_reports(record: dict[str, Any], cfg: Config) -> list[Path]:
    """The drill's report and its legs' incident reports (the drill's verdict stands without
    them: a failure to write is a warning)."""
    from orchestrator import reports

    objectives = {"rto_seconds": cfg.objectives.rto, "rpo_seconds": cfg.objectives.rpo}
    try:
        return reports.write_drill_reports(record, cfg.state_dir, objectives)
    except (HeliosError, OSError) as exc:
        sys.stderr.write(f"warning: the drill report could not be written: {exc}\n")
        return []


# --- presentation -----------------------------------------------------------------------------


def _s(v: Any, unit: str = "s") -> str:
    return "-" if v is None else f"{v:.2f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def _when(ts: Any) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(record: dict[str, Any], planned: list[dict[str, Any]]) -> str:
    obj = record["objectives"]
    lines = [
        f"drill {record['id']} ({record['kind']}, trigger {record['trigger']}"
        + (", dry run" if record["dry_run"] else "")
        + f") started {_when(record['started_at'])}",
        f"objectives: RTO {obj['rto_seconds']:g}s, RPO {obj['rpo_seconds']:g}s",
        "pre-checks:",
    ]
    for c in record["prechecks"]:
        lines.append(f"  [{'ok' if c['ok'] else 'FAIL':>4}] {c['name']:<18} {c['detail']}")
    for leg in record["legs"]:
        lines += _render_leg(leg, obj, record["dry_run"])
    for p in planned:
        lines.append(f"leg {p['leg']} would run a {p['kind']}:")
        if p["failure_command"]:
            lines.append(f"  failure injected with: {' '.join(p['failure_command'])}")
        if p["plan"]:
            lines.append(f"  candidate: {p['plan']['why']}")
            for d in p["plan"]["dns"]:
                lines.append(
                    f"  dns {d['provider']}: {d['record']} {','.join(d['current'] or ['-'])} "
                    f"-> {','.join(d['new'])}"
                )
        lines += [f"  measures {m}" for m in p["measures"]]
    if record["dry_run"] and record["result"] == "planned":
        lines.append("dry run: nothing was changed")
    load = record["load"]
    if not record["dry_run"] and record["result"] != "refused":
        lines.append(
            f"write load: {load['rate']:g}/s, {load['acked']} acknowledged, "
            f"{load['errors']} failed attempts"
        )
    lines.append(f"result: {str(record['result']).upper()}")
    lines += [f"  - {r}" for r in record["reasons"]]
    return "\n".join(lines)


def _render_leg(leg: dict[str, Any], obj: dict[str, Any], dry: bool) -> list[str]:
    verdict = "planned" if dry else ("PASSED" if leg["passed"] else "FAILED")
    out = [f"leg {leg['name']} ({leg['from_node']} -> {leg['to_node'] or '?'}): {verdict}"]
    if dry:
        out.append("  steps: " + ", ".join(p["name"] for p in leg["phases"]))
        return out
    out += [
        f"  RTO {_s(leg['rto_seconds'])} (objective {obj['rto_seconds']:g}s)   "
        f"RPO {_s(leg['rpo_seconds'])} (objective {obj['rpo_seconds']:g}s)",
        f"  lost {_s(leg['lost_commits'], '')} of {_s(leg['acked_commits'], '')} acknowledged "
        f"commits; writes unavailable {_s(leg['write_unavailable_seconds'])}",
        f"  run {leg['run_id'] or '-'}, incident {leg['incident_id'] or '-'}",
    ]
    for p in leg["phases"]:
        took = (
            p["finished_at"] - p["started_at"]
            if p["finished_at"] is not None and p["started_at"] is not None
            else None
        )
        out.append(f"    {p['name']:<13} {p['status']:<8} {_s(took)}")
    out += [
        f"  dns {d['provider']:<11} {'ok' if d['ok'] else 'FAIL'}  {d['detail']}"
        for d in leg["dns"]
    ]
    out += [
        f"  smoke {c['name']} ({c['kind']}) {'ok' if c['ok'] else 'FAIL'} "
        f"{c['latency_ms']:g}ms  {c['detail']}"
        for c in leg["smoke"]
    ]
    out += [f"  ! {r}" for r in leg["reasons"]]
    return out


def add_parsers(sub: Any) -> None:
    """Register ``orchestrator drill``."""
    p = sub.add_parser(
        "drill",
        help="run a DR drill (switchover or failover) and measure RTO/RPO",
        description="Pre-checks, then move (switchover) or fail (failover) the primary under a "
        "synthetic write load, measure RTO and RPO per leg, verify DNS and the smoke checks, and "
        "judge against the objectives. Defaults come from the config's drill section.",
    )
    p.add_argument("--config", "-c", help="config file (default: $HELIOS_CONFIG)")
    p.add_argument("--dry-run", action="store_true", help="pre-checks and plan; change nothing")
    p.add_argument("--to", metavar="REGION", help="target region (default: drill.to or the best)")
    p.add_argument(
        "--failback",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="move the primary back afterwards (default: drill.failback)",
    )
    p.add_argument(
        "--kind", choices=["switchover", "failover"], help="default: drill.kind (switchover)"
    )
    p.add_argument("--output", "-o", choices=["text", "json"], default="text")
    add_daemon_arguments(p)
    p.set_defaults(func=cmd_drill)
