"""``orchestrator failover``, ``switchover`` and ``runbook``: presentation and exit codes.

Exit codes: 0 done (or the dry run printed); 1 the run failed or aborted; 2 bad input; 4
refused by a safety rail or a stale checksum (nothing was changed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import replace
from typing import Any

from orchestrator import health
from orchestrator.apiclient import (
    add_daemon_arguments,
    client_for,
    require_daemon_when_coordinated,
)
from orchestrator.config import Config, load_config
from orchestrator.controls import load_mark, mark_path
from orchestrator.dnsruntime import open_switcher
from orchestrator.errors import UnsafePlan
from orchestrator.executor import RunStatus
from orchestrator.failover import DEFAULT_RUNBOOKS, FailoverService, load_product_runbooks
from orchestrator.model import Assessment
from orchestrator.notify import open_notifier
from orchestrator.planning import FailoverPlan
from orchestrator.runbook import ACTION_PARAMS, describe, load_runbooks


def _print(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")


def _config(args: argparse.Namespace) -> Config:
    from orchestrator.cli import config_path

    return load_config(config_path(args))


async def _assess(cfg: Config) -> Assessment:
    """One observation of every node; the last primary the daemon saw fills the gap when the
    primary does not answer."""
    from orchestrator.app import health_settings, probe_once

    topo, snap = await probe_once(cfg)
    a = health.assess(None, snap, topo, health_settings(cfg))
    if a.primary is None:
        mark = await asyncio.to_thread(load_mark, mark_path(cfg.state_dir))
        if mark is not None:
            a = replace(a, primary=mark.node)
    return a


def render_plan(plan: FailoverPlan | dict[str, Any]) -> str:
    """The plan as the operator reviews it (from the plan or its ``to_dict`` document)."""
    d = plan.to_dict() if isinstance(plan, FailoverPlan) else plan
    old, loss = d["old_primary"], d["expected_data_loss"]
    lines = [
        f"{d['kind'].upper()} plan {d['checksum']} (trigger {d['trigger']})",
        f"old primary: {old['node']} ({old['region']}), "
        + ("reachable" if old["reachable"] else "unreachable"),
        f"candidate:   {d['why']}",
        f"expected data loss: {_v(loss['seconds'], 's')}, {_v(loss['bytes'], ' bytes')} "
        f"(RPO {d['budget']['rpo_seconds']:g}s)",
        f"fence: {d['fence']}",
        "DNS:",
    ]
    if not d["dns"]:
        lines.append("  (no dns configured)")
    for c in d["dns"]:
        cur = ",".join(c["current"]) if c["current"] else "(absent)"
        lines.append(
            f"  {c['provider']:<11} {c['record']} {c['type']} {cur} -> "
            f"{','.join(c['new'])} ttl {c['ttl']} ({c['change']})"
        )
    lines.append("steps:")
    for i, s in enumerate(d["steps"], start=1):
        params = " ".join(f"{k}={v}" for k, v in s["params"].items())
        lines.append(
            f"  {i}. {s['name']:<13} {params:<44} timeout {s['timeout_seconds']:g}s x"
            f"{s['attempts']}  on failure {s['on_failure']:<8} (worst case by then "
            f"{s['worst_case_cumulative_seconds']:g}s)"
        )
    b = d["budget"]
    verdict = "fits the RTO" if b["fits_rto"] else "exceeds the RTO if every step hits its timeout"
    lines.append(
        f"time budget: worst case {b['worst_case_seconds']:g}s vs RTO "
        f"{b['rto_seconds']:g}s ({verdict})"
    )
    o = d["overrides"]
    if o["accept_data_loss"] or o["force"]:
        lines.append(f"overrides: accept_data_loss={o['accept_data_loss']} force={o['force']}")
    return "\n".join(lines)


def _v(value: object, unit: str) -> str:
    return "unknown" if value is None else f"{value}{unit}"


def cmd_failover(args: argparse.Namespace) -> int:
    if args.daemon is not None:
        return _via_daemon(_config(args), args, "failover")
    return asyncio.run(_run(_config(args), args, "failover"))


def cmd_switchover(args: argparse.Namespace) -> int:
    if args.daemon is not None:
        return _via_daemon(_config(args), args, "switchover")
    return asyncio.run(_run(_config(args), args, "switchover"))


def _via_daemon(cfg: Config, args: argparse.Namespace, kind: str) -> int:
    """The same command, carried out by the running daemon (its latest tick plans it)."""
    body: dict[str, Any] = {"execute": not args.dry_run, "to": args.to, "force": args.force}
    if args.checksum:
        body["checksum"] = args.checksum
    if kind == "failover":
        body["accept_data_loss"] = args.accept_data_loss
    with client_for(cfg, args) as client:
        doc = client.post(f"/v1/{kind}", body)
        plan = doc["plan"]
        if args.dry_run:
            if args.output == "json":
                _print(json.dumps({"dry_run": True, "plan": plan}, indent=2))
            else:
                _print(render_plan(plan))
                _print(f"dry run (planned by the daemon at {client.base}): nothing was changed")
            return 0
        if args.output != "json":
            _print(render_plan(plan))
            _print(f"accepted by the daemon at {client.base}: incident {doc['incident']}")
        patience = float(plan["budget"]["worst_case_seconds"]) + 60.0
        inc = client.wait(
            str(doc["links"]["incident"]), lambda d: d.get("closed_at") is not None, patience
        )
    if args.output == "json":
        _print(json.dumps({"incident": inc}, indent=2))
    else:
        _print(f"incident {inc['id']}: {inc['status']}")
        for e in inc["timeline"]:
            _print(f"  +{e['at'] - inc['opened_at']:7.2f}s  {e['event']:<22} {e.get('detail', '')}")
        for n in inc["notes"]:
            _print(f"  note: {n}")
        _print(f"RTO {_v(inc['rto_seconds'], 's')}, RPO {_v(inc['rpo_seconds'], 's')}")
    return 0 if inc["status"] == "failed_over" else 1


async def _run(cfg: Config, args: argparse.Namespace, kind: str) -> int:
    require_daemon_when_coordinated(cfg, args)
    async with open_switcher_or_none(cfg) as switcher, open_notifier(cfg) as notifier:
        service = FailoverService(cfg, switcher, notifier)
        try:
            unfinished = await asyncio.to_thread(service.journal.unfinished)
            if unfinished and not args.dry_run:
                raise UnsafePlan(
                    "a failover or switchover run is still unfinished (the daemon "
                    "resumes it); wait for it or inspect the journal"
                )
            assessment = await _assess(cfg)
            plan = await service.plan(
                assessment,
                kind=kind,
                to_region=args.to,
                trigger="manual",
                accept_data_loss=getattr(args, "accept_data_loss", False),
                force=args.force,
            )
            if args.checksum and args.checksum != plan.checksum():
                raise UnsafePlan(
                    f"the world changed since the plan was reviewed (checksum now "
                    f"{plan.checksum()}, expected {args.checksum}); review the dry run again"
                )
            if args.dry_run:
                if args.output == "json":
                    _print(json.dumps({"dry_run": True, "plan": plan.to_dict()}, indent=2))
                else:
                    _print(render_plan(plan))
                    _print("dry run: nothing was changed")
                return 0
            if args.output != "json":
                _print(render_plan(plan))
            result, inc = await service.execute(plan)
        finally:
            await service.aclose()
    doc: dict[str, Any] = {
        "run": result.run_id,
        "status": result.status.value,
        "reason": result.reason,
        "incident": inc.id,
        "rto_seconds": inc.rto_seconds,
        "rpo_seconds": inc.rpo_seconds,
        "steps": [
            {
                "name": s.name,
                "status": s.status.value,
                "attempts": s.attempts,
                "seconds": round(s.duration, 3),
                "error": s.error,
            }
            for s in result.steps
        ],
    }
    if args.output == "json":
        _print(json.dumps(doc, indent=2))
    else:
        _print(
            f"run {result.run_id}: {result.status.value}"
            + (f" ({result.reason})" if result.reason else "")
        )
        for s in doc["steps"]:
            _print(f"  {s['name']:<13} {s['status']:<10} {s['seconds']:7.2f}s  {s['error'] or ''}")
        _print(f"incident {inc.id}: RTO {_v(inc.rto_seconds, 's')}, RPO {_v(inc.rpo_seconds, 's')}")
    return 0 if result.status is RunStatus.COMPLETED and inc.status == "failed_over" else 1


class open_switcher_or_none:
    """``open_switcher`` when dns is configured, else a context yielding None."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._cm: Any = open_switcher(cfg) if cfg.dns is not None else None

    async def __aenter__(self) -> Any:
        return await self._cm.__aenter__() if self._cm is not None else None

    async def __aexit__(self, *exc: Any) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(*exc)


def cmd_runbook(args: argparse.Namespace) -> int:
    if args.action == "validate":
        if args.target:
            books = load_runbooks(args.target, ACTION_PARAMS)
        elif args.config or os.environ.get("HELIOS_CONFIG"):
            books = load_product_runbooks(_config(args))
        else:
            books = load_runbooks(DEFAULT_RUNBOOKS, ACTION_PARAMS)
        for name, book in sorted(books.items()):
            _print(f"{name}: OK ({len(book.steps)} steps)")
        return 0
    books = load_product_runbooks(_config(args))
    if args.target not in books:
        _print(f"no runbook named {args.target!r} (have: {', '.join(sorted(books))})")
        return 2
    _print("\n".join(describe(books[args.target])))
    return 0


def add_parsers(sub: Any) -> None:
    for kind, func in (("failover", cmd_failover), ("switchover", cmd_switchover)):
        p = sub.add_parser(kind, help=f"plan (--dry-run) or run a {kind}")
        p.add_argument("--config", "-c", help="config file (default: $HELIOS_CONFIG)")
        p.add_argument(
            "--to",
            metavar="REGION",
            required=kind == "switchover",
            help="target region (default: the best candidate)",
        )
        p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
        p.add_argument("--checksum", help="refuse unless the plan still has this checksum")
        p.add_argument(
            "--force",
            action="store_true",
            help="override the healthy-primary and no-fence rails (recorded in the incident)",
        )
        if kind == "failover":
            p.add_argument(
                "--accept-data-loss",
                action="store_true",
                help="promote a candidate beyond the RPO (recorded)",
            )
        p.add_argument("--output", "-o", choices=["table", "json"], default="table")
        add_daemon_arguments(p)
        p.set_defaults(func=func)
    rb = sub.add_parser("runbook", help="validate or show runbooks")
    rb.add_argument("action", choices=["validate", "show"])
    rb.add_argument("target", nargs="?", help="validate: a directory; show: a runbook name")
    rb.add_argument("--config", "-c", help="config file (default: $HELIOS_CONFIG)")
    rb.set_defaults(func=cmd_runbook)
