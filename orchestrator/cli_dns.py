"""``orchestrator dns status`` and ``orchestrator dns switch``: presentation and exit codes only.

Exit codes of ``dns switch``: 0 every provider switched; 3 partial (the policy is met but a
supplier is degraded); 1 failed (the policy is not met); 4 refused by a safety rail (nothing
changed); 2 bad input. ``dns status`` exits 0 when every provider matches the desired state (or
none is recorded yet) and 3 when a provider drifted or could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from orchestrator import dnsstate
from orchestrator.config import Config, load_config
from orchestrator.dnsplan import SwitchOutcome, SwitchPlan, raise_if_unsafe
from orchestrator.dnsruntime import open_switcher, target_of_region
from orchestrator.dnsswitch import RecordDrift, ServedAnswer, SwitchReport
from orchestrator.errors import UsageError

EXIT = {SwitchOutcome.SUCCESS: 0, SwitchOutcome.PARTIAL: 3, SwitchOutcome.FAILED: 1}


def _print(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def _table(cols: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def plan_doc(plan: SwitchPlan) -> dict[str, Any]:
    return {
        "region": plan.region,
        "target": plan.target,
        "checksum": plan.checksum(),
        "changes": [
            {
                "provider": c.provider,
                "record": c.after.name,
                "type": c.after.type,
                "kind": c.kind.value,
                "current": list(c.before.values) if c.before else None,
                "current_ttl": c.before.ttl if c.before else None,
                "new": list(c.after.values),
                "ttl": c.after.ttl,
            }
            for c in plan.changes
        ],
        "unreadable": dict(plan.unreadable),
    }


def render_plan(plan: SwitchPlan) -> str:
    rows = [
        [
            c.provider,
            c.after.name,
            c.after.type,
            ",".join(c.before.values) if c.before else "(absent)",
            str(c.before.ttl) if c.before else "-",
            ",".join(c.after.values),
            str(c.after.ttl),
            c.kind.value,
        ]
        for c in plan.changes
    ]
    head = f"switch to {plan.region} ({plan.target})  plan checksum {plan.checksum()}"
    body = _table(
        ["PROVIDER", "RECORD", "TYPE", "CURRENT", "TTL", "NEW", "NEW TTL", "CHANGE"], rows
    )
    notes = [
        f"warning: {p} could not be read ({why}); its change is planned without a diff"
        for p, why in plan.unreadable.items()
    ]
    return "\n".join([head, body, *notes])


def report_doc(report: SwitchReport, answers: list[ServedAnswer]) -> dict[str, Any]:
    return {
        "outcome": report.outcome.value,
        "duration_seconds": round(report.duration, 3),
        "providers": [
            {
                "provider": r.provider,
                "ok": r.ok,
                "changed": r.changed,
                "attempts": r.attempts,
                "live_after_seconds": round(r.live_after, 3) if r.live_after is not None else None,
                "error": r.error,
                "error_class": r.error_class,
            }
            for r in report.results
        ],
        "verification": [
            {
                "source": a.source,
                "provider": a.provider,
                "record": a.record,
                "serves_new_answer": a.ok,
                "values": list(a.values),
                "matched_after_seconds": round(a.matched_after, 3)
                if a.matched_after is not None
                else None,
                "error": a.error,
            }
            for a in answers
        ],
    }


def render_report(doc: dict[str, Any]) -> str:
    rows = [
        [
            p["provider"],
            "ok" if p["ok"] else "FAILED",
            str(p["changed"]),
            str(p["attempts"]),
            f"{p['live_after_seconds']:.2f}s" if p["live_after_seconds"] is not None else "-",
            p["error"] or "",
        ]
        for p in doc["providers"]
    ]
    out = [
        f"outcome: {doc['outcome'].upper()} in {doc['duration_seconds']:.2f}s",
        _table(["PROVIDER", "RESULT", "CHANGED", "ATTEMPTS", "LIVE AFTER", "ERROR"], rows),
    ]
    if doc["verification"]:
        vrows = [
            [
                v["provider"],
                v["source"],
                v["record"],
                ",".join(v["values"]) or "-",
                "yes" if v["serves_new_answer"] else "NO",
                f"{v['matched_after_seconds']:.2f}s"
                if v["matched_after_seconds"] is not None
                else "-",
                v["error"] or "",
            ]
            for v in doc["verification"]
        ]
        out += [
            "",
            "verification:",
            _table(
                ["PROVIDER", "SOURCE", "RECORD", "SERVES", "NEW ANSWER", "AFTER", "ERROR"], vrows
            ),
        ]
    return "\n".join(out)


def _config(args: argparse.Namespace) -> Config:
    from orchestrator.cli import config_path

    cfg = load_config(config_path(args))
    if cfg.dns is None:
        raise UsageError("the configuration has no dns section")
    return cfg


def cmd_dns_switch(args: argparse.Namespace) -> int:
    cfg = _config(args)
    assert cfg.dns is not None
    target = target_of_region(cfg, args.to)
    return asyncio.run(_switch(cfg, args, target))


async def _switch(cfg: Config, args: argparse.Namespace, target: str) -> int:
    assert cfg.dns is not None
    async with open_switcher(cfg) as sw:
        plan = await sw.plan(args.to, target, args.record or [])
        raise_if_unsafe(plan, sw.owned, cfg.dns.max_changes, args.force)
        if args.checksum and args.checksum != plan.checksum():
            raise UsageError(
                f"the plan changed since it was reviewed (checksum {plan.checksum()}, "
                f"expected {args.checksum}); run with --dry-run again"
            )
        if args.dry_run:
            if args.output == "json":
                _print(json.dumps({"dry_run": True, "plan": plan_doc(plan)}, indent=2))
            else:
                _print(render_plan(plan))
                _print("dry run: nothing was changed")
            return 0
        if args.output != "json":
            _print(render_plan(plan))
        report = await sw.apply(plan, force=args.force)
        if any(r.ok for r in report.results):
            dnsstate.save(
                cfg.state_dir,
                dnsstate.DesiredState(plan.region, plan.target, plan.desired, time.time()),
            )
        ok_providers = {r.provider for r in report.results if r.ok}
        verify_plan = SwitchPlan(
            plan.region,
            plan.target,
            plan.desired,
            tuple(c for c in plan.changes if c.provider in ok_providers),
        )
        answers = await sw.verify(verify_plan, timeout=args.verify_timeout)
    doc = report_doc(report, answers)
    if args.output == "json":
        _print(json.dumps({"dry_run": False, "plan": plan_doc(plan), "result": doc}, indent=2))
    else:
        _print(render_report(doc))
    return EXIT[report.outcome]


def cmd_dns_status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    return asyncio.run(_status(cfg, args))


def _drift_state(d: RecordDrift, desired: dnsstate.DesiredState | None) -> str:
    if d.error is not None:
        return "UNREADABLE"
    if desired is None:
        return "no desired state"
    return "DRIFT" if d.drifted else "in sync"


async def _status(cfg: Config, args: argparse.Namespace) -> int:
    desired = dnsstate.load(cfg.state_dir)
    async with open_switcher(cfg) as sw:
        drifts = await sw.drift(desired)
    bad = any(d.error is not None or (desired is not None and d.drifted) for d in drifts)
    if args.output == "json":
        _print(
            json.dumps(
                {
                    "desired": {
                        "region": desired.region,
                        "target": desired.target,
                        "at": desired.at,
                    }
                    if desired
                    else None,
                    "records": [
                        {
                            "provider": d.provider,
                            "record": d.record,
                            "serves": list(d.current.values) if d.current else None,
                            "ttl": d.current.ttl if d.current else None,
                            "desired": list(d.desired.values) if desired else None,
                            "state": _drift_state(d, desired),
                            "error": d.error,
                        }
                        for d in drifts
                    ],
                },
                indent=2,
            )
        )
        return 3 if bad else 0
    want = f"{desired.region} ({desired.target})" if desired else "none recorded yet"
    _print(f"desired state: {want}")
    rows = [
        [
            d.provider,
            d.record,
            (",".join(d.current.values) or "(empty)") if d.current else "(absent)",
            str(d.current.ttl) if d.current else "-",
            ",".join(d.desired.values) if desired else "-",
            _drift_state(d, desired),
            d.error or "",
        ]
        for d in drifts
    ]
    _print(_table(["PROVIDER", "RECORD", "SERVES", "TTL", "DESIRED", "STATE", "ERROR"], rows))
    return 3 if bad else 0


def add_parser(sub: Any) -> None:
    dns = sub.add_parser("dns", help="DNS records that follow the primary region")
    dsub = dns.add_subparsers(dest="dns_command", required=True, metavar="ACTION")
    st = dsub.add_parser("status", help="what each provider serves, and drift")
    st.add_argument("--config", "-c", help="config file (default: $HELIOS_CONFIG)")
    st.add_argument("--output", "-o", choices=["table", "json"], default="table")
    st.set_defaults(func=cmd_dns_status)
    sw = dsub.add_parser("switch", help="point the owned records at a region's target")
    sw.add_argument("--config", "-c", help="config file (default: $HELIOS_CONFIG)")
    sw.add_argument("--to", required=True, metavar="REGION", help="region to point at")
    sw.add_argument("--dry-run", action="store_true", help="print the per-provider diff only")
    sw.add_argument("--record", action="append", metavar="NAME", help="only this owned record")
    sw.add_argument("--force", action="store_true", help="allow more than dns.max_changes")
    sw.add_argument("--checksum", help="refuse unless the plan still has this checksum")
    sw.add_argument("--verify-timeout", type=float, default=30.0, metavar="SECONDS")
    sw.add_argument("--output", "-o", choices=["table", "json"], default="table")
    sw.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="stderr log level (info shows every change with its before/after values)",
    )
    sw.set_defaults(func=cmd_dns_switch)
