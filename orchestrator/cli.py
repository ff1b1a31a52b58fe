"""Command line. Maps errors to exit codes; holds no domain logic.

Exit codes: 0 success; 1 operation failed (a runtime error, explained on stderr); 2 bad input
(configuration or usage, every problem listed). User errors never print a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from orchestrator import health, status
from orchestrator.config import Config, json_schema, load_config
from orchestrator.errors import ConfigError, HeliosError, UsageError

DEFAULT_SANDBOX_DIR = ".sandbox"


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


def config_path(args: argparse.Namespace) -> Path:
    """The config file named by --config or $HELIOS_CONFIG."""
    path = args.config or os.environ.get("HELIOS_CONFIG")
    if not path:
        raise UsageError("no configuration given: pass --config FILE or set HELIOS_CONFIG")
    return Path(path)


# --- config --------------------------------------------------------------------------------


def cmd_config_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    nodes = sum(len(r.nodes) for r in cfg.regions)
    _out(
        f"{args.file}: OK — service {cfg.service}, {len(cfg.regions)} regions, {nodes} nodes, "
        f"RTO {cfg.objectives.rto:g}s, RPO {cfg.objectives.rpo:g}s"
    )
    return 0


def cmd_config_schema(_: argparse.Namespace) -> int:
    _out(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


# --- run and status ------------------------------------------------------------------------


def _configure_logging(level: str) -> None:
    from orchestrator.observability.logging import configure_logging

    configure_logging(level)


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator.app import run_daemon

    cfg = load_config(config_path(args))
    _configure_logging(args.log_level)
    asyncio.run(run_daemon(cfg))
    return 0


def _daemon_status(cfg: Config, url: str | None, timeout: float) -> dict[str, Any] | None:
    base = url or f"http://{cfg.listen.address}:{cfg.listen.port}"
    try:
        resp = httpx.get(f"{base.rstrip('/')}/v1/status", timeout=timeout)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    doc: dict[str, Any] = resp.json()
    if doc.get("service") != cfg.service:
        return None
    return doc


def _probe_status(cfg: Config) -> dict[str, Any]:
    from orchestrator.app import health_settings, probe_once
    from orchestrator.incidents import IncidentStore
    from orchestrator.levels import assess_level, facts_from

    topo, snap = asyncio.run(probe_once(cfg))
    assessment = health.assess(None, snap, topo, health_settings(cfg))
    doc = status.build_status(
        topo, assessment, snap, "probe", {r.name: r.priority for r in cfg.regions}
    )
    inc = IncidentStore(cfg.state_dir).open_incident()
    facts = facts_from(assessment, snap, rpo=cfg.objectives.rpo)
    elapsed = assessment.at - inc.opened_at if inc is not None else None
    doc["bcp"] = status.bcp_section(assess_level(cfg.levels, facts, elapsed), inc, assessment.at)
    return doc


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(config_path(args))
    doc = None if args.probe else _daemon_status(cfg, args.url, args.timeout)
    if doc is None:
        if args.url:
            raise HeliosError(f"no daemon answered at {args.url}")
        doc = _probe_status(cfg)
    if args.output == "json":
        _out(json.dumps(doc, indent=2))
    else:
        if doc["source"] == "probe":
            _out("(no daemon answered: one-shot probe, verdicts from a single observation)")
        _out(status.render_table(doc))
    return 0


# --- sandbox -------------------------------------------------------------------------------


def _sandbox(args: argparse.Namespace) -> Any:
    from orchestrator.sandbox import Sandbox

    return Sandbox(
        Path(args.state_dir).absolute(),
        base_port=args.base_port,
        metrics_port=args.metrics_port,
    )


def _print_sandbox(st: Any) -> None:
    _out(f"sandbox {st.state_dir}")
    for r in st.regions:
        pid = r.pid if r.pid is not None else "-"
        _out(f"  {r.region:<8} {r.state:<8} {r.role:<8} port {r.port:<6} pid {pid}")
    _out(f"  dns      {st.dns:<8} Route53 (moto), Cloudflare and Google Cloud DNS stand-ins")
    _out(f"config: {st.config_path}")


def cmd_sandbox(args: argparse.Namespace) -> int:
    sb = _sandbox(args)
    action = args.action
    if args.upstream and action != "rejoin":
        raise UsageError("--upstream only goes with sandbox rejoin")
    if action in {"kill", "stop", "start", "hang", "unhang", "fence", "rejoin"}:
        if not args.region:
            raise UsageError(f"sandbox {action} needs a REGION (us-east, us-west or eu)")
        if action == "rejoin":
            if not args.upstream:
                raise UsageError("sandbox rejoin needs --upstream REGION (the node to follow)")
            _out(f"{args.region}: {sb.rejoin(args.region, args.upstream)}")
        else:
            getattr(sb, action)(args.region)
        _print_sandbox(sb.status())
        return 0
    if args.region:
        raise UsageError(f"sandbox {action} takes no REGION")
    if action == "up":
        _print_sandbox(sb.up())
    elif action == "down":
        if args.purge:
            sb.destroy()
            _out(f"sandbox {sb.status().state_dir} stopped and deleted")
        else:
            _print_sandbox(sb.down())
    elif action == "status":
        _print_sandbox(sb.status())
    elif action == "run":
        return _sandbox_run(sb, args)
    return 0


def _sandbox_run(sb: Any, args: argparse.Namespace) -> int:
    """Bring the sandbox up, run the daemon on it until Ctrl-C/SIGTERM, then stop everything."""
    from orchestrator.app import run_daemon

    try:
        st = sb.up()
        _print_sandbox(st)
        cfg = load_config(st.config_path)
        _configure_logging(args.log_level)
        _err(
            f"daemon starting: metrics at http://{cfg.listen.address}:{cfg.listen.port}/metrics "
            "(Ctrl-C stops the daemon and the sandbox)"
        )
        asyncio.run(run_daemon(cfg))
    finally:
        sb.down()
        _err("sandbox stopped")
    return 0


# --- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orchestrator",
        description="helios-orchestrator: automated regional failover for PostgreSQL.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", help="config file (default: $HELIOS_CONFIG)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="regions, nodes, roles, lag vs RPO, verdicts")
    st.add_argument("--config", "-c", help="config file (default: $HELIOS_CONFIG)")
    st.add_argument("--output", "-o", choices=["table", "json"], default="table")
    st.add_argument("--url", help="daemon base URL (default: the config's listen address)")
    st.add_argument("--probe", action="store_true", help="skip the daemon; probe every node once")
    st.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the daemon")
    st.set_defaults(func=cmd_status)

    cfg = sub.add_parser("config", help="check a config file or print its JSON Schema")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = cfg_sub.add_parser("check", help="validate FILE; list every problem")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)
    schema = cfg_sub.add_parser("schema", help="print the JSON Schema of the config")
    schema.set_defaults(func=cmd_config_schema)

    from orchestrator import (
        cli_agent,
        cli_dns,
        cli_drill,
        cli_failover,
        cli_notify,
        cli_ops,
        cli_report,
    )

    cli_dns.add_parser(sub)
    cli_failover.add_parsers(sub)
    cli_ops.add_parsers(sub)
    cli_drill.add_parsers(sub)
    cli_notify.add_parsers(sub)
    cli_report.add_parsers(sub)
    cli_agent.add_parsers(sub)

    sb = sub.add_parser("sandbox", help="local three-region PostgreSQL sandbox")
    sb.add_argument(
        "action",
        choices=[
            *("up", "down", "status", "run", "kill", "stop", "start", "hang", "unhang"),
            *("fence", "rejoin"),
        ],
        help="up/down/status/run the sandbox; kill/stop/start/hang/unhang/fence/rejoin one "
        "REGION (fence: SIGKILL it and leave standby.signal; rejoin: pg_rewind it from "
        "--upstream and stream from there)",
    )
    sb.add_argument("region", nargs="?", help="us-east, us-west or eu")
    sb.add_argument(
        "--state-dir", default=os.environ.get("HELIOS_SANDBOX_DIR", DEFAULT_SANDBOX_DIR)
    )
    sb.add_argument(
        "--upstream", metavar="REGION", help="with rejoin: the region to rewind from and follow"
    )
    sb.add_argument(
        "--base-port",
        type=int,
        default=55431,
        help="the PostgreSQL service port (each region on its own 127.0.0.x address)",
    )
    sb.add_argument("--metrics-port", type=int, default=9187, help="daemon metrics port")
    sb.add_argument("--purge", action="store_true", help="with down: also delete the state dir")
    sb.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sb.set_defaults(func=cmd_sandbox)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    # Logs are JSON lines on stderr, never mixed into a command's output on stdout.
    _configure_logging(getattr(args, "log_level", None) or "warning")
    try:
        return func(args)
    except ConfigError as exc:
        _err(f"error: invalid configuration {exc.source}:")
        for problem in exc.problems:
            _err(f"  - {problem}")
        return exc.exit_code
    except HeliosError as exc:
        _err(f"error: {exc}")
        return exc.exit_code
    except OSError as exc:
        _err(f"error: {exc.strerror or exc}" if exc.filename is None else f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
