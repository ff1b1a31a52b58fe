"""TCP connect probe: can we open a connection to ``host:port`` within the timeout?"""

from __future__ import annotations

import asyncio
import contextlib

from probes.attempt import classify_os_error, timed
from probes.base import ErrorClass, Kind, Observation, Outcome


def short_error(exc: BaseException, limit: int = 200, secret: str | None = None) -> str:
    """First line of ``exc`` prefixed with its type name, cut to ``limit`` characters.

    Exception texts from drivers can span several lines (libpq adds hints); one line is enough
    for an observation and keeps log lines readable. ``secret`` is masked before the cut (a
    secret cut in two would no longer match its mask).
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if secret:
        text = text.replace(secret, "***")
    msg = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _classify(exc: BaseException) -> tuple[ErrorClass, str]:
    return classify_os_error(exc), short_error(exc)


class TcpProbe:
    """Opens a TCP connection to ``host:port`` and closes it again.

    Guarantees: ``observe()`` never raises for a failure of the target (only cancellation of the
    caller propagates), returns within ``timeout`` plus scheduling jitter, holds nothing between
    calls and may be called concurrently. ``aclose()`` is an idempotent no-op.
    """

    def __init__(self, target: str, host: str, port: int, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._target = target
        self._host = host
        self._port = port
        self._timeout = timeout

    @property
    def target(self) -> str:
        """Name of the node or endpoint this probe observes."""
        return self._target

    @property
    def kind(self) -> Kind:
        """Always :attr:`Kind.TCP`."""
        return Kind.TCP

    async def observe(self) -> Observation:
        """Connect and close. ``ok`` means the TCP handshake completed within the timeout."""
        return await timed(self._target, Kind.TCP, self._timeout, self._attempt, _classify)

    async def _attempt(self) -> Outcome:
        _, writer = await asyncio.open_connection(self._host, self._port)
        writer.close()
        with contextlib.suppress(OSError):  # the handshake completed: that is all we ask
            await writer.wait_closed()
        return Outcome()

    async def aclose(self) -> None:
        """Nothing to release; present for the :class:`~probes.base.Probe` protocol."""
