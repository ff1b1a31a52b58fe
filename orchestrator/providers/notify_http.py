"""What the notification channels share: the message they carry, their contract, one HTTP
client with timeouts and retries, and :class:`HttpChannel`, the base of every channel kind.

Guarantees of :class:`HttpSender`:

* **Bounded.** Every attempt runs under ``asyncio.timeout(timeout)`` on top of httpx's own
  timeout; at most ``retry.attempts`` attempts, separated by exponential backoff capped at
  ``retry.max_delay``. A ``Retry-After`` hint (seconds; Discord's JSON ``retry_after``) is
  honoured when it is within ``max_delay``; a longer one ends the retries at once, so one
  message never takes more than ``attempts * timeout + (attempts - 1) * max_delay``.
* **Typed failures.** Timeouts raise :class:`OperationTimeout`; connection errors, 429, 420
  and 5xx raise :class:`TransientError` (retried); any other unexpected status, and an answer
  that cannot be read (a body that does not decode), raise :class:`PermanentError` (never
  retried). No httpx exception escapes (one would skip the backup channel and carry the URL in
  its traceback). Each message names the channel, its kind, the HTTP status and the
  provider's own error text.
* **No secrets.** Webhook URLs, keys and tokens never appear in an error message: the sender
  knows its secrets and masks them in everything it reports, and it never names the URL. The
  ``httpx`` logger gets a filter that hides URL paths and queries (where webhook secrets live).
* Redirects are not followed (a webhook that redirects is misconfigured).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Protocol

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_any

from orchestrator.config_bcp import NotifyRetry
from orchestrator.errors import OperationTimeout, PermanentError, TransientError
from orchestrator.retrying import RetryAfterBeyond, backoff

Sleep = Callable[[float], Awaitable[None]]
Describe = Callable[[httpx.Response], str]
RetryAfter = Callable[[httpx.Response], float | None]

MAX_DETAIL: Final = 300
MASK: Final = "***"
_TRANSIENT: Final = frozenset({420, 429})
USER_AGENT: Final = "helios-orchestrator"


@dataclass(frozen=True, slots=True)
class Notice:
    """One message, in the terms every channel kind takes from it.

    ``title`` is one line (PagerDuty summary, Statuspage incident name); ``text`` the whole
    rendered message. ``status`` is the customer status (investigating | identified |
    monitoring | resolved) and ``external_id`` the channel's own id of the incident, if any
    (the Statuspage incident)."""

    event: str
    title: str
    text: str
    service: str
    sent_at: float
    level: int = 0
    status: str = "investigating"
    component_status: str = "degraded_performance"
    severity: str = "info"
    pagerduty_action: str | None = None
    dedup_key: str | None = None
    external_id: str | None = None
    incident: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivered:
    """A channel accepted a message. ``external_id``: the provider's id to keep (Statuspage
    incident, PagerDuty dedup key)."""

    detail: str
    external_id: str | None = None


class NotifyChannel(Protocol):
    """One configured notification channel.

    ``send`` and ``check`` are bounded by the channel's timeout and retries and raise
    :class:`~orchestrator.errors.OperationError` subclasses only; they never log or raise a
    secret. ``check`` exercises the channel without a public side effect where the provider
    allows it (the communication test)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    async def send(self, notice: Notice) -> Delivered: ...

    async def check(self, notice: Notice) -> Delivered: ...

    async def aclose(self) -> None: ...


# --- helpers the providers share ---------------------------------------------------------------


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def url_secrets(url: str) -> list[str]:
    """The parts of a webhook URL that are secret: the URL, its path, query and long segments."""
    parsed = httpx.URL(url)
    parts = [url, parsed.path, parsed.query.decode()]
    parts += [seg for seg in parsed.path.split("/") if len(seg) >= 8]
    return [p for p in parts if p and p != "/"]


def retry_after_header(resp: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (an HTTP date is ignored)."""
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def describe_json(resp: httpx.Response) -> str:
    """The provider's error text: ``message``/``error``/``errors`` of a JSON body, else the
    body's text, else the HTTP reason."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip() or resp.reason_phrase
    if not isinstance(body, dict):
        return str(body)
    parts: list[str] = []
    for key in ("message", "error", "errors"):
        value = body.get(key)
        if isinstance(value, str) and value:
            parts.append(value)
        elif isinstance(value, list) and value:
            parts.append("; ".join(str(v) for v in value))
        elif isinstance(value, dict) and value:
            parts.append(str(value))
    if "code" in body and parts:
        parts[0] = f"{parts[0]} (code {body['code']})"
    return ": ".join(parts) if parts else resp.text.strip() or resp.reason_phrase


class _HideUrlPaths(logging.Filter):
    """Rewrites the URLs httpx logs to scheme://host/*** (webhook secrets live in the path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(_hide_path(a) for a in record.args)
        return True


def _hide_path(arg: object) -> object:
    if isinstance(arg, httpx.URL):
        return arg.copy_with(path="/" + MASK, query=None, fragment=None)
    return arg


def hide_url_paths_in_httpx_logs() -> None:
    """Install the filter on the ``httpx`` logger (idempotent)."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _HideUrlPaths) for f in logger.filters):
        logger.addFilter(_HideUrlPaths())


# --- the sender ----------------------------------------------------------------------------------


class HttpSender:
    """One channel's HTTP client (see the module docstring)."""

    def __init__(
        self,
        channel: str,
        kind: str,
        timeout: float,
        retry: NotifyRetry,
        secrets: Iterable[str] = (),
        *,
        sleep: Sleep = asyncio.sleep,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.label = f"{channel} ({kind})"
        self._timeout = timeout
        self._retry = retry
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._sleep = sleep
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
        )
        hide_url_paths_in_httpx_logs()

    @property
    def bound(self) -> float:
        """The longest one call can take, retries included."""
        n = self._retry.attempts
        return n * self._timeout + (n - 1) * self._retry.max_delay

    def scrub(self, text: str) -> str:
        """``text`` with every secret of this channel masked."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    async def call(
        self,
        method: str,
        url: str,
        *,
        ok: Collection[int],
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        describe: Describe = describe_json,
        retry_after: RetryAfter = retry_after_header,
    ) -> httpx.Response:
        """One request with retries; the response when its status is in ``ok``."""
        max_delay = self._retry.max_delay
        retrying = AsyncRetrying(
            stop=stop_any(stop_after_attempt(self._retry.attempts), RetryAfterBeyond(max_delay)),
            wait=backoff(self._retry.initial_delay, max_delay),
            retry=retry_if_exception_type(TransientError),
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                resp = await self._once(method, url, ok, json, headers, describe, retry_after)
        return resp

    async def _once(
        self,
        method: str,
        url: str,
        ok: Collection[int],
        json: Any,
        headers: Mapping[str, str] | None,
        describe: Describe,
        retry_after: RetryAfter,
    ) -> httpx.Response:
        try:
            async with asyncio.timeout(self._timeout):
                resp = await self._client.request(method, url, json=json, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            raise OperationTimeout(f"{self.label}: no answer within {self._timeout:g}s") from None
        except httpx.TransportError as exc:
            raise TransientError(
                f"{self.label}: cannot reach the service ({type(exc).__name__})"
            ) from None
        except httpx.HTTPError as exc:  # e.g. DecodingError: an answer that cannot be read
            raise PermanentError(
                f"{self.label}: unreadable answer ({type(exc).__name__})"
            ) from None
        status = resp.status_code
        if status in ok:
            return resp
        # Mask, then clip: a secret cut in two by the clip would no longer match its mask.
        detail = clip(self.scrub(describe(resp)), MAX_DETAIL)
        message = f"{self.label}: HTTP {status}: {detail}"
        if status in _TRANSIENT or status >= 500:
            hint = retry_after(resp)
            if hint is not None:
                message += f" (retry after {hint:g}s)"
            raise TransientError(message, retry_after=hint)
        raise PermanentError(message)

    def json_of(self, resp: httpx.Response) -> dict[str, Any]:
        """The JSON object of a successful answer; PermanentError when it is not one."""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise PermanentError(f"{self.label}: HTTP {resp.status_code}: unreadable answer")
        return body

    async def aclose(self) -> None:
        await self._client.aclose()


# --- the base of the channels --------------------------------------------------------------------


class ChannelSettings(Protocol):
    """What every channel's configuration has (:mod:`orchestrator.config_bcp`)."""

    @property
    def name(self) -> str: ...

    @property
    def timeout(self) -> float: ...

    @property
    def retry(self) -> NotifyRetry: ...


class HttpChannel(ABC):
    """A :class:`NotifyChannel` over one :class:`HttpSender`: the configured name, the kind
    (:attr:`KIND`), ``aclose``, and a ``check`` that sends the notice like any other message
    (kinds whose provider can be exercised without a public side effect override it).
    ``secrets`` are masked in every error; ``headers`` go with every request."""

    KIND: ClassVar[str]

    def __init__(
        self,
        cfg: ChannelSettings,
        secrets: Iterable[str],
        *,
        sleep: Sleep = asyncio.sleep,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._name = cfg.name
        self._http = HttpSender(
            cfg.name, self.KIND, cfg.timeout, cfg.retry, secrets, sleep=sleep, headers=headers
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return self.KIND

    @abstractmethod
    async def send(self, notice: Notice) -> Delivered: ...

    async def check(self, notice: Notice) -> Delivered:
        return await self.send(notice)

    async def aclose(self) -> None:
        await self._http.aclose()
