"""``orchestrator agent --config FILE --node NAME``: the node agent, run beside each database
node (see :mod:`orchestrator.agent`). Presentation only.

Runs until SIGTERM/SIGINT (exit 0). Exit 2: configuration or usage errors (no
``coordination`` section, an unknown node, a node without ``fence_command`` and no
``--data-dir``, ``agent.fence_after`` too short for the quorum checks).

Also runnable as ``python -m orchestrator.cli_agent --config FILE --node NAME``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.config import load_config
from orchestrator.errors import ConfigError, HeliosError


def cmd_agent(args: argparse.Namespace) -> int:
    from orchestrator.agent import run_agent
    from orchestrator.cli import config_path

    cfg = load_config(config_path(args))
    state_dir = Path(args.state_dir) if args.state_dir else Path(cfg.state_dir) / "agent"
    data_dir = Path(args.data_dir).absolute() if args.data_dir else None
    asyncio.run(run_agent(cfg, args.node, state_dir=state_dir, data_dir=data_dir))
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``orchestrator agent``."""
    p = sub.add_parser(
        "agent",
        help="run the node agent beside one database node (self-fencing, rejoin)",
        description="Keep NODE a writable primary only while the coordination quorum answers: "
        "after agent.fence_after without it, fence the node (its fence_command, or standby."
        "signal plus SIGKILL of the server with --data-dir). Publish a heartbeat under "
        "{service}/agents/NODE every agent.interval. When the leader publishes another current "
        "primary, bring an old primary back only as its replica (rejoin_command). Runs until "
        "SIGTERM/SIGINT.",
    )
    p.add_argument("--config", "-c", help="config file (default: $HELIOS_CONFIG)")
    p.add_argument("--node", required=True, metavar="NAME", help="the node this agent guards")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the agent records its fences (DIR/NAME.json; default: <state_dir>/agent)",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the node's PostgreSQL data directory: needed when the node has no fence_command "
        "(the agent then fences by writing standby.signal there and SIGKILLing the server)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_agent)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m orchestrator.cli_agent ARGS``: the same as ``orchestrator agent ARGS``."""
    from orchestrator.observability.logging import configure_logging

    parser = argparse.ArgumentParser(prog="orchestrator")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["agent", *(sys.argv[1:] if argv is None else argv)])
    configure_logging(args.log_level)
    try:
        return cmd_agent(args)
    except ConfigError as exc:
        sys.stderr.write(f"error: invalid configuration {exc.source}:\n")
        for problem in exc.problems:
            sys.stderr.write(f"  - {problem}\n")
        return exc.exit_code
    except HeliosError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
