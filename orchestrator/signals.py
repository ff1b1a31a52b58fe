"""SIGTERM/SIGINT as an asyncio stop event (for the daemon and the node agent)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT set ``stop``; the handlers are removed on exit. Outside
    the main thread (where asyncio cannot install them) it does nothing."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
