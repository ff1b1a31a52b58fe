"""Amazon Route53 adapter (boto3, run in a worker thread).

Guarantees, on top of the :mod:`orchestrator.providers.dns` contract:

* **Bounded.** Every API call runs in a dedicated :class:`~concurrent.futures.ThreadPoolExecutor`
  (never on the event loop) under ``asyncio.wait_for(cfg.timeout)``; botocore's own connect and
  read timeouts are set to the same value, so an abandoned worker thread ends by itself soon
  after. botocore retries are off (``total_max_attempts=1``): the caller owns the retry policy.
* **Typed failures.** botocore/boto3 exceptions never escape; see :func:`_map_error` for the
  table. Messages look like ``route53: <what> (<code>)`` and never contain the keys.
* **Idempotent, exact scope.** ``apply`` reads the one name/type first and does nothing if the
  desired record set is already served; otherwise it sends a single ``UPSERT`` for exactly that
  name and type, which never creates a second record set.
* Records with a routing policy (``SetIdentifier``) or alias records are refused
  (PermanentError) rather than overwritten: they are not ours to flatten.
* Structlog context variables survive the hop to the worker thread (the context is copied).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import functools
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import boto3
import botocore.exceptions
from botocore.config import Config as BotoConfig
from botocore.parsers import ResponseParserError

from orchestrator.config import Route53Provider
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

_PERMANENT_CODES: Final = frozenset(
    {
        "NoSuchHostedZone",
        "NoSuchChange",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "InvalidChangeBatch",
        "InvalidInput",
        "InvalidArgument",
    }
)
_AUTH_CODES: Final = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
    }
)
_TRANSIENT_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "RequestTimeout",
        "InternalFailure",
        "InternalError",
    }
)
_MAX_MESSAGE: Final = 200
INSYNC: Final = "INSYNC"
NOOP: Final = "noop"


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header: delta seconds or an HTTP date. None when absent/invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Route53Dns(PlansByReading):
    """One Route53 hosted zone (``cfg.zone_id``), implementing ``DnsProvider``.

    ``executor``: worker threads for boto3 calls; when None the adapter owns a small pool and
    shuts it down in :meth:`aclose`. ``client``: a ready boto3-like client (tests inject fakes
    at the boto3 boundary); when None one real client is created on first use, once.
    ``sleep``/``clock``: used by :meth:`wait_live` polling (injectable for tests).
    """

    def __init__(
        self,
        cfg: Route53Provider,
        executor: ThreadPoolExecutor | None = None,
        *,
        client: Any = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (cfg.access_key_id is None) != (cfg.secret_access_key is None):
            raise PermanentError(
                f"route53 {cfg.name}: access_key_id and secret_access_key must be given together"
            )
        self._cfg = cfg
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=4, thread_name_prefix=f"route53-{cfg.name}"
        )
        self._client: Any = client
        self._owns_client = client is None
        self._client_lock = threading.Lock()
        self._sleep = sleep
        self._clock = clock
        self._closed = False
        self._secrets = tuple(
            s.get_secret_value()
            for s in (cfg.access_key_id, cfg.secret_access_key)
            if s is not None and s.get_secret_value()
        )

    @property
    def name(self) -> str:
        return self._cfg.name

    @property
    def kind(self) -> str:
        return "route53"

    # --- contract ---------------------------------------------------------------------------

    async def read(self, name: str, rtype: str) -> RecordSet | None:
        """The simple record set for ``name``/``rtype`` in the zone, or None if absent."""
        return await self._read(name, rtype, self._deadline())

    async def _read(self, name: str, rtype: str, deadline: float) -> RecordSet | None:
        name, rtype = fqdn(name), rtype.upper()
        what = f"read {name} {rtype}"
        resp = await self._call(
            what,
            "list_resource_record_sets",
            deadline=deadline,
            HostedZoneId=self._cfg.zone_id,
            StartRecordName=name,
            StartRecordType=rtype,
            MaxItems="1",
        )
        try:
            rrsets = resp["ResourceRecordSets"]
            if not rrsets:
                return None
            rr = rrsets[0]
            if _unescape(rr["Name"]) != name or rr["Type"] != rtype:
                return None
            if "SetIdentifier" in rr or "AliasTarget" in rr:
                raise PermanentError(
                    f"route53: {name} {rtype} is an alias or routing-policy record; "
                    "refusing to manage it (unsupported)"
                )
            values = [r["Value"] for r in rr["ResourceRecords"]]
            return RecordSet.make(name, rtype, int(rr["TTL"]), values)
        except (KeyError, TypeError, ValueError, IndexError):
            raise TransientError(f"route53: {what}: malformed answer") from None

    async def apply(self, change: RecordChange) -> ChangeHandle:
        """UPSERT ``change.after`` unless it is already served (then a ``noop`` handle)."""
        after = change.after
        _check_desired(after)
        deadline = self._deadline()  # read and write together stay within cfg.timeout
        current = await self._read(after.name, after.type, deadline)
        if current == after:
            return ChangeHandle(provider=self.name, change_id=None, status=NOOP)
        what = f"upsert {after.name} {after.type}"
        resp = await self._call(
            what,
            "change_resource_record_sets",
            deadline=deadline,
            HostedZoneId=self._cfg.zone_id,
            ChangeBatch={
                "Comment": "helios-orchestrator",
                "Changes": [
                    {
                        "Action": "UPSERT",
                        "ResourceRecordSet": {
                            "Name": after.name,
                            "Type": after.type,
                            "TTL": after.ttl,
                            "ResourceRecords": [{"Value": v} for v in after.values],
                        },
                    }
                ],
            },
        )
        try:
            info = resp["ChangeInfo"]
            return ChangeHandle(
                provider=self.name, change_id=_change_id(info["Id"]), status=str(info["Status"])
            )
        except (KeyError, TypeError):
            raise TransientError(f"route53: {what}: malformed answer") from None

    async def wait_live(self, handle: ChangeHandle, timeout: float) -> float:
        """Poll ``get_change`` every ``cfg.poll_interval`` until INSYNC; seconds waited.

        A handle without a change id (no-op) or already INSYNC returns 0.0 at once. Raises
        OperationTimeout when ``timeout`` passes first; errors of a poll propagate (typed).
        """
        if handle.change_id is None or handle.status == INSYNC:
            return 0.0
        what = f"change {handle.change_id}"

        async def insync(remaining: float) -> bool:
            resp = await self._call(
                f"get {what}",
                "get_change",
                deadline=self._deadline(min(remaining, self._cfg.timeout)),
                Id=handle.change_id,
            )
            try:
                return str(resp["ChangeInfo"]["Status"]) == INSYNC
            except (KeyError, TypeError):
                raise TransientError(f"route53: get {what}: malformed answer") from None

        return await poll_until(
            insync,
            timeout=timeout,
            interval=self._cfg.poll_interval,
            clock=self._clock,
            sleep=self._sleep,
            failure=f"route53: {what} not INSYNC",
        )

    async def aclose(self) -> None:
        """Close the client (if created here) and the owned executor; idempotent, bounded."""
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        executor = self._executor

        def _shutdown() -> None:
            if self._owns_client and client is not None:
                client.close()
            if self._owns_executor:
                executor.shutdown(wait=True, cancel_futures=True)

        # A stuck worker ends at botocore's read timeout by itself; do not wait past ours.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(_shutdown), self._cfg.timeout)

    # --- plumbing ---------------------------------------------------------------------------

    def _get_client(self) -> Any:
        """The boto3 client, created once (in a worker thread, never on the loop)."""
        with self._client_lock:
            if self._client is None:
                if self._closed:
                    raise PermanentError("route53: adapter is closed")
                cfg = self._cfg
                session = boto3.session.Session(
                    aws_access_key_id=(
                        cfg.access_key_id.get_secret_value() if cfg.access_key_id else None
                    ),
                    aws_secret_access_key=(
                        cfg.secret_access_key.get_secret_value() if cfg.secret_access_key else None
                    ),
                    region_name=cfg.region,
                )
                self._client = session.client(
                    "route53",
                    endpoint_url=cfg.endpoint_url,
                    config=BotoConfig(
                        connect_timeout=cfg.timeout,
                        read_timeout=cfg.timeout,
                        retries={"total_max_attempts": 1},
                    ),
                )
            return self._client

    def _invoke(self, op: str, kwargs: dict[str, Any]) -> Any:
        return getattr(self._get_client(), op)(**kwargs)

    def _deadline(self, seconds: float | None = None) -> float:
        """An event-loop-clock deadline ``seconds`` (default: the call timeout) from now."""
        if self._closed:
            raise PermanentError("route53: adapter is closed")
        span = self._cfg.timeout if seconds is None else seconds
        return asyncio.get_running_loop().time() + span

    async def _call(self, what: str, op: str, *, deadline: float, **kwargs: Any) -> Any:
        """Run one boto3 call in the executor; it must finish by ``deadline`` (loop clock)."""
        if self._closed:
            raise PermanentError("route53: adapter is closed")
        limit = deadline - asyncio.get_running_loop().time()
        if limit <= 0:
            raise OperationTimeout(f"route53: {what}: no time left within {self._cfg.timeout:g}s")
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        fut = loop.run_in_executor(
            self._executor, functools.partial(ctx.run, self._invoke, op, kwargs)
        )
        try:
            return await asyncio.wait_for(fut, limit)
        except TimeoutError:
            raise OperationTimeout(
                f"route53: {what} timed out (call timeout {self._cfg.timeout:g}s)"
            ) from None
        except OperationError:
            raise
        except Exception as exc:
            raise _map_error(exc, what, self._cfg.zone_id, self._secrets) from None


def _check_desired(after: RecordSet) -> None:
    if after.type not in SUPPORTED_TYPES:
        raise PermanentError(f"route53: record type {after.type} is not supported")
    if not after.values:
        raise PermanentError(f"route53: refusing to apply {after.name} {after.type} with no values")
    if after.type == "CNAME" and len(after.values) != 1:
        raise PermanentError(f"route53: a CNAME takes exactly one value ({after.name})")


def _change_id(raw: str) -> str:
    """``/change/C123`` (AWS) or ``C123`` (moto) -> ``C123``."""
    return raw.rsplit("/", 1)[-1]


def _unescape(name: str) -> str:
    r"""Route53 escapes ``*`` as ``\052`` in names it returns; compare in plain form."""
    return fqdn(name.replace("\\052", "*"))


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return text[:_MAX_MESSAGE]


def _map_error(exc: Exception, what: str, zone_id: str, secrets: tuple[str, ...]) -> OperationError:
    """Translate a boto3/botocore exception into the contract's error types.

    ============================================  =====================================
    ClientError code NoSuchHostedZone             PermanentError "hosted zone ... not found"
    auth codes (AccessDenied, InvalidClientToken  PermanentError "authentication/permission"
    Id, SignatureDoesNotMatch, ...) or 401/403
    InvalidChangeBatch, InvalidInput, other 4xx   PermanentError "rejected"
    Throttling*, PriorRequestNotComplete,         TransientError (+ Retry-After)
    ServiceUnavailable, 429, any 5xx
    ConnectTimeout / ReadTimeout                  OperationTimeout
    EndpointConnectionError, ConnectionClosed     TransientError
    ResponseParserError (e.g. an HTML 500)        TransientError "malformed answer"
    NoCredentials / PartialCredentials / ...      PermanentError "no usable credentials"
    ParamValidationError, anything else           PermanentError
    ============================================  =====================================
    """
    if isinstance(exc, botocore.exceptions.ClientError):
        resp: dict[str, Any] = exc.response or {}
        err = resp.get("Error") or {}
        if not err.get("Code"):  # moto's auth errors come in the query-API shape
            err = (resp.get("Errors") or {}).get("Error") or err
        code = str(err.get("Code") or "")
        message = _scrub(str(err.get("Message") or ""), secrets)
        meta = resp.get("ResponseMetadata") or {}
        status = int(meta.get("HTTPStatusCode") or 0)
        headers = meta.get("HTTPHeaders") or {}
        tag = code or f"HTTP {status}"
        if code == "NoSuchHostedZone":
            return PermanentError(f"route53: {what}: hosted zone {zone_id} not found ({tag})")
        if code in _AUTH_CODES or status in (401, 403):
            return PermanentError(f"route53: {what}: authentication or permission denied ({tag})")
        if code in _TRANSIENT_CODES or status == 429 or status >= 500:
            return TransientError(
                f"route53: {what}: provider busy or failing ({tag})",
                retry_after=retry_after_seconds(headers.get("retry-after")),
            )
        if code in _PERMANENT_CODES or 400 <= status < 500:
            detail = f": {message}" if message else ""
            return PermanentError(f"route53: {what} rejected{detail} ({tag})")
        return TransientError(f"route53: {what}: unexpected answer ({tag})")
    if isinstance(
        exc, botocore.exceptions.ConnectTimeoutError | botocore.exceptions.ReadTimeoutError
    ):
        return OperationTimeout(f"route53: {what} timed out ({type(exc).__name__})")
    if isinstance(exc, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError):
        return TransientError(f"route53: {what}: cannot reach the API ({type(exc).__name__})")
    if isinstance(exc, ResponseParserError):
        return TransientError(f"route53: {what}: malformed answer (ResponseParserError)")
    if isinstance(
        exc,
        botocore.exceptions.NoCredentialsError
        | botocore.exceptions.PartialCredentialsError
        | botocore.exceptions.CredentialRetrievalError,
    ):
        return PermanentError(f"route53: {what}: no usable credentials ({type(exc).__name__})")
    return PermanentError(f"route53: {what} failed ({type(exc).__name__})")
