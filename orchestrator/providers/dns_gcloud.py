"""Google Cloud DNS adapter (google-cloud-dns, synchronous, run in a worker thread).

Guarantees, on top of the :mod:`orchestrator.providers.dns` contract:

* **Bounded.** Every API call runs in a worker thread under ``asyncio.wait_for(cfg.timeout)``
  (one deadline for a whole method), never on the event loop. The HTTP session also caps every
  request at ``cfg.timeout`` (the library's default is 60 s and takes no timeout argument), so
  an abandoned worker thread ends by itself soon after. Nothing is retried here: the library
  has no retries, and the session's refresh-and-resend on 401 is switched off.
* **Typed failures.** ``google.api_core`` exceptions and the transport errors the library does
  *not* wrap (``requests.exceptions.*``) map as in :func:`_map_error`.
* **Atomic, idempotent apply.** Nothing is sent when the desired record set is already served.
  Otherwise one change deletes the exact record set read a moment before (if any) and adds the
  desired one; Cloud DNS applies a change all-or-nothing. If the record set changed in between,
  the server answers 412 ``conditionNotMet`` (or 409 when one was created meanwhile) and the
  adapter raises TransientError("changed concurrently; re-read") so the caller's retry re-plans.
* **Exact scope.** Reads ask the API for exactly one name and type (``name``/``type`` query
  parameters, which ``list_resource_record_sets`` does not offer) and match both again here.
* No network without an explicit project; anonymous credentials never fall back to the GCE
  metadata server (``GCE_METADATA_HOST``/``GCE_METADATA_IP`` point at a dead loopback port
  unless already set).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import google.api_core.exceptions as gexc
import google.auth.exceptions
import requests
from google.api_core import page_iterator
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import dns
from google.oauth2 import service_account

from orchestrator.config import GcloudProvider
from orchestrator.errors import OperationError, OperationTimeout, PermanentError, TransientError
from orchestrator.providers.dns import (
    SUPPORTED_TYPES,
    ChangeHandle,
    PlansByReading,
    RecordChange,
    RecordSet,
    fqdn,
    poll_until,
)

DONE: Final = "done"
NOOP: Final = "noop"
DEAD_METADATA: Final = "127.0.0.1:1"
_MAX_PAGES: Final = 50


class _CappedHttp:
    """The HTTP object handed to the library: an AuthorizedSession whose every request is
    capped at ``timeout`` seconds (the library passes 60 s) and which does not
    refresh-and-resend on 401 (the caller owns retries)."""

    def __init__(self, credentials: Credentials, timeout: float) -> None:
        self._session: Any = AuthorizedSession(  # type: ignore[no-untyped-call]
            credentials, refresh_status_codes=(), refresh_timeout=timeout
        )
        self._cap = timeout

    @property
    def is_mtls(self) -> bool:
        return bool(self._session.is_mtls)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = self._cap
        return self._session.request(*args, **kwargs)

    def close(self) -> None:
        self._session.close()


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return max(0.0, float(value)) if value else None
    except (TypeError, ValueError, AttributeError):
        return None


class GcloudDns(PlansByReading):
    """One Cloud DNS managed zone (``cfg.managed_zone`` in ``cfg.project``): ``DnsProvider``.

    ``executor``: worker threads for the library's calls; when None the adapter owns a small
    pool and shuts it down in :meth:`aclose`. ``sleep``/``clock``: used by :meth:`wait_live`.
    """

    def __init__(
        self,
        cfg: GcloudProvider,
        executor: ThreadPoolExecutor | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = cfg
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=4, thread_name_prefix=f"gcloud-{cfg.name}"
        )
        self._sleep = sleep
        self._clock = clock
        self._closed = False
        self._client = dns.Client(
            project=cfg.project,
            credentials=(creds := _credentials(cfg)),
            _http=_CappedHttp(creds, cfg.timeout),
            client_options={"api_endpoint": cfg.api_endpoint} if cfg.api_endpoint else None,
        )
        self._zone = self._client.zone(cfg.managed_zone)

    @property
    def name(self) -> str:
        return self._cfg.name

    @property
    def kind(self) -> str:
        return "gcloud"

    # --- contract ---------------------------------------------------------------------------

    async def read(self, name: str, rtype: str) -> RecordSet | None:
        """The record set for ``name``/``rtype`` in the managed zone, or None."""
        name, rtype = fqdn(name), rtype.upper()
        raw = await self._call(f"read {name} {rtype}", self._deadline(), self._find, name, rtype)
        return None if raw is None else _record_set(raw, name, rtype)

    async def apply(self, change: RecordChange) -> ChangeHandle:
        """One atomic change: delete the exact current record set (if any), add the desired."""
        after = change.after
        _check_desired(after)
        what = f"apply {after.name} {after.type}"
        deadline = self._deadline()
        raw = await self._call(what, deadline, self._find, after.name, after.type)
        if raw is not None and _record_set(raw, after.name, after.type) == after:
            return ChangeHandle(provider=self.name, change_id=None, status=NOOP)
        change_id, status = await self._call(what, deadline, self._submit, raw, after)
        return ChangeHandle(provider=self.name, change_id=change_id, status=status)

    async def wait_live(self, handle: ChangeHandle, timeout: float) -> float:
        """Reload the change every ``cfg.poll_interval`` until ``done``; seconds waited.

        A no-op handle or one already ``done`` returns 0.0 at once. Raises OperationTimeout
        when ``timeout`` passes first; errors of a poll propagate (typed).
        """
        if handle.change_id is None or handle.status == DONE:
            return 0.0
        what = f"change {handle.change_id}"

        async def done(remaining: float) -> bool:
            limit = self._deadline(min(remaining, self._cfg.timeout))
            status = await self._call(f"poll {what}", limit, self._status, handle.change_id)
            return bool(status == DONE)

        return await poll_until(
            done,
            timeout=timeout,
            interval=self._cfg.poll_interval,
            clock=self._clock,
            sleep=self._sleep,
            failure=f"gcloud: {what} not done",
        )

    async def aclose(self) -> None:
        """Close the HTTP session and the owned executor; idempotent, bounded."""
        if self._closed:
            return
        self._closed = True
        executor = self._executor

        def _shutdown() -> None:
            self._client.close()
            if self._owns_executor:
                executor.shutdown(wait=True, cancel_futures=True)

        # A stuck worker ends at the session's request cap by itself; do not wait past ours.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(_shutdown), self._cfg.timeout)

    # --- worker-thread bodies ---------------------------------------------------------------

    def _find(self, name: str, rtype: str) -> dict[str, Any] | None:
        pages = page_iterator.HTTPIterator(  # type: ignore[no-untyped-call]
            client=self._client,
            api_request=self._client._connection.api_request,
            path=f"/projects/{self._cfg.project}/managedZones/{self._cfg.managed_zone}/rrsets",
            item_to_value=lambda _it, item: item,
            items_key="rrsets",
            extra_params={"name": name, "type": rtype},
        ).pages
        for n, page in enumerate(pages):
            if n >= _MAX_PAGES:
                raise TransientError(f"gcloud: read {name} {rtype}: too many pages")
            for item in page:
                if not isinstance(item, dict):
                    raise ValueError("rrset is not an object")
                if fqdn(str(item.get("name", ""))) == name and item.get("type") == rtype:
                    return item
        return None

    def _submit(self, current: dict[str, Any] | None, after: RecordSet) -> tuple[str, str]:
        changes = self._zone.changes()
        if current is not None:  # exactly as served: any difference makes the server answer 412
            changes.delete_record_set(
                self._zone.resource_record_set(
                    current["name"], current["type"], int(current["ttl"]), current["rrdatas"]
                )
            )
        changes.add_record_set(
            self._zone.resource_record_set(after.name, after.type, after.ttl, list(after.values))
        )
        changes.create()
        if not changes.name or not changes.status:
            raise ValueError("change without id or status")
        return str(changes.name), str(changes.status)

    def _status(self, change_id: str) -> str:
        changes = self._zone.changes()
        changes.name = change_id
        changes.reload()
        if not changes.status:
            raise ValueError("change without status")
        return str(changes.status)

    # --- plumbing ---------------------------------------------------------------------------

    def _deadline(self, seconds: float | None = None) -> float:
        if self._closed:
            raise PermanentError("gcloud: adapter is closed")
        span = self._cfg.timeout if seconds is None else seconds
        return asyncio.get_running_loop().time() + span

    async def _call(self, what: str, deadline: float, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the executor; it must finish by ``deadline`` (loop clock)."""
        loop = asyncio.get_running_loop()
        limit = deadline - loop.time()
        if limit <= 0:
            raise OperationTimeout(f"gcloud: {what}: no time left within {self._cfg.timeout:g}s")
        ctx = contextvars.copy_context()
        fut = loop.run_in_executor(self._executor, functools.partial(ctx.run, fn, *args))
        try:
            return await asyncio.wait_for(fut, limit)
        except TimeoutError:
            raise OperationTimeout(
                f"gcloud: {what} timed out (call timeout {self._cfg.timeout:g}s)"
            ) from None
        except OperationError:
            raise
        except Exception as exc:
            raise _map_error(exc, what, self._cfg) from None


def _credentials(cfg: GcloudProvider) -> Credentials:
    if cfg.anonymous:
        os.environ.setdefault("GCE_METADATA_HOST", DEAD_METADATA)
        os.environ.setdefault("GCE_METADATA_IP", DEAD_METADATA)
        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    if cfg.credentials is None:  # the config model forbids this; keep the error typed anyway
        raise PermanentError(f"gcloud {cfg.name}: no credentials configured")
    try:
        info = json.loads(cfg.credentials.get_secret_value())
        creds: Credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info
        )
    except (ValueError, TypeError, KeyError):
        # Never echo the parser's message: it may quote the key.
        raise PermanentError(
            f"gcloud {cfg.name}: credentials are not a valid service-account JSON key"
        ) from None
    return creds


def _record_set(raw: dict[str, Any], name: str, rtype: str) -> RecordSet:
    if "rrdatas" not in raw and ("routingPolicy" in raw or "healthCheck" in raw):
        raise PermanentError(
            f"gcloud: {name} {rtype} uses a routing policy; refusing to manage it (unsupported)"
        )
    try:
        return RecordSet.make(name, rtype, int(raw["ttl"]), [str(v) for v in raw["rrdatas"]])
    except (KeyError, TypeError, ValueError):
        raise TransientError(f"gcloud: read {name} {rtype}: malformed answer") from None


def _check_desired(after: RecordSet) -> None:
    if after.type not in SUPPORTED_TYPES:
        raise PermanentError(f"gcloud: record type {after.type} is not supported")
    if not after.values:
        raise PermanentError(f"gcloud: refusing to apply {after.name} {after.type} with no values")
    if after.type == "CNAME" and len(after.values) != 1:
        raise PermanentError(f"gcloud: a CNAME takes exactly one value ({after.name})")


def _reason(exc: gexc.GoogleAPICallError) -> str:
    for err in exc.errors or []:
        if isinstance(err, dict) and err.get("reason"):
            return str(err["reason"])
    return ""


def _map_error(exc: Exception, what: str, cfg: GcloudProvider) -> OperationError:
    """Translate a library or transport exception into the contract's error types.

    ==========================================  =============================================
    Unauthorized (401) / Forbidden (403)        PermanentError "authentication or permission"
    NotFound (404)                              PermanentError "managed zone ... not found"
    BadRequest (400), other 4xx                 PermanentError "rejected: <message>"
    PreconditionFailed (412) / Conflict (409)   TransientError "changed concurrently; re-read"
    TooManyRequests (429)                       TransientError, retry_after from Retry-After
    ServerError (5xx)                           TransientError
    requests Timeout (connect/read)             OperationTimeout
    requests ConnectionError                    TransientError "cannot reach the API"
    invalid JSON / unexpected shapes            TransientError "malformed answer"
    google.auth TransportError / RefreshError   TransientError / PermanentError
    ==========================================  =============================================
    """
    zone = f"managed zone {cfg.managed_zone} (project {cfg.project})"
    if isinstance(exc, gexc.GoogleAPICallError):
        tag = f"HTTP {exc.code}" + (f" {_reason(exc)}" if _reason(exc) else "")
        message = str(exc.message or "")
        if message.split(" ", 1)[0] in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            message = message.split(": ", 1)[-1]  # drop the library's "GET <url>: " prefix
        message = message[:200]
        if isinstance(exc, gexc.Unauthorized | gexc.Forbidden):
            return PermanentError(f"gcloud: {what}: authentication or permission denied ({tag})")
        if isinstance(exc, gexc.NotFound):
            return PermanentError(f"gcloud: {what}: {zone} not found ({tag}: {message})")
        if isinstance(exc, gexc.PreconditionFailed | gexc.Conflict):
            return TransientError(f"gcloud: {what}: changed concurrently; re-read ({tag})")
        if isinstance(exc, gexc.TooManyRequests):
            return TransientError(
                f"gcloud: {what}: rate limited ({tag})",
                retry_after=_retry_after(getattr(exc.response, "headers", None)),
            )
        if isinstance(exc, gexc.ServerError) or exc.code in (408, None):
            return TransientError(f"gcloud: {what}: provider busy or failing ({tag})")
        return PermanentError(f"gcloud: {what} rejected: {message} ({tag})")
    if isinstance(exc, requests.exceptions.JSONDecodeError):  # before RequestException
        return TransientError(f"gcloud: {what}: malformed answer (invalid JSON)")
    if isinstance(exc, requests.exceptions.Timeout):
        return OperationTimeout(f"gcloud: {what} timed out ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.RequestException):
        return TransientError(f"gcloud: {what}: cannot reach the API ({type(exc).__name__})")
    if isinstance(exc, google.auth.exceptions.TransportError):
        return TransientError(f"gcloud: {what}: cannot reach the token service")
    if isinstance(exc, google.auth.exceptions.GoogleAuthError):
        return PermanentError(f"gcloud: {what}: authentication failed ({type(exc).__name__})")
    if isinstance(exc, ValueError | KeyError | TypeError | AttributeError):
        return TransientError(f"gcloud: {what}: malformed answer ({type(exc).__name__})")
    return PermanentError(f"gcloud: {what} failed ({type(exc).__name__})")
