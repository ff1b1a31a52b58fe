"""``orchestrator notify --test``: the plan's monthly communication test. Presentation only.

Every configured channel (or ``--channel NAME``) is exercised on its own and reported: name,
kind, ok/FAILED, latency and detail (secrets never appear: the channels mask them). Exit
status: 0 every channel worked, 3 some failed, 1 all failed, 2 usage or configuration errors
(no channels configured, an unknown channel, a broken template).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any, Final

from orchestrator.config import load_config
from orchestrator.errors import UsageError
from orchestrator.notify import ChannelTest, Notifier

EXIT_SOME_FAILED: Final = 3
EXIT_ALL_FAILED: Final = 1


def _print(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")


async def run_test(notifier: Notifier, only: str | None) -> list[ChannelTest]:
    """Run the test, then close the notifier's clients."""
    try:
        return await notifier.test(only)
    finally:
        await notifier.aclose()


def render_table(results: list[ChannelTest]) -> str:
    rows = [("CHANNEL", "KIND", "RESULT", "LATENCY", "DETAIL")]
    rows += [
        (r.name, r.kind, "ok" if r.ok else "FAILED", f"{r.latency * 1000:.0f} ms", r.detail)
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    )


def exit_status(results: list[ChannelTest]) -> int:
    failed = sum(not r.ok for r in results)
    if failed == 0:
        return 0
    return EXIT_ALL_FAILED if failed == len(results) else EXIT_SOME_FAILED


def cmd_notify(args: argparse.Namespace) -> int:
    from orchestrator.cli import config_path

    if not args.test:
        raise UsageError("orchestrator notify needs --test (the communication test)")
    cfg = load_config(config_path(args))
    if not cfg.notifications.channels:
        raise UsageError("no notification channels are configured (notifications.channels)")
    notifier = Notifier(cfg)  # reads and checks the templates: before the event loop starts
    results = asyncio.run(run_test(notifier, args.channel))
    if args.output == "json":
        doc: dict[str, Any] = {
            "ok": all(r.ok for r in results),
            "channels": [asdict(r) for r in results],
        }
        _print(json.dumps(doc, indent=2))
    else:
        _print(render_table(results))
        failed = [r.name for r in results if not r.ok]
        _print(f"failed: {', '.join(failed)}" if failed else "every channel worked")
    return exit_status(results)


def add_parsers(sub: Any) -> None:
    """Register ``orchestrator notify``."""
    p = sub.add_parser(
        "notify",
        help="notifications: --test sends a test message on every channel",
        description="Send a test message on every notification channel (the business "
        "continuity plan's monthly communication test) and report which worked. Exit 0: all "
        "worked; 3: some failed; 1: all failed; 2: usage or configuration error.",
    )
    p.add_argument("--test", action="store_true", help="run the communication test")
    p.add_argument("--channel", metavar="NAME", help="test this channel only")
    p.add_argument("--config", "-c", help="config file (default: $HELIOS_CONFIG)")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_notify)
