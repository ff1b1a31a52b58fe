"""The systemd notification protocol (``sd_notify``), without libsystemd.

A notification is one datagram of ``KEY=VALUE`` lines sent to the ``AF_UNIX`` socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract-namespace name when it starts with ``@``). The unit
uses ``Type=notify`` and ``WatchdogSec=``; see ``deploy/systemd/``.

Guarantees:

* Outside systemd (no ``$NOTIFY_SOCKET``) every method is a no-op that returns ``False``.
* Sending never blocks and never raises: the socket is a non-blocking ``SOCK_DGRAM`` socket; a
  failed send (systemd gone, queue full) is logged once as a warning and then only at debug
  level, and the daemon carries on.
* Values are single lines: newlines in a status text become spaces (a newline would start a
  new assignment), and a status is cut to :data:`MAX_STATUS` characters.
* The watchdog is enabled only when ``$WATCHDOG_USEC`` is a positive integer and
  ``$WATCHDOG_PID``, if set, is our PID (as ``sd_watchdog_enabled``); pings are due every half
  interval (:attr:`SystemdNotifier.watchdog_period`). :func:`watchdog_pings` sends them only
  while the daemon is live, so a stuck tick loop lets systemd kill and restart the daemon.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("helios.sdnotify")

MAX_STATUS = 512
"""Longest STATUS= text sent (``systemctl status`` shows one line anyway)."""


def _single_line(text: str) -> str:
    return " ".join(text.split())[:MAX_STATUS]


def _socket_address(name: str) -> str:
    """``@name`` is Linux's abstract namespace: a leading NUL byte instead of the ``@``."""
    return "\0" + name[1:] if name.startswith("@") else name


class SystemdNotifier:
    """Sends READY, STATUS, WATCHDOG and STOPPING notifications to the service manager."""

    def __init__(self, notify_socket: str | None, watchdog_usec: int | None = None) -> None:
        self._address = _socket_address(notify_socket) if notify_socket else None
        self._sock: socket.socket | None = None
        self._warned = False
        self._ready = False
        self._status: str | None = None
        self.watchdog_period: float | None = (
            watchdog_usec / 2_000_000 if self._address and watchdog_usec else None
        )
        """Seconds between watchdog pings (half of ``WatchdogSec``); None: no watchdog."""
        if self._address is not None:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            except OSError as exc:
                self._failed(exc)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, pid: int | None = None
    ) -> SystemdNotifier:
        """The notifier systemd asked for, or a no-op one when ``$NOTIFY_SOCKET`` is unset."""
        env = os.environ if environ is None else environ
        notify_socket = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC")
        if notify_socket and raw:
            watchdog_pid = env.get("WATCHDOG_PID")
            our_pid = os.getpid() if pid is None else pid
            if watchdog_pid and watchdog_pid != str(our_pid):
                log.info(
                    f"systemd watchdog is meant for PID {watchdog_pid}, not us ({our_pid})",
                    reason="WATCHDOG_OTHER_PID",
                )
            elif raw.isdigit() and int(raw) > 0:
                usec = int(raw)
            else:
                log.warning(f"ignoring invalid WATCHDOG_USEC={raw!r}", reason="WATCHDOG_INVALID")
        return cls(notify_socket, usec)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def ready(self, status: str | None = None) -> bool:
        """READY=1: startup is finished (with an optional STATUS=)."""
        self._ready = True
        lines = ["READY=1"]
        if status is not None:
            self._status = _single_line(status)
            lines.append(f"STATUS={self._status}")
        return self._send(lines)

    def status(self, text: str) -> bool:
        """STATUS=<text>: the one-line state ``systemctl status`` shows."""
        self._status = _single_line(text)
        return self._send([f"STATUS={self._status}"])

    def judged(self, sentence: str) -> bool:
        """After each tick: READY=1 with the sentence on the first, then STATUS= only when the
        sentence changed (cheap on a quiet day). Returns whether a datagram was sent."""
        if not self._ready:
            return self.ready(sentence)
        if _single_line(sentence) == self._status:
            return False
        return self.status(sentence)

    def watchdog(self) -> bool:
        """WATCHDOG=1: we are alive."""
        return self._send(["WATCHDOG=1"])

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutdown has begun (with an optional STATUS=)."""
        lines = ["STOPPING=1"]
        if status is not None:
            self._status = _single_line(status)
            lines.append(f"STATUS={self._status}")
        return self._send(lines)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, lines: list[str]) -> bool:
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode("utf-8", "replace"), self._address)
        except OSError as exc:
            self._failed(exc)
            return False
        return True

    def _failed(self, exc: OSError) -> None:
        message = f"systemd notification failed: {exc}"
        if self._warned:
            log.debug(message, reason="SD_NOTIFY_FAILED")
        else:
            self._warned = True
            log.warning(
                message + " (further failures are logged at debug level)",
                reason="SD_NOTIFY_FAILED",
            )


async def watchdog_pings(
    notifier: SystemdNotifier,
    live: Callable[[], tuple[bool, str]],
    stop: asyncio.Event,
) -> None:
    """Ping the watchdog every :attr:`~SystemdNotifier.watchdog_period` while ``live()`` holds,
    until ``stop`` is set. A stuck loop withholds the pings (logged once per stall), so systemd
    restarts the daemon after ``WatchdogSec``."""
    period = notifier.watchdog_period
    if period is None:
        return
    withheld = False
    while not stop.is_set():
        ok, why = live()
        if ok:
            notifier.watchdog()
            withheld = False
        elif not withheld:
            withheld = True
            log.error(f"withholding systemd watchdog pings: {why}", reason="WATCHDOG_WITHHELD")
        try:
            async with asyncio.timeout(period):
                await stop.wait()
        except TimeoutError:
            pass
