"""etcd v3 backend of :class:`~orchestrator.coord.base.Coordinator`, over etcd's JSON gRPC
gateway (``POST /v3/kv/range``, ``/v3/kv/put``, ``/v3/kv/txn``, ``/v3/lease/grant``,
``/v3/lease/keepalive``, ``/v3/lease/revoke``, ``/v3/auth/authenticate``; keys and values in
base64, 64-bit integers as JSON strings) with :class:`httpx.AsyncClient`.

Why not a client library: the asyncio gRPC client on PyPI (``aetcd`` 1.0) connects to a single
host (no failover between members), ships no type information (``mypy --strict`` would see
``Any`` everywhere) and brings grpcio, a large native dependency; ``etcd3`` has been unreleased
since 2020 and breaks on current protobuf; ``etcd3gw`` is synchronous (``requests``). The
gateway is a documented, stable part of etcd (v3.4+: Debian's ``etcd-server`` serves it), the
handful of calls needed here fit in this module, and httpx is already a dependency.

Guarantees (beyond those of the protocol):

* Every call runs under one budget (``timeout``) whatever endpoints it tries. An attempt on one
  endpoint gets an equal share of what is left (the last gets all of it); a connection failure,
  a timeout or an "unavailable" answer moves to the next endpoint, which stays current.
* The leader key ``<prefix>election/<name>`` is created by a transaction "create if absent
  (create_revision == 0)" attached to a fresh lease; its ``create_revision`` is the epoch. etcd's
  revision is global and only grows, so a later leader's epoch is always larger.
* A campaign whose transaction may have been applied on an endpoint that then timed out is
  recognised on retry (the key carries our lease) and not mistaken for someone else's win.
* Reads are linearizable (etcd's default): a member cut off from its quorum cannot answer them.
* Published documents live under ``<prefix>data/``, each write on a lease of its own ttl.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import httpx
import structlog

from orchestrator.config_coord import CoordinationSettings
from orchestrator.coord.base import (
    CoordinationRejected,
    CoordinationUnavailable,
    LeaderInfo,
    Leadership,
    LostLeadership,
    Publication,
)

log = structlog.get_logger("helios.coord.etcd")

# gRPC status codes that mean "ask another member" (or again): UNKNOWN (e.g. "leader changed"),
# DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, UNAVAILABLE.
_RETRY_CODES = frozenset({2, 4, 8, 10, 14})
_NOT_FOUND = 5
_UNAUTHENTICATED = 16


class _NotFound(CoordinationRejected):
    """etcd answered NOT_FOUND (e.g. "requested lease not found"): callers that expect it
    (revoking) catch it; to the others it is a refusal like any other."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_range_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (etcd's ``range_end``
    for a prefix read); ``b"\\0"`` means "to the end of the key space"."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def lease_seconds(ttl: float) -> int:
    """etcd leases are whole seconds: round up, never below one."""
    return max(1, math.ceil(ttl))


class EtcdCoordinator:
    """A :class:`~orchestrator.coord.base.Coordinator` on an etcd v3 cluster."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = "/helios/",
        timeout: float = 2.0,
        username: str | None = None,
        password: str | None = None,
        verify: ssl.SSLContext | bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self._endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._prefix = prefix.encode()
        self._timeout = timeout
        self._credentials = (username, password) if username is not None else None
        self._tokens: dict[str, str] = {}
        self._clock = clock
        self._client = httpx.AsyncClient(
            timeout=timeout, verify=verify, trust_env=False, follow_redirects=False
        )

    @classmethod
    def from_settings(cls, settings: CoordinationSettings) -> EtcdCoordinator:
        verify: ssl.SSLContext | bool = True
        if settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        password = settings.password.get_secret_value() if settings.password else None
        return cls(
            settings.endpoints,
            prefix=settings.prefix,
            timeout=settings.timeout,
            username=settings.username,
            password=password,
            verify=verify,
        )

    # --- keys ------------------------------------------------------------------------------

    def _election_key(self, name: str) -> bytes:
        return self._prefix + b"election/" + name.encode()

    def _data_key(self, key: str) -> bytes:
        return self._prefix + b"data/" + key.encode()

    # --- leader election ---------------------------------------------------------------------

    async def campaign(self, name: str, candidate_id: str, ttl: float) -> Leadership | None:
        key = self._election_key(name)
        if await self._get(key) is not None:
            return None
        valid_from = self._clock()
        lease_id, granted = await self._grant(ttl)
        value = json.dumps({"candidate_id": candidate_id, "since": time.time()}).encode()
        try:
            resp = await self._call(
                "/v3/kv/txn",
                {
                    "compare": [{"key": _b64(key), "target": "CREATE", "create_revision": "0"}],
                    "success": [
                        {"request_put": {"key": _b64(key), "value": _b64(value), "lease": lease_id}}
                    ],
                    "failure": [{"request_range": {"key": _b64(key)}}],
                },
            )
        except CoordinationRejected:
            await self._revoke_quietly(lease_id)
            raise
        # Unavailable or cancelled: the lease (and the key, if the write landed) expires unrenewed.
        if resp.get("succeeded"):
            epoch = int(resp["header"]["revision"])
        else:
            kvs = resp.get("responses", [{}])[0].get("response_range", {}).get("kvs", [])
            if kvs and int(kvs[0].get("lease", 0)) == int(lease_id):
                # Our own write, applied by an attempt that timed out before its answer.
                epoch = int(kvs[0]["create_revision"])
            else:
                await self._revoke_quietly(lease_id)
                return None
        log.info("etcd.campaign.won", election=name, candidate=candidate_id, epoch=epoch)
        return Leadership(name, candidate_id, epoch, int(lease_id), granted, valid_from)

    async def renew(self, leadership: Leadership) -> Leadership:
        valid_from = self._clock()
        resp = await self._call("/v3/lease/keepalive", {"ID": str(leadership.lease_id)})
        result = resp.get("result", resp)
        ttl = int(result.get("TTL", 0))
        if ttl <= 0:
            raise LostLeadership(leadership.name, leadership.epoch, "the lease has expired")
        kv = await self._get(self._election_key(leadership.name))
        if kv is None or int(kv.get("create_revision", 0)) != leadership.epoch:
            await self._revoke_quietly(str(leadership.lease_id))
            raise LostLeadership(leadership.name, leadership.epoch, "the leader key is gone")
        return replace(leadership, ttl=float(ttl), valid_from=valid_from)

    async def resign(self, leadership: Leadership) -> None:
        with contextlib.suppress(_NotFound):  # already expired or revoked
            await self._call("/v3/lease/revoke", {"ID": str(leadership.lease_id)})
        log.info("etcd.resigned", election=leadership.name, epoch=leadership.epoch)

    async def leader(self, name: str) -> LeaderInfo | None:
        kv = await self._get(self._election_key(name))
        if kv is None:
            return None
        try:
            candidate = str(json.loads(_unb64(kv.get("value", "")))["candidate_id"])
        except (ValueError, KeyError, TypeError):
            candidate = ""
        return LeaderInfo(candidate, int(kv["create_revision"]))

    async def check_epoch(self, name: str, epoch: int) -> bool:
        kv = await self._get(self._election_key(name))
        return kv is not None and int(kv.get("create_revision", 0)) == epoch

    # --- published documents -----------------------------------------------------------------

    async def publish(self, key: str, document: Mapping[str, Any], ttl: float) -> int:
        value = json.dumps(dict(document), separators=(",", ":"), sort_keys=True).encode()
        lease_id, _ = await self._grant(ttl)
        resp = await self._call(
            "/v3/kv/put",
            {"key": _b64(self._data_key(key)), "value": _b64(value), "lease": lease_id},
        )
        return int(resp["header"]["revision"])

    async def read_prefix(self, prefix: str) -> dict[str, Publication]:
        start = self._data_key(prefix)
        resp = await self._call(
            "/v3/kv/range", {"key": _b64(start), "range_end": _b64(prefix_range_end(start))}
        )
        skip = len(self._data_key(""))
        out: dict[str, Publication] = {}
        for kv in resp.get("kvs", []):
            try:
                doc = json.loads(_unb64(kv.get("value", "")))
            except ValueError:
                continue
            if isinstance(doc, dict):
                key = _unb64(kv["key"])[skip:].decode(errors="replace")
                out[key] = Publication(doc, int(kv.get("mod_revision", 0)))
        return out

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- calls -------------------------------------------------------------------------------

    async def _get(self, key: bytes) -> dict[str, Any] | None:
        resp = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs: list[dict[str, Any]] = resp.get("kvs", [])
        return kvs[0] if kvs else None

    async def _grant(self, ttl: float) -> tuple[str, float]:
        resp = await self._call("/v3/lease/grant", {"TTL": str(lease_seconds(ttl))})
        if resp.get("error"):
            raise CoordinationRejected(f"etcd refused a lease: {resp['error']}")
        return str(resp["ID"]), float(resp["TTL"])

    async def _revoke_quietly(self, lease_id: str) -> None:
        """Best effort: a lease that cannot be revoked expires by itself."""
        with contextlib.suppress(CoordinationUnavailable, CoordinationRejected):
            await self._call("/v3/lease/revoke", {"ID": lease_id})

    async def _call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST to the current endpoint, moving on to the next ones while they fail, all within
        one ``timeout``. Raises CoordinationUnavailable or CoordinationRejected (_NotFound)."""
        n = len(self._endpoints)
        deadline = asyncio.get_running_loop().time() + self._timeout
        problems: list[str] = []
        for attempt in range(n):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            endpoint = self._endpoints[self._current]
            try:
                async with asyncio.timeout(left / (n - attempt)):
                    return await self._post(endpoint, path, body)
            except (TimeoutError, httpx.TransportError, _Unavailable) as exc:
                problems.append(f"{endpoint}: {_describe(exc)}")
                if self._endpoints[self._current] == endpoint:
                    self._current = (self._current + 1) % n
        raise CoordinationUnavailable(
            f"etcd {path} failed within {self._timeout:g}s: " + "; ".join(problems or ["timeout"])
        )

    async def _post(self, endpoint: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        for fresh_login in (False, True):
            headers = await self._auth_headers(endpoint, fresh=fresh_login)
            resp = await self._client.post(endpoint + path, json=body, headers=headers)
            data = _decode(resp)
            error = data.get("error")
            if not error:
                return data
            code = int(data.get("code", 0)) if isinstance(error, str) else _stream_code(error)
            message = data.get("message") or (error if isinstance(error, str) else str(error))
            if code == _UNAUTHENTICATED and self._credentials and not fresh_login:
                continue
            if code == _NOT_FOUND:
                raise _NotFound(message)
            if code in _RETRY_CODES or resp.status_code >= 500:
                raise _Unavailable(f"{message} (code {code})")
            raise CoordinationRejected(f"etcd refused {path}: {message} (code {code})")
        raise CoordinationRejected(f"etcd refused the credentials for {path}")  # pragma: no cover

    async def _auth_headers(self, endpoint: str, *, fresh: bool) -> dict[str, str]:
        if self._credentials is None:
            return {}
        if fresh or endpoint not in self._tokens:
            name, password = self._credentials
            resp = await self._client.post(
                endpoint + "/v3/auth/authenticate", json={"name": name, "password": password}
            )
            data = _decode(resp)
            if "token" not in data:
                if resp.status_code >= 500 or int(data.get("code", 0)) in _RETRY_CODES:
                    raise _Unavailable(str(data.get("message", resp.status_code)))
                raise CoordinationRejected(
                    f"etcd authentication failed: {data.get('message', resp.status_code)}"
                )
            self._tokens[endpoint] = str(data["token"])
        return {"Authorization": self._tokens[endpoint]}


class _Unavailable(Exception):
    """This endpoint cannot serve the request now; another may."""


def _decode(resp: httpx.Response) -> dict[str, Any]:
    """The JSON object of a gateway answer (a streamed answer's first message)."""
    text = resp.text.strip()
    if not text:
        raise _Unavailable(f"empty answer, HTTP {resp.status_code}")
    try:
        data = json.loads(text.splitlines()[0])
    except ValueError:
        if resp.status_code >= 500:
            raise _Unavailable(f"HTTP {resp.status_code}") from None
        raise CoordinationRejected(
            f"not an etcd v3 gateway answer (HTTP {resp.status_code})"
        ) from None
    if not isinstance(data, dict):
        raise CoordinationRejected(f"unexpected etcd answer (HTTP {resp.status_code})")
    return data


def _stream_code(error: object) -> int:
    """The gRPC code of a streamed error object ``{"grpc_code": .., "message": ..}``."""
    if isinstance(error, dict):
        code = error.get("grpc_code", error.get("code", 2))
        return int(code) if isinstance(code, int | str) else 2
    return 2


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
