"""``orchestrator report``: the report of an incident or a drill, as Markdown, JSON or a standalone
HTML page; ``orchestrator report --list`` lists what can be reported. Presentation only: the
documents come from :mod:`orchestrator.reports`.

An unknown id is a usage error (exit 2, the most recent ids named); an unreadable record exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from orchestrator import reports
from orchestrator.atomic import write_text
from orchestrator.config import load_config
from orchestrator.errors import UsageError
from orchestrator.reportparts import fmt_time


def _print(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.cli import config_path

    if args.list and args.id:
        raise UsageError("give either an ID or --list, not both")
    if not args.list and not args.id:
        raise UsageError("give the ID of an incident or a drill (orchestrator report --list)")
    cfg = load_config(config_path(args))
    if args.list:
        return _list(cfg.state_dir, args.format)
    objectives = {"rto_seconds": cfg.objectives.rto, "rpo_seconds": cfg.objectives.rpo}
    doc = reports.load_source(cfg.state_dir, args.id, objectives=objectives)
    text = reports.render(doc, args.format)
    if args.output:
        path = write_text(Path(args.output), text)
        _print(f"{doc['kind']} report {doc['id']} ({args.format}) written to {path}")
    else:
        sys.stdout.write(text)
    return 0


def _list(state_dir: str, fmt: str) -> int:
    items = reports.list_sources(state_dir)
    if fmt == "json":
        _print(json.dumps(items, indent=2))
        return 0
    if not items:
        _print(f"no incidents or drills recorded in {state_dir}")
        return 0
    _print(f"{'ID':<34} {'KIND':<9} {'WHEN (UTC)':<28} RESULT")
    for s in items:
        _print(f"{s['id']:<34} {s['kind']:<9} {fmt_time(s['when']):<28} {s['result']}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``orchestrator report``."""
    p = sub.add_parser(
        "report",
        help="report of an incident or a drill (Markdown, JSON or standalone HTML)",
        description="Print the report of incident inc-... or drill drill-... from the state "
        "directory, or write it to --output. --list lists what can be reported.",
    )
    p.add_argument("id", nargs="?", help="incident id (inc-...) or drill id (drill-...)")
    p.add_argument(
        "--format", "-f", choices=list(reports.FORMATS), default="md", help="default: md"
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE (atomically)")
    p.add_argument("--list", action="store_true", help="list incidents and drills")
    p.add_argument("--config", "-c", help="config file (default: $HELIOS_CONFIG)")
    p.set_defaults(func=cmd_report)
