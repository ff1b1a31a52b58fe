"""Cloudflare adapter (official SDK, ``AsyncCloudflare``).

Guarantees, on top of the :mod:`orchestrator.providers.dns` contract:

* **Bounded.** The SDK's own timeout is ``cfg.timeout`` and every public method also runs under
  ``asyncio.timeout(cfg.timeout)`` as a whole (``wait_live`` under the timeout it is given).
  SDK retries are off (``max_retries=0``): a POST is never re-sent behind our back.
* **Typed failures.** Every answer's envelope is checked: ``"success": false`` (even with HTTP
  200, where the SDK raises nothing) becomes an error; exceptions map as in :func:`_map_error`.
  The API token never appears in a message.
* **One record set.** Cloudflare stores one record per value; :meth:`read` aggregates the
  records of exactly one name and type into one :class:`RecordSet` (values sorted; the lowest
  TTL; TTL 1 means "automatic" and is reported as 1).
* **Atomic, minimal, idempotent apply.** Nothing is sent when the desired values and TTL are
  already served. Otherwise one ``dns_records/batch`` call patches existing records in place
  (content and/or TTL), posts the missing values and deletes the extra records; Cloudflare
  applies a batch all-or-nothing. If the zone does not offer batch (404/405 on the batch route),
  the adapter falls back, for good, to single calls ordered so the name never goes empty:
  edits, then creates, then deletes (not atomic; a failure leaves a mix that the next apply
  converges). A record that vanished meanwhile gives TransientError("changed concurrently").
* **wait_live** reads back every record set this adapter applied and has not yet confirmed,
  until each matches (Cloudflare applies synchronously, so this normally takes one read).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, cast

import cloudflare
from cloudflare import AsyncCloudflare

from orchestrator.config import CloudflareProvider
from orchestrator.errors import OperationError, OperationTimeout, PermanentError, TransientError
from orchestrator.providers.dns import (
    SUPPORTED_TYPES,
    ChangeHandle,
    PlansByReading,
    RecordChange,
    RecordSet,
    fqdn,
)

NOOP: Final = "noop"
APPLIED: Final = "applied"
_PER_PAGE: Final = 100
_MAX_PAGES: Final = 50
_RECORD_GONE: Final = 81044  # "Record does not exist."
_RECORD_EXISTS: Final = 81057  # "Record already exists." (someone created it meanwhile)
_ZONE_CODES: Final = frozenset({7000, 7003})
_MAX_MESSAGE: Final = 200

RType = Literal["A", "AAAA", "CNAME"]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class CloudflareDns(PlansByReading):
    """One Cloudflare zone (``cfg.zone_id``), implementing ``DnsProvider``.

    ``sleep``/``clock`` are used by :meth:`wait_live` polling (injectable for tests).
    """

    def __init__(
        self,
        cfg: CloudflareProvider,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = cfg
        self._token = cfg.api_token.get_secret_value()
        self._client = AsyncCloudflare(
            api_token=self._token,
            base_url=cfg.base_url,  # None: the SDK default (or CLOUDFLARE_BASE_URL)
            max_retries=0,
            timeout=cfg.timeout,
        )
        self._sleep = sleep
        self._clock = clock
        self._batch_supported = True
        self._unconfirmed: dict[tuple[str, str], RecordSet] = {}
        self._closed = False

    @property
    def name(self) -> str:
        return self._cfg.name

    @property
    def kind(self) -> str:
        return "cloudflare"

    @property
    def batch_supported(self) -> bool:
        """False once the zone answered 404/405 on the batch route (fallback in use)."""
        return self._batch_supported

    # --- contract ---------------------------------------------------------------------------

    async def read(self, name: str, rtype: str) -> RecordSet | None:
        """The record set for ``name``/``rtype`` aggregated over Cloudflare's records, or None."""
        async with self._deadline(f"read {fqdn(name)} {rtype.upper()}"):
            return _aggregate(fqdn(name), rtype.upper(), await self._records(name, rtype))

    async def apply(self, change: RecordChange) -> ChangeHandle:
        """Make ``change.after`` served, with one batch call (see the module docstring)."""
        after = change.after
        _check_desired(after)
        what = f"apply {after.name} {after.type}"
        async with self._deadline(what):
            records = await self._records(after.name, after.type)
            if _same(_aggregate(after.name, after.type, records), after):
                return ChangeHandle(provider=self.name, change_id=None, status=NOOP)
            patches, posts, deletes = _plan(records, after)
            if self._batch_supported:
                try:
                    await self._send(
                        what,
                        self._client.dns.records.with_raw_response.batch(
                            zone_id=self._cfg.zone_id,
                            patches=cast(Any, patches) if patches else cloudflare.omit,
                            posts=cast(Any, posts) if posts else cloudflare.omit,
                            deletes=(
                                cast(Any, [{"id": rid} for rid in deletes])
                                if deletes
                                else cloudflare.omit
                            ),
                        ),
                        batch=True,
                    )
                except _BatchUnsupported:
                    self._batch_supported = False
            if not self._batch_supported:
                await self._apply_one_by_one(what, after, patches, posts, deletes)
        self._unconfirmed[(after.name, after.type)] = after
        return ChangeHandle(provider=self.name, change_id=None, status=APPLIED)

    async def wait_live(self, handle: ChangeHandle, timeout: float) -> float:
        """Read back the applied record sets until they match; seconds waited.

        Returns 0.0 at once for a no-op handle or when nothing awaits confirmation. Raises
        OperationTimeout when ``timeout`` passes first; read errors propagate (typed).
        """
        if handle.status == NOOP or not self._unconfirmed:
            return 0.0
        start = self._clock()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for key, want in list(self._unconfirmed.items()):
                        served = await self.read(*key)
                        if _same(served, want) and self._unconfirmed.get(key) == want:
                            del self._unconfirmed[key]
                    if not self._unconfirmed:
                        return self._clock() - start
                    await self._sleep(self._cfg.poll_interval)
        except TimeoutError:
            pending = ", ".join(f"{n} {t}" for n, t in self._unconfirmed)
            raise OperationTimeout(
                f"cloudflare: {pending} not served as applied within {timeout:g}s"
            ) from None

    async def aclose(self) -> None:
        """Close the SDK's HTTP client; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._client.close()

    # --- plumbing ---------------------------------------------------------------------------

    def _deadline(self, what: str) -> _Deadline:
        if self._closed:
            raise PermanentError("cloudflare: adapter is closed")
        return _Deadline(what, self._cfg.timeout)

    async def _records(self, name: str, rtype: str) -> list[dict[str, Any]]:
        """Every record of exactly this name and type (all pages)."""
        bare, rtype = fqdn(name).rstrip("."), rtype.upper()
        out: list[dict[str, Any]] = []
        for page in range(1, _MAX_PAGES + 1):
            envelope = await self._send(
                f"list {bare} {rtype}",
                self._client.dns.records.with_raw_response.list(
                    zone_id=self._cfg.zone_id,
                    name={"exact": bare},
                    type=cast(Any, rtype),
                    page=page,
                    per_page=_PER_PAGE,
                ),
            )
            result = envelope.get("result")
            if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
                raise TransientError(f"cloudflare: list {bare} {rtype}: malformed answer")
            # Exact scope, whatever the server's filter did.
            out += [r for r in result if _bare(r.get("name")) == bare and r.get("type") == rtype]
            info = envelope.get("result_info") or {}
            total_pages = info.get("total_pages") if isinstance(info, dict) else None
            if len(result) < _PER_PAGE or (isinstance(total_pages, int) and page >= total_pages):
                return out
        raise TransientError(f"cloudflare: list {bare} {rtype}: too many pages")

    async def _send(
        self, what: str, request: Awaitable[Any], *, batch: bool = False
    ) -> dict[str, Any]:
        """Await one raw SDK request; return the checked envelope or raise a typed error."""
        try:
            raw = await request
            envelope = await raw.json()
        except OperationError:
            raise
        except Exception as exc:
            if batch and _is_batch_unsupported(exc):
                raise _BatchUnsupported from None
            raise _map_error(exc, what, self._cfg.zone_id, self._token) from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("success"), bool):
            raise TransientError(f"cloudflare: {what}: malformed answer")
        if not envelope["success"]:
            raise _envelope_error(what, envelope, None, self._cfg.zone_id, self._token)
        return envelope

    async def _apply_one_by_one(
        self,
        what: str,
        after: RecordSet,
        patches: list[dict[str, Any]],
        posts: list[dict[str, Any]],
        deletes: list[str],
    ) -> None:
        records = self._client.dns.records.with_raw_response
        zone = self._cfg.zone_id
        bare, rtype = after.name.rstrip("."), cast(RType, after.type)
        for p in patches:  # edit requires name, type and ttl even for a content-only change
            await self._send(
                f"{what} (edit)",
                records.edit(
                    dns_record_id=p["id"],
                    zone_id=zone,
                    name=bare,
                    type=rtype,
                    ttl=after.ttl,
                    content=p.get("content", cloudflare.omit),
                ),
            )
        for p in posts:
            await self._send(
                f"{what} (create)",
                records.create(
                    zone_id=zone,
                    name=bare,
                    type=rtype,
                    ttl=after.ttl,
                    content=p["content"],
                    proxied=p["proxied"],
                ),
            )
        for rid in deletes:
            await self._send(f"{what} (delete)", records.delete(dns_record_id=rid, zone_id=zone))


class _BatchUnsupported(Exception):
    """The batch route answered 404/405 (no such route), not a record error."""


class _Deadline:
    """``asyncio.timeout`` that turns expiry into OperationTimeout naming the operation."""

    def __init__(self, what: str, seconds: float) -> None:
        self._what, self._seconds = what, seconds
        self._cm = asyncio.timeout(seconds)

    async def __aenter__(self) -> None:
        await self._cm.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self._cm.__aexit__(*exc)
        except TimeoutError:
            raise OperationTimeout(
                f"cloudflare: {self._what} timed out after {self._seconds:g}s"
            ) from None


def _bare(name: object) -> str:
    return str(name or "").strip().lower().rstrip(".")


def _norm(rtype: str, value: str) -> str:
    """Canonical text of one value, for comparisons (IPv6 compressed, CNAME fqdn)."""
    if rtype == "CNAME":
        return fqdn(value)
    try:
        return ipaddress.ip_address(value.strip()).compressed
    except ValueError:
        return value.strip()


def _same(current: RecordSet | None, desired: RecordSet) -> bool:
    if current is None:
        return False
    norm = {_norm(desired.type, v) for v in desired.values}
    return current.ttl == desired.ttl and {_norm(current.type, v) for v in current.values} == norm


def _ttl(record: dict[str, Any]) -> int:
    return int(float(record["ttl"]))  # the API (and the SDK's models) give floats: 60.0


def _aggregate(name: str, rtype: str, records: list[dict[str, Any]]) -> RecordSet | None:
    if not records:
        return None
    try:
        values = [str(r["content"]) for r in records]
        ttl = min(_ttl(r) for r in records)
    except (KeyError, TypeError, ValueError):
        raise TransientError(f"cloudflare: read {name} {rtype}: malformed answer") from None
    return RecordSet.make(name, rtype, ttl, values)


def _plan(
    records: list[dict[str, Any]], after: RecordSet
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(patches, posts, deletes) turning ``records`` into ``after``; records are reused in place.

    A record already holding a desired value keeps it (its TTL is patched if needed); the
    other records are patched to the missing values; leftover values are posted, leftover
    records deleted. New records inherit ``proxied`` from the existing ones.
    """
    try:
        wanted = {_norm(after.type, v): v for v in after.values}
        keep: dict[str, dict[str, Any]] = {}
        spare: list[dict[str, Any]] = []
        for r in sorted(records, key=lambda r: (str(r["content"]), str(r["id"]))):
            key = _norm(after.type, str(r["content"]))
            if key in wanted and key not in keep:
                keep[key] = r
            else:
                spare.append(r)
        proxied = bool(records[0].get("proxied", False)) if records else False
        patches = [{"id": r["id"], "ttl": after.ttl} for r in keep.values() if _ttl(r) != after.ttl]
    except (KeyError, TypeError, ValueError):
        raise TransientError(
            f"cloudflare: read {after.name} {after.type}: malformed answer"
        ) from None
    missing = [_content(after.type, v) for k, v in wanted.items() if k not in keep]
    posts: list[dict[str, Any]] = []
    for value in missing:
        if spare:
            patches.append({"id": spare.pop(0)["id"], "content": value, "ttl": after.ttl})
        else:
            posts.append(
                {
                    "name": after.name.rstrip("."),
                    "type": after.type,
                    "content": value,
                    "ttl": after.ttl,
                    "proxied": proxied,
                }
            )
    return patches, posts, [str(r["id"]) for r in spare]


def _content(rtype: str, value: str) -> str:
    """Cloudflare's spelling of a value: CNAME targets without the trailing dot."""
    return value.rstrip(".") if rtype == "CNAME" else value


def _check_desired(after: RecordSet) -> None:
    if after.type not in SUPPORTED_TYPES:
        raise PermanentError(f"cloudflare: record type {after.type} is not supported")
    if not after.values:
        raise PermanentError(
            f"cloudflare: refusing to apply {after.name} {after.type} with no values"
        )
    if after.type == "CNAME" and len(after.values) != 1:
        raise PermanentError(f"cloudflare: a CNAME takes exactly one value ({after.name})")


def _errors(body: object) -> tuple[list[int], str]:
    """(error codes, first message) from an envelope-like body; tolerant of any shape."""
    codes: list[int] = []
    message = ""
    errors = body.get("errors") if isinstance(body, dict) else None
    for e in errors if isinstance(errors, list) else []:
        if isinstance(e, dict):
            if isinstance(e.get("code"), int):
                codes.append(e["code"])
            message = message or str(e.get("message") or "")
    return codes, message


def _scrub(text: str, token: str) -> str:
    return (text.replace(token, "***") if token else text)[:_MAX_MESSAGE]


def _envelope_error(
    what: str, body: object, status: int | None, zone_id: str, token: str
) -> OperationError:
    """The error for a ``"success": false`` envelope answered with HTTP 200."""
    codes, message = _errors(body)
    tag = f"code {','.join(map(str, codes)) or '?'}: {_scrub(message, token)}"
    if 10000 in codes:
        return PermanentError(f"cloudflare: {what}: authentication failed ({tag})")
    if _ZONE_CODES & set(codes):
        return PermanentError(f"cloudflare: {what}: zone {zone_id} not found ({tag})")
    return TransientError(f"cloudflare: {what}: provider answered success=false ({tag})")


def _is_batch_unsupported(exc: Exception) -> bool:
    """404/405 from the batch route itself, not "no such record" or "no such zone"."""
    if not isinstance(exc, cloudflare.APIStatusError) or exc.status_code not in (404, 405):
        return False
    codes, _ = _errors(exc.body)
    return _RECORD_GONE not in codes and 7003 not in codes


def _map_error(exc: Exception, what: str, zone_id: str, token: str) -> OperationError:
    """Translate an SDK exception into the contract's error types.

    =====================================  ===============================================
    AuthenticationError (401)              PermanentError "authentication failed"
    PermissionDeniedError (403)            PermanentError "authentication or permission"
    NotFoundError (404), code 81044        TransientError "changed concurrently; re-read"
    NotFoundError (404), other             PermanentError "zone <id> not found"
    BadRequestError (400), code 81057      TransientError "changed concurrently; re-read"
    BadRequest / UnprocessableEntity       PermanentError "rejected: <message>"
    RateLimitError (429)                   TransientError, retry_after from Retry-After
    ConflictError (409), 5xx, 408          TransientError
    APITimeoutError                        OperationTimeout
    APIConnectionError                     TransientError "cannot reach the API"
    APIResponseValidationError, bad JSON   TransientError "malformed answer"
    other status errors (4xx)              PermanentError
    =====================================  ===============================================
    """
    if isinstance(exc, cloudflare.APIResponseValidationError):
        return TransientError(f"cloudflare: {what}: malformed answer")
    if isinstance(exc, cloudflare.APIStatusError):
        status = exc.status_code
        codes, message = _errors(exc.body)
        tag = f"HTTP {status}, code {','.join(map(str, codes)) or '?'}"
        detail = _scrub(message, token)
        if isinstance(exc, cloudflare.AuthenticationError):
            return PermanentError(f"cloudflare: {what}: authentication failed ({tag})")
        if isinstance(exc, cloudflare.PermissionDeniedError):
            return PermanentError(
                f"cloudflare: {what}: authentication or permission denied ({tag})"
            )
        if _RECORD_GONE in codes or _RECORD_EXISTS in codes:
            return TransientError(f"cloudflare: {what}: changed concurrently; re-read ({tag})")
        if isinstance(exc, cloudflare.NotFoundError):
            return PermanentError(f"cloudflare: {what}: zone {zone_id} not found ({tag})")
        if isinstance(exc, cloudflare.RateLimitError):
            return TransientError(
                f"cloudflare: {what}: rate limited ({tag})",
                retry_after=_retry_after(exc.response.headers.get("retry-after")),
            )
        if isinstance(exc, cloudflare.ConflictError) or status >= 500 or status == 408:
            return TransientError(f"cloudflare: {what}: provider busy or failing ({tag})")
        return PermanentError(f"cloudflare: {what} rejected: {detail} ({tag})")
    if isinstance(exc, cloudflare.APITimeoutError):
        return OperationTimeout(f"cloudflare: {what} timed out (APITimeoutError)")
    if isinstance(exc, cloudflare.APIConnectionError):
        return TransientError(f"cloudflare: {what}: cannot reach the API (APIConnectionError)")
    if isinstance(exc, ValueError | KeyError | TypeError):  # json.JSONDecodeError is a ValueError
        return TransientError(f"cloudflare: {what}: malformed answer ({type(exc).__name__})")
    return PermanentError(f"cloudflare: {what} failed ({type(exc).__name__})")
