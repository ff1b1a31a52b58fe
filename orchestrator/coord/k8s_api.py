"""The slice of the Kubernetes API server's REST API that the Lease backend
(:mod:`orchestrator.coord.kubernetes`) uses: ``coordination.k8s.io/v1`` Leases in one namespace,
read (GET), listed by label selector (GET on the collection), created (POST) and replaced (PUT)
with :class:`httpx.AsyncClient`.

Guarantees:

* **One budget per call.** Every method runs within ``timeout`` whatever API server URLs it
  tries. An attempt on one URL gets an equal share of what is left (the last gets all of it);
  a connection failure, a timeout, a 5xx or a 429 moves on to the next URL, which stays
  current. Nothing is retried beyond that: the callers' protocol decides.
* **Errors by meaning.** 404 and 409 are answers the callers expect (``None``); 401 reads the
  token file again and retries once (projected service-account tokens rotate); 401, 403, 400,
  422 and any other 4xx become :class:`CoordinationRejected` with the API server's ``Status``
  message; an API server that cannot be asked is :class:`CoordinationUnavailable`.
* **Reads are consistent.** GET and list are sent without ``resourceVersion``, which the API
  documents as "most recent": served from etcd with a quorum read (or from the watch cache once
  it has caught up with etcd's current revision), never from a stale cache.
* The bearer token is read from ``token_file`` when the client is built, again at most every
  60 s (the kubelet rewrites projected tokens well before they expire) and after a 401. It is
  sent only in the ``Authorization`` header, never logged.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from orchestrator.coord.base import CoordinationRejected, CoordinationUnavailable

GROUP_VERSION = "coordination.k8s.io/v1"
TOKEN_REREAD = 60.0
LIST_PAGE = 250
MAX_PAGES = 4


class KubeApi:
    """Leases in ``namespace`` on the API server(s) at ``endpoints``."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        namespace: str,
        token: str | None = None,
        token_file: Path | None = None,
        timeout: float = 2.0,
        verify: ssl.SSLContext | bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one API server URL is needed")
        if token is not None and token_file is not None:
            raise ValueError("give a token or a token file, not both")
        self._endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self.namespace = namespace
        self._timeout = timeout
        self._token = token
        self._token_file = token_file
        self._token_read_at = -TOKEN_REREAD
        self._clock = clock
        self._client = httpx.AsyncClient(
            timeout=timeout,
            verify=verify,
            trust_env=False,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "helios-orchestrator"},
        )
        if token_file is not None:
            self._read_token()

    @property
    def collection(self) -> str:
        return f"/apis/{GROUP_VERSION}/namespaces/{self.namespace}/leases"

    # --- the calls -------------------------------------------------------------------------

    async def get(self, name: str) -> dict[str, Any] | None:
        """The Lease, or None when there is none."""
        status, data = await self._call("GET", f"{self.collection}/{name}")
        return None if status == 404 else _object(data, "GET", name)

    async def create(self, lease: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created Lease, or None when one of that name exists (409 AlreadyExists)."""
        status, data = await self._call("POST", self.collection, body=lease)
        return None if status == 409 else _object(data, "POST", _name_of(lease))

    async def replace(self, lease: Mapping[str, Any]) -> dict[str, Any] | None:
        """PUT: the stored Lease, or None on a 409 Conflict (its ``metadata.resourceVersion``
        or ``uid`` precondition failed: someone else wrote or re-created it). A Lease that does
        not exist is created by a PUT without ``uid`` (Leases allow create-on-update)."""
        name = _name_of(lease)
        status, data = await self._call("PUT", f"{self.collection}/{name}", body=lease)
        if status == 404:  # only for a kind without create-on-update; not a Lease
            return None
        return None if status == 409 else _object(data, "PUT", name)

    async def select(self, label_selector: str) -> list[dict[str, Any]]:
        """Every Lease matching ``label_selector`` (following ``continue`` for a few pages)."""
        items: list[dict[str, Any]] = []
        params = {"labelSelector": label_selector, "limit": str(LIST_PAGE)}
        for _ in range(MAX_PAGES):
            _, data = await self._call("GET", self.collection, params=params)
            found = data.get("items") or []
            if not isinstance(found, list):
                raise CoordinationRejected("the API server's LeaseList has no item list")
            items.extend(i for i in found if isinstance(i, dict))
            token = (data.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {**params, "continue": str(token)}
        raise CoordinationRejected(f"more than {MAX_PAGES * LIST_PAGE} Leases match")

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- plumbing ----------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON object) of the first API server that answers within the budget; 404
        and 409 are returned, other refusals raised. Raises CoordinationUnavailable or
        CoordinationRejected."""
        n = len(self._endpoints)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        problems: list[str] = []
        for attempt in range(n):
            left = deadline - loop.time()
            if left <= 0:
                break
            endpoint = self._endpoints[self._current]
            try:
                async with asyncio.timeout(left / (n - attempt)):
                    return await self._send(endpoint, method, path, params, body)
            except (TimeoutError, httpx.TransportError, _Unavailable) as exc:
                problems.append(f"{endpoint}: {_describe(exc)}")
                if self._endpoints[self._current] == endpoint:
                    self._current = (self._current + 1) % n
        raise CoordinationUnavailable(
            f"Kubernetes API {method} {path} failed within {self._timeout:g}s: "
            + "; ".join(problems or ["timeout"])
        )

    async def _send(
        self,
        endpoint: str,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
    ) -> tuple[int, dict[str, Any]]:
        for fresh_token in (False, True):
            headers = self._auth_header(fresh=fresh_token)
            resp = await self._client.request(
                method, endpoint + path, params=params, json=body, headers=headers
            )
            code = resp.status_code
            if code == 401 and self._token_file is not None and not fresh_token:
                continue  # the token may have been rotated since we read it
            data = _decode(resp)
            if code < 300 or code in (404, 409):
                return code, data
            if code >= 500 or code == 429:
                raise _Unavailable(f"HTTP {code}: {_message(data, resp)}")
            reason = f" {data['reason']}" if data.get("reason") else ""
            raise CoordinationRejected(
                f"the Kubernetes API refused {method} {path}: HTTP {code}{reason}: "
                f"{_message(data, resp)}"
            )
        raise CoordinationRejected("unreachable")  # pragma: no cover

    def _auth_header(self, *, fresh: bool) -> dict[str, str]:
        if self._token_file is not None and (
            fresh or self._clock() - self._token_read_at >= TOKEN_REREAD
        ):
            self._read_token()
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _read_token(self) -> None:
        """A few bytes from a local (tmpfs) file: not worth a thread."""
        assert self._token_file is not None
        try:
            token = self._token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CoordinationRejected(
                f"cannot read the token file {self._token_file}: {exc.strerror or exc}"
            ) from None
        self._token = token or None
        self._token_read_at = self._clock()


class _Unavailable(Exception):
    """This API server cannot serve the request now; another may."""


def _name_of(lease: Mapping[str, Any]) -> str:
    return str((lease.get("metadata") or {}).get("name") or "")


def _decode(resp: httpx.Response) -> dict[str, Any]:
    """The JSON object of an answer (a ``Status`` for errors)."""
    try:
        data = json.loads(resp.text) if resp.text.strip() else {}
    except ValueError:
        if resp.status_code >= 500 or resp.status_code == 429:
            raise _Unavailable(f"HTTP {resp.status_code}, not JSON") from None
        raise CoordinationRejected(
            f"not a Kubernetes API answer (HTTP {resp.status_code})"
        ) from None
    if not isinstance(data, dict):
        raise CoordinationRejected(f"unexpected Kubernetes API answer (HTTP {resp.status_code})")
    return data


def _object(data: dict[str, Any], method: str, name: str) -> dict[str, Any]:
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not meta.get("resourceVersion"):
        raise CoordinationRejected(f"{method} Lease {name}: the answer is not a Lease")
    return data


def _message(data: Mapping[str, Any], resp: httpx.Response) -> str:
    message = data.get("message")
    return str(message) if message else (resp.reason_phrase or "")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
