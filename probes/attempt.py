"""Running one probe attempt under a deadline and classifying what went wrong.

:func:`timed` is what lets every probe promise to return within its timeout and never raise for
a failure of its target (see :mod:`probes.base`).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from collections.abc import Awaitable, Callable

from probes.base import ErrorClass, Kind, Observation, Outcome


def classify_os_error(exc: BaseException) -> ErrorClass:
    """Map low-level socket errors to an :class:`ErrorClass`."""
    if isinstance(exc, TimeoutError):
        return ErrorClass.TIMEOUT
    if isinstance(exc, ssl.SSLError):
        return ErrorClass.TLS
    if isinstance(exc, ConnectionRefusedError):
        return ErrorClass.REFUSED
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return ErrorClass.RESET
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return ErrorClass.RESET
    if isinstance(exc, OSError) and exc.errno in {
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EADDRNOTAVAIL,
    }:
        return ErrorClass.UNREACHABLE
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return ErrorClass.REFUSED
    if isinstance(exc, OSError) and exc.errno in {errno.ECONNRESET, errno.EPIPE}:
        return ErrorClass.RESET
    if isinstance(exc, socket.gaierror):
        # Name resolution failed. gaierror carries a negative EAI_* code in ``errno`` (never
        # None), e.g. -2 "Name or service not known" or -3 "Temporary failure in name resolution".
        return ErrorClass.UNREACHABLE
    return ErrorClass.INTERNAL


async def timed(
    target: str,
    kind: Kind,
    timeout: float,
    attempt: Callable[[], Awaitable[Outcome]],
    classify: Callable[[BaseException], tuple[ErrorClass, str]],
    on_error: Callable[[], Awaitable[None]] | None = None,
) -> Observation:
    """Run one probe attempt under ``timeout`` and turn every failure into an Observation.

    ``attempt`` reports what it found; ``classify`` maps an exception to an error class
    and a short message. ``on_error`` (bounded by its own short timeout) lets a probe drop a
    broken connection. Cancellation of the caller is never swallowed.
    """
    started_at = time.time()
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            out = await attempt()
    except asyncio.CancelledError:
        # Our own timeout is converted to TimeoutError by asyncio.timeout, so a CancelledError
        # here always comes from outside: propagate it.
        if on_error is not None:
            await _bounded(on_error, 0.5)
        raise
    except Exception as exc:  # every failure of the target becomes an observation
        if isinstance(exc, TimeoutError):
            err, msg = ErrorClass.TIMEOUT, f"no answer within {timeout:g}s"
        else:
            err, msg = classify(exc)
        if on_error is not None:
            await _bounded(on_error, 0.5)
        return Observation(
            target=target,
            kind=kind,
            ok=False,
            started_at=started_at,
            latency=time.perf_counter() - t0,
            error_class=err,
            error=msg,
        )
    return Observation(
        target=target,
        kind=kind,
        ok=out.ok,
        started_at=started_at,
        latency=time.perf_counter() - t0,
        error_class=out.error_class,
        error=out.error,
        database=out.database,
        http_status=out.http_status,
        details=out.details,
    )


async def _bounded(fn: Callable[[], Awaitable[None]], limit: float) -> None:
    try:
        async with asyncio.timeout(limit):
            await fn()
    except Exception:  # cleanup is best effort; the observation already says what went wrong
        return
