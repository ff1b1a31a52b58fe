"""A local stand-in for the Cloudflare v4 DNS records API, good enough for the official SDK.

Routes (under ``/client/v4``): ``GET /zones/{zone}``; ``GET/POST /zones/{zone}/dns_records``
(list filters ``name`` / ``name.exact`` / ``name.contains`` / ``name.startswith`` /
``name.endswith``, ``type``, ``content``, ``page``, ``per_page``; a page past the end is ``[]``);
``GET/PATCH/PUT/DELETE /zones/{zone}/dns_records/{id}`` (PATCH merges, PUT replaces);
``POST /zones/{zone}/dns_records/batch`` (deletes, patches, puts, posts in that order, all or
nothing). Every answer uses Cloudflare's envelope ``{"success", "errors", "messages",
"result"}``. Requests need ``Authorization: Bearer <token>``.

Names are stored as Cloudflare does: lower case, no trailing dot, relative names completed with
the zone name. Error codes follow Cloudflare where known (10000 authentication, 7003 bad
identifier, 81044 no such record, 81053 CNAME conflict, 81057 record exists, 9005/9006 bad
address, 9021 bad TTL, 9000 bad name, 1004 other validation errors).
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from orchestrator.sandbox.standins._http import JsonStandIn, Request, Response
from orchestrator.sandbox.standins.faults import Fault

PREFIX = "/client/v4"
TYPES = ("A", "AAAA", "CNAME", "TXT")
AUTO_TTL_SECONDS = 300  # what Cloudflare serves for ttl=1 ("automatic")
_ROUTE = re.compile(r"^/client/v4/zones/([^/]+)(?:/dns_records(?:/([^/]+))?)?/?$")
_HOST = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}$")


class CfError(Exception):
    """A request error answered in Cloudflare's envelope."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _envelope(result: Any, info: dict[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if info is not None:
        body["result_info"] = info
    return body


def _bare(name: str) -> str:
    return name.strip().lower().rstrip(".")


class CloudflareStandIn(JsonStandIn):
    """See the module docstring. ``base_url`` is what ``cloudflare.Cloudflare(base_url=)`` takes."""

    def __init__(self, token: str, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        if not token:
            raise ValueError("the stand-in needs a non-empty API token")
        self._token = token
        self._zones: dict[str, dict[str, Any]] = {}
        self._records: dict[str, dict[str, dict[str, Any]]] = {}

    @property
    def base_url(self) -> str:
        return f"{self.root_url}{PREFIX}"

    # --- direct access (tests, the sandbox) -----------------------------------------------

    def add_zone(self, name: str) -> str:
        """Create zone ``name`` (idempotent); its id is derived from the name, so it is stable
        across restarts."""
        bare = _bare(name)
        zone_id = hashlib.md5(bare.encode(), usedforsecurity=False).hexdigest()
        with self._lock:
            if zone_id not in self._zones:
                self._zones[zone_id] = {
                    "id": zone_id,
                    "name": bare,
                    "status": "active",
                    "paused": False,
                    "type": "full",
                    "development_mode": 0,
                    "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
                    "original_name_servers": [],
                    "account": {"id": "0" * 32, "name": "helios sandbox"},
                    "created_on": _now(),
                    "modified_on": _now(),
                    "activated_on": _now(),
                    "permissions": ["#dns_records:edit", "#dns_records:read", "#zone:read"],
                }
                self._records[zone_id] = {}
        return zone_id

    def records(self, zone_id: str) -> list[dict[str, Any]]:
        """Copies of the zone's records, in creation order."""
        with self._lock:
            return copy.deepcopy(list(self._records[zone_id].values()))

    def lookup(self, name: str, rtype: str) -> tuple[int, list[str]] | None:
        """(ttl, values) served for ``name``/``rtype`` across all zones; for AuthoritativeServer."""
        bare, rtype = _bare(name), rtype.upper()
        with self._lock:
            found = [
                r
                for recs in self._records.values()
                for r in recs.values()
                if r["name"] == bare and r["type"] == rtype
            ]
        if not found:
            return None
        ttl = min(int(r["ttl"]) for r in found)
        values = sorted({str(r["content"]) for r in found})
        return (AUTO_TTL_SECONDS if ttl == 1 else ttl), values

    # --- HTTP -----------------------------------------------------------------------------

    def error(self, status: int, reason: str, message: str) -> Response:
        code = {401: 10000, 403: 10000, 404: 7003, 429: 971}.get(status, 1000)
        return self._fail(status, code, message)

    @staticmethod
    def _fail(status: int, code: int, message: str) -> Response:
        body = {"success": False, "errors": [{"code": code, "message": message}], "messages": []}
        body["result"] = None
        return Response(status, body)

    def fault_response(self, fault: Fault) -> Response | None:
        if fault.success_false and fault.status is None:
            return self._fail(200, 1000, "injected failure with HTTP 200")
        return super().fault_response(fault)

    def dispatch(self, req: Request) -> Response:
        if req.headers.get("authorization") != f"Bearer {self._token}":
            return self._fail(401, 10000, "Authentication error")
        m = _ROUTE.match(req.path)
        if not m:
            return self._fail(404, 7000, f"No route for that URI: {req.path}")
        zone_id, record_id = m.group(1), m.group(2)
        try:
            with self._lock:
                if zone_id not in self._zones:
                    raise CfError(
                        404,
                        7003,
                        f"Could not route to {req.path[len(PREFIX) :]}, perhaps your object "
                        "identifier is invalid?",
                    )
                return self._route(req, zone_id, record_id, "/dns_records" in req.path)
        except CfError as exc:
            return self._fail(exc.status, exc.code, exc.message)

    def _route(self, req: Request, zone_id: str, record_id: str | None, dns: bool) -> Response:
        method = req.method
        if not dns:
            if method == "GET":
                return Response(200, _envelope(copy.deepcopy(self._zones[zone_id])))
        elif record_id is None:
            if method == "GET":
                return self._list(req, zone_id)
            if method == "POST":
                rec = self._create(zone_id, self._body(req), self._records[zone_id])
                return Response(200, _envelope(copy.deepcopy(rec)))
        elif record_id == "batch":
            if method == "POST":
                return Response(200, _envelope(self._batch(zone_id, self._body(req))))
        else:
            recs = self._records[zone_id]
            if method == "GET":
                return Response(200, _envelope(copy.deepcopy(self._get(recs, record_id))))
            if method == "DELETE":
                self._get(recs, record_id)
                del recs[record_id]
                return Response(200, _envelope({"id": record_id}))
            if method in ("PATCH", "PUT"):
                rec = self._replace(zone_id, recs, record_id, self._body(req), method == "PATCH")
                return Response(200, _envelope(copy.deepcopy(rec)))
        raise CfError(405, 10405, f"Method {method} not allowed for this route")

    @staticmethod
    def _body(req: Request) -> dict[str, Any]:
        try:
            body = req.json()
        except ValueError:
            raise CfError(400, 6007, "Malformed JSON in request body") from None
        if not isinstance(body, dict):
            raise CfError(400, 6007, "Malformed JSON in request body: expected an object")
        return body

    @staticmethod
    def _get(recs: dict[str, dict[str, Any]], record_id: str) -> dict[str, Any]:
        if record_id not in recs:
            raise CfError(404, 81044, "Record does not exist.")
        return recs[record_id]

    def _list(self, req: Request, zone_id: str) -> Response:
        recs = list(self._records[zone_id].values())
        exact = req.arg("name.exact") or req.arg("name")
        filters = {
            "exact": exact,
            "contains": req.arg("name.contains"),
            "startswith": req.arg("name.startswith"),
            "endswith": req.arg("name.endswith"),
        }
        for how, value in filters.items():
            if value is None:
                continue
            v = _bare(value) if how in ("exact", "endswith") else value.lower()
            recs = [r for r in recs if _name_matches(r["name"], how, v)]
        if (rtype := req.arg("type")) is not None:
            recs = [r for r in recs if r["type"] == rtype.upper()]
        if (content := req.arg("content")) is not None:
            recs = [r for r in recs if r["content"] == content]
        try:
            page = int(req.arg("page") or 1)
            per_page = int(req.arg("per_page") or 100)
        except ValueError:
            raise CfError(400, 1004, "page and per_page must be integers") from None
        if page < 1 or not 1 <= per_page <= 5_000_000:
            raise CfError(400, 1004, "page must be >= 1 and per_page in 1..5000000")
        chunk = recs[(page - 1) * per_page : page * per_page]
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(chunk),
            "total_count": len(recs),
            "total_pages": max(1, -(-len(recs) // per_page)),
        }
        return Response(200, _envelope(copy.deepcopy(chunk), info))

    # --- validation and writes (called with the lock held) -------------------------------

    def _validated(
        self, zone_id: str, body: dict[str, Any], record_id: str, created_on: str
    ) -> dict[str, Any]:
        zone = self._zones[zone_id]["name"]
        rtype = body.get("type")
        if not isinstance(rtype, str) or rtype.upper() not in TYPES:
            raise CfError(400, 1004, f"DNS Validation Error: type must be one of {TYPES}")
        rtype = rtype.upper()
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise CfError(400, 9000, "DNS name is invalid: name is required")
        bare = zone if name.strip() == "@" else _bare(name)
        if bare != zone and not bare.endswith("." + zone):
            bare = f"{bare}.{zone}"
        if not _HOST.match(bare):
            raise CfError(400, 9000, f"DNS name is invalid: {name!r}")
        content = body.get("content")
        if not isinstance(content, str) or not content:
            raise CfError(400, 1004, "DNS Validation Error: content is required")
        content = _check_content(rtype, content)
        ttl = body.get("ttl", 1)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl != int(ttl):
            raise CfError(400, 9021, "Invalid TTL. Must be between 60 and 86400, or 1 for auto.")
        ttl = int(ttl)
        if ttl != 1 and not 60 <= ttl <= 86400:
            raise CfError(400, 9021, "Invalid TTL. Must be between 60 and 86400, or 1 for auto.")
        proxied = body.get("proxied", False)
        if not isinstance(proxied, bool):
            raise CfError(400, 1004, "DNS Validation Error: proxied must be a boolean")
        return {
            "id": record_id,
            "zone_id": zone_id,
            "zone_name": zone,
            "name": bare,
            "type": rtype,
            "content": content,
            "ttl": ttl,
            "proxied": proxied,
            "proxiable": rtype in ("A", "AAAA", "CNAME"),
            "comment": body.get("comment"),
            "tags": list(body.get("tags") or []),
            "settings": dict(body.get("settings") or {}),
            "meta": {},
            "created_on": created_on,
            "modified_on": _now(),
        }

    def _store(self, recs: dict[str, dict[str, Any]], rec: dict[str, Any]) -> dict[str, Any]:
        others = [r for r in recs.values() if r["id"] != rec["id"] and r["name"] == rec["name"]]
        key = (rec["type"], rec["content"])
        if any((r["type"], r["content"]) == key for r in others):
            raise CfError(400, 81057, "Record already exists.")
        if others and "CNAME" in {rec["type"], *(r["type"] for r in others)}:
            raise CfError(400, 81053, "An A, AAAA, or CNAME record with that host already exists.")
        recs[rec["id"]] = rec
        return rec

    def _create(
        self, zone_id: str, body: dict[str, Any], recs: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        rec = self._validated(zone_id, body, uuid.uuid4().hex, _now())
        return self._store(recs, rec)

    def _replace(
        self,
        zone_id: str,
        recs: dict[str, dict[str, Any]],
        record_id: str,
        body: dict[str, Any],
        merge: bool,
    ) -> dict[str, Any]:
        old = self._get(recs, record_id)
        if merge:
            body = {**old, **{k: v for k, v in body.items() if k != "id"}}
        return self._store(recs, self._validated(zone_id, body, record_id, old["created_on"]))

    def _batch(self, zone_id: str, body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        work = copy.deepcopy(self._records[zone_id])  # all or nothing
        out: dict[str, list[dict[str, Any]]] = {"deletes": [], "patches": [], "puts": []}
        out["posts"] = []
        for op in ("deletes", "patches", "puts", "posts"):
            items = body.get(op) or []
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise CfError(400, 1004, f"{op} must be a list of objects")
            for item in items:
                if op == "posts":
                    out[op].append(self._create(zone_id, item, work))
                    continue
                rid = item.get("id")
                if not isinstance(rid, str):
                    raise CfError(400, 1004, f"every item of {op} needs an id")
                if op == "deletes":
                    out[op].append(self._get(work, rid))
                    del work[rid]
                else:
                    out[op].append(self._replace(zone_id, work, rid, item, op == "patches"))
        self._records[zone_id] = work
        return copy.deepcopy(out)


def _name_matches(name: str, how: str, value: str) -> bool:
    if how == "exact":
        return name == value
    if how == "contains":
        return value in name
    if how == "startswith":
        return name.startswith(value)
    return name.endswith(value)


def _check_content(rtype: str, content: str) -> str:
    content = content.strip()
    if rtype == "A":
        try:
            return str(ipaddress.IPv4Address(content))
        except ValueError:
            raise CfError(400, 9005, "Content for A record must be a valid IPv4 address.") from None
    if rtype == "AAAA":
        try:
            return str(ipaddress.IPv6Address(content))
        except ValueError:
            raise CfError(
                400, 9006, "Content for AAAA record must be a valid IPv6 address."
            ) from None
    if rtype == "CNAME":
        target = _bare(content)
        if not _HOST.match(target):
            raise CfError(400, 9007, "Content for CNAME record is invalid.")
        return target
    return content
