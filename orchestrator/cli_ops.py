"""``orchestrator pause|resume|ack`` and ``orchestrator incidents``: presentation only.

pause/resume/ack write the operator controls into the configured ``state_dir``; the daemon reads
them on its next tick (within one probe interval).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

from orchestrator.apiclient import (
    add_daemon_arguments,
    client_for,
    require_daemon_when_coordinated,
)
from orchestrator.config import Config, load_config
from orchestrator.controls import load_controls, load_memory, save_controls
from orchestrator.incidents import Incident, IncidentStore


def _print(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _config(args: argparse.Namespace) -> Config:
    from orchestrator.cli import config_path

    return load_config(config_path(args))


def _state_dir(args: argparse.Namespace) -> str:
    return _config(args).state_dir


def _control(args: argparse.Namespace, action: str) -> int:
    """pause / resume / ack: in the state dir, or through the daemon's API (``--daemon``)."""
    cfg = _config(args)
    if args.daemon is not None:
        body = {"execute": not args.dry_run, "reason": args.reason}
        with client_for(cfg, args) as client:
            doc = client.post(f"/v1/{action}", body)
        _print(("would " if doc["dry_run"] else "") + f"{action}: {doc['effect']}")
        if doc["dry_run"]:
            _print(f"dry run (the daemon at {client.base}): nothing was changed")
        return 0
    require_daemon_when_coordinated(cfg, args)
    d = cfg.state_dir
    before = load_controls(d)
    if action == "pause":
        after = replace(before, paused=True)
        text = (
            "paused: the daemon keeps observing but takes no automatic action (orchestrator resume)"
        )
    elif action == "resume":
        after = replace(before, paused=False)
        text = "resumed: automatic actions are enabled again"
    else:
        now = time.time()
        after = replace(before, acked_at=now)
        mem = load_memory(d)
        last = _iso(mem.last_failover_at) if mem.last_failover_at else "none"
        text = (
            f"acknowledged at {_iso(now)}: the cooldown of the last automatic failover "
            f"(started {last}) no longer blocks an automatic failover"
        )
    if args.dry_run:
        _print(
            f"dry run: would write paused={after.paused} acked_at={_iso(after.acked_at)} "
            f"(now paused={before.paused}); nothing was changed"
        )
        return 0
    save_controls(d, after)
    _print(text)
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    return _control(args, "pause")


def cmd_resume(args: argparse.Namespace) -> int:
    return _control(args, "resume")


def cmd_ack(args: argparse.Namespace) -> int:
    return _control(args, "ack")


def _summary(inc: Incident) -> dict[str, Any]:
    doc = inc.summary()
    return {"opened": _iso(inc.opened_at), **doc}


def cmd_incidents(args: argparse.Namespace) -> int:
    store = IncidentStore(_state_dir(args))
    if args.id:
        inc = store.load(args.id)
        if args.output == "json":
            _print(json.dumps(asdict(inc), indent=2, default=str))
            return 0
        _print(
            f"{inc.id}  {inc.status}  primary {inc.primary} ({inc.region}) -> "
            f"{inc.new_primary or '-'}"
        )
        _print(
            f"measured RTO {inc.rto_seconds if inc.rto_seconds is not None else '-'} s, "
            f"RPO {inc.rpo_seconds if inc.rpo_seconds is not None else '-'} s / "
            f"{inc.rpo_bytes if inc.rpo_bytes is not None else '-'} bytes"
        )
        for e in inc.timeline:
            offset = e["at"] - inc.opened_at
            _print(f"  +{offset:7.2f}s  {e['event']:<22} {e.get('detail', '')}")
        for n in inc.notes:
            _print(f"  note: {n}")
        return 0
    items = [_summary(i) for i in store.all()]
    if args.output == "json":
        _print(json.dumps(items, indent=2))
        return 0
    if not items:
        _print("no incidents recorded")
        return 0
    for i in items:
        rto = f"{i['rto_seconds']:.1f}s" if i["rto_seconds"] is not None else "-"
        rpo = f"{i['rpo_seconds']:.1f}s" if i["rpo_seconds"] is not None else "-"
        _print(
            f"{i['id']}  {i['status']:<12} {i['opened']}  {i['primary']} -> "
            f"{i['new_primary'] or '-':<10} RTO {rto:<7} RPO {rpo}"
        )
    return 0


def add_parsers(sub: Any) -> None:
    for name, func, text in (
        ("pause", cmd_pause, "maintenance mode: observe, never act"),
        ("resume", cmd_resume, "leave maintenance mode"),
        ("ack", cmd_ack, "acknowledge the last automatic failover (lifts its cooldown)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", "-c", help="config file (default: $HELIOS_CONFIG)")
        p.add_argument("--dry-run", action="store_true", help="show the change, make none")
        p.add_argument("--reason", help="why (recorded by the daemon's audit log with --daemon)")
        add_daemon_arguments(p)
        p.set_defaults(func=func)
    inc = sub.add_parser("incidents", help="list incidents, or show one with its timeline")
    inc.add_argument("id", nargs="?", help="incident id")
    inc.add_argument("--config", "-c", help="config file (default: $HELIOS_CONFIG)")
    inc.add_argument("--output", "-o", choices=["table", "json"], default="table")
    inc.set_defaults(func=cmd_incidents)
