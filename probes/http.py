"""HTTP health-endpoint probe: GET a URL, 2xx is healthy."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx

from probes.attempt import classify_os_error, timed
from probes.base import ErrorClass, Kind, Observation, Outcome
from probes.tcp import short_error


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything chained to it, including members of exception groups."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        if isinstance(cur, BaseExceptionGroup):
            stack.extend(cur.exceptions)
        for nxt in (cur.__cause__, cur.__context__):
            if nxt is not None:
                stack.append(nxt)


def _os_class(exc: BaseException) -> ErrorClass | None:
    """The class of the first socket-level error chained to ``exc``, if one is recognised."""
    for cause in _causes(exc):
        if isinstance(cause, OSError | EOFError):
            err = classify_os_error(cause)
            if err is not ErrorClass.INTERNAL:
                return err
    return None


def classify_http_error(exc: BaseException) -> tuple[ErrorClass, str]:
    """Map an httpx (or socket) exception to an :class:`ErrorClass` and a short message."""
    msg = short_error(exc)
    if isinstance(exc, httpx.TimeoutException):
        return ErrorClass.TIMEOUT, msg
    if isinstance(exc, httpx.ConnectError):
        return _os_class(exc) or ErrorClass.UNREACHABLE, msg
    if isinstance(exc, httpx.RemoteProtocolError):
        # "Server disconnected without sending a response" is a dropped connection; anything
        # else (malformed status line, bad chunking) is a protocol problem.
        if "disconnected" in str(exc).lower():
            return ErrorClass.RESET, msg
        return ErrorClass.PROTOCOL, msg
    if isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.CloseError):
        return _os_class(exc) or ErrorClass.RESET, msg
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ErrorClass.INTERNAL, msg
    if isinstance(exc, httpx.HTTPError):
        return _os_class(exc) or ErrorClass.PROTOCOL, msg
    return classify_os_error(exc), msg


class HttpProbe:
    """GETs ``url``; a 2xx answer is ok, any other status is ``HTTP_STATUS`` with ``http_status``.

    Redirects are not followed (a 3xx is reported as a status). A client created by the probe
    ignores proxy environment variables (health checks go direct) and is closed by ``aclose()``;
    a client passed in belongs to the caller and is left open.

    Guarantees: ``observe()`` never raises for a failure of the target (only cancellation of the
    caller propagates), returns within ``timeout`` plus scheduling jitter, and may be called
    again after any failure (httpx discards broken pooled connections). ``aclose()`` is
    idempotent and bounded; a later ``observe()`` creates a fresh client.
    """

    def __init__(
        self,
        target: str,
        url: str,
        timeout: float,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._target = target
        self._url = url
        self._timeout = timeout
        self._client = client
        self._owns_client = client is None

    @property
    def target(self) -> str:
        """Name of the node or endpoint this probe observes."""
        return self._target

    @property
    def kind(self) -> Kind:
        """Always :attr:`Kind.HTTP`."""
        return Kind.HTTP

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout), trust_env=False, follow_redirects=False
            )
        return self._client

    async def observe(self) -> Observation:
        """One GET of the URL, bounded by the probe timeout."""
        return await timed(
            self._target, Kind.HTTP, self._timeout, self._attempt, classify_http_error
        )

    async def _attempt(self) -> Outcome:
        resp = await self._get_client().get(self._url)
        if resp.is_success:
            return Outcome(http_status=resp.status_code)
        return Outcome(
            ok=False,
            error_class=ErrorClass.HTTP_STATUS,
            error=f"HTTP {resp.status_code} {resp.reason_phrase}".strip(),
            http_status=resp.status_code,
        )

    async def aclose(self) -> None:
        """Close the client if this probe created it. Idempotent; bounded to 1 s."""
        if not self._owns_client or self._client is None:
            return
        client, self._client = self._client, None
        try:
            async with asyncio.timeout(1.0):
                await client.aclose()
        except TimeoutError:
            return
