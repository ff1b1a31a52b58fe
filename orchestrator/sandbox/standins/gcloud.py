"""A local stand-in for the Google Cloud DNS v1 REST API, good enough for google-cloud-dns.

Routes under ``/dns/v1/projects/{project}``: ``GET/POST /managedZones``, ``GET/DELETE
/managedZones/{zone}``, ``GET .../rrsets`` (``name``, ``type`` (needs ``name``), ``maxResults``,
``pageToken``), ``POST .../changes``, ``GET .../changes`` (paged like rrsets) and ``GET
.../changes/{id}``.

Semantics mirrored from the API documentation: a change is atomic and applied when it is
created. Every deletion must match the current record set exactly (name, type, ttl, rrdatas),
else 412 ``conditionNotMet``; an addition whose name and type exist and are not deleted in the
same change gives 409 ``alreadyExists``; an empty change gives 400. A change reads ``pending``
for its first ``polls_until_done`` GETs, then ``done``. A new zone gets its SOA and NS record
sets, like the real service. ``ttl`` arrives as a string from the SDK; it is stored and returned
as an integer. Lists are paged by ``maxResults`` (default :attr:`GoogleDnsStandIn.page_size`)
and an opaque ``pageToken``/``nextPageToken``. Errors use Google's envelope ``{"error": {"code",
"message", "errors": [{"domain", "reason", "message"}]}}``. No credentials are checked.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.sandbox.standins._http import JsonStandIn, Request, Response

_ZONE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME_SERVERS = ["ns-cloud-a1.googledomains.com.", "ns-cloud-a2.googledomains.com."]
TYPES = ("A", "AAAA", "CNAME", "TXT", "NS", "SOA", "MX", "SRV", "CAA", "PTR")


class GError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _fqdn(name: str) -> str:
    return name.strip().lower().rstrip(".") + "."


@dataclass
class _Change:
    body: dict[str, Any]
    polls_left: int

    def view(self, count_poll: bool) -> dict[str, Any]:
        out = copy.deepcopy(self.body)
        out["status"] = "pending" if self.polls_left > 0 else "done"
        if count_poll and self.polls_left > 0:
            self.polls_left -= 1
        return out


@dataclass
class _Zone:
    info: dict[str, Any]
    rrsets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    changes: list[_Change] = field(default_factory=list)


class GoogleDnsStandIn(JsonStandIn):
    """See the module docstring. ``api_endpoint`` is what ``client_options`` takes."""

    def __init__(
        self, project: str, host: str = "127.0.0.1", port: int = 0, polls_until_done: int = 0
    ) -> None:
        super().__init__(host, port)
        self.project = project
        self.polls_until_done = polls_until_done
        self.page_size = 1000
        """Items per list page when the request sets no ``maxResults`` (lower it to test paging)."""
        self._zones: dict[str, _Zone] = {}
        self._next_zone_id = 1000

    @property
    def api_endpoint(self) -> str:
        return self.root_url

    # --- direct access --------------------------------------------------------------------

    def add_zone(self, name: str, dns_name: str) -> None:
        """Create managed zone ``name`` for ``dns_name`` (idempotent for the same dns_name)."""
        with self._lock:
            self._add_zone({"name": name, "dnsName": dns_name})

    def rrsets(self, zone: str) -> list[dict[str, Any]]:
        """Copies of the zone's record sets, sorted by name and type."""
        with self._lock:
            return copy.deepcopy([v for _, v in sorted(self._zones[zone].rrsets.items())])

    def lookup(self, name: str, rtype: str) -> tuple[int, list[str]] | None:
        """(ttl, rrdatas) served for ``name``/``rtype`` across all zones."""
        key = (_fqdn(name), rtype.upper())
        with self._lock:
            for zone in self._zones.values():
                if key in zone.rrsets:
                    rr = zone.rrsets[key]
                    return int(rr["ttl"]), list(rr["rrdatas"])
        return None

    # --- HTTP -----------------------------------------------------------------------------

    def error(self, status: int, reason: str, message: str) -> Response:
        item = {"domain": "global", "reason": reason, "message": message}
        return Response(status, {"error": {"code": status, "message": message, "errors": [item]}})

    def dispatch(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")
        if parts[:3] != ["dns", "v1", "projects"] or len(parts) < 5:
            return self.error(404, "notFound", f"No such API route: {req.path}")
        if parts[3] != self.project:
            return self.error(
                404,
                "notFound",
                f"The 'parameters.project' resource named '{parts[3]}' does not exist.",
            )
        if parts[4] != "managedZones":
            return self.error(404, "notFound", f"No such API route: {req.path}")
        try:
            with self._lock:
                return Response(200, self._route(req, parts[5:]))
        except GError as exc:
            return self.error(exc.status, exc.reason, exc.message)

    def _route(self, req: Request, rest: list[str]) -> dict[str, Any]:
        method = req.method
        if not rest:
            if method == "GET":
                zones = [copy.deepcopy(z.info) for z in self._zones.values()]
                if (dns_name := req.arg("dnsName")) is not None:
                    zones = [z for z in zones if z["dnsName"] == _fqdn(dns_name)]
                return {"kind": "dns#managedZonesListResponse", "managedZones": zones}
            if method == "POST":
                body = self._body(req)
                if str(body.get("name")) in self._zones:
                    raise GError(
                        409, "alreadyExists", f"The resource '{body.get('name')}' already exists"
                    )
                return self._add_zone(body)
        else:
            zone = self._zone(rest[0])
            if len(rest) == 1 and method == "GET":
                return copy.deepcopy(zone.info)
            if len(rest) == 1 and method == "DELETE":
                self._delete_zone(rest[0], zone)
                return {}
            if len(rest) == 2 and rest[1] == "rrsets" and method == "GET":
                return self._list_rrsets(req, zone)
            if len(rest) == 2 and rest[1] == "changes" and method == "POST":
                return self._create_change(zone, self._body(req))
            if len(rest) == 2 and rest[1] == "changes" and method == "GET":
                views = [c.view(count_poll=False) for c in zone.changes]
                items, token = _page(req, views, self.page_size)
                return _listing("dns#changesListResponse", "changes", items, token)
            if len(rest) == 3 and rest[1] == "changes" and method == "GET":
                for change in zone.changes:
                    if change.body["id"] == rest[2]:
                        return change.view(count_poll=True)
                raise GError(
                    404,
                    "notFound",
                    f"The 'parameters.changeId' resource named '{rest[2]}' does not exist.",
                )
        raise GError(405, "methodNotAllowed", f"{method} is not allowed on {req.path}")

    @staticmethod
    def _body(req: Request) -> dict[str, Any]:
        try:
            body = req.json()
        except ValueError:
            raise GError(400, "parseError", "Parse Error") from None
        if not isinstance(body, dict):
            raise GError(400, "parseError", "Parse Error: expected a JSON object")
        return body

    def _zone(self, name: str) -> _Zone:
        if name not in self._zones:
            raise GError(
                404,
                "notFound",
                f"The 'parameters.managedZone' resource named '{name}' does not exist.",
            )
        return self._zones[name]

    # --- zones and record sets (lock held) -----------------------------------------------

    def _add_zone(self, body: dict[str, Any]) -> dict[str, Any]:
        name, dns_name = body.get("name"), body.get("dnsName")
        if not isinstance(name, str) or not _ZONE_NAME.match(name):
            raise GError(400, "invalid", f"Invalid value for 'entity.managedZone.name': '{name}'")
        if not isinstance(dns_name, str) or not dns_name.endswith("."):
            raise GError(
                400, "invalid", f"Invalid value for 'entity.managedZone.dnsName': '{dns_name}'"
            )
        if name in self._zones:
            if self._zones[name].info["dnsName"] != _fqdn(dns_name):
                raise GError(409, "alreadyExists", f"The resource '{name}' already exists")
            return copy.deepcopy(self._zones[name].info)
        self._next_zone_id += 1
        info: dict[str, Any] = {
            "kind": "dns#managedZone",
            "name": name,
            "dnsName": _fqdn(dns_name),
            "description": str(body.get("description") or ""),
            "id": str(self._next_zone_id),
            "creationTime": _now(),
            "nameServers": list(_NAME_SERVERS),
            "visibility": "public",
        }
        zone = _Zone(info)
        apex = info["dnsName"]
        soa = f"{_NAME_SERVERS[0]} cloud-dns-hostmaster.google.com. 1 21600 3600 259200 300"
        zone.rrsets[(apex, "NS")] = _rrset(apex, "NS", 21600, list(_NAME_SERVERS))
        zone.rrsets[(apex, "SOA")] = _rrset(apex, "SOA", 21600, [soa])
        self._zones[name] = zone
        return copy.deepcopy(info)

    def _delete_zone(self, name: str, zone: _Zone) -> None:
        if any(t not in ("NS", "SOA") for _, t in zone.rrsets):
            raise GError(
                400,
                "containerNotEmpty",
                f"The resource named '{name}' cannot be deleted because it is not empty",
            )
        del self._zones[name]

    def _list_rrsets(self, req: Request, zone: _Zone) -> dict[str, Any]:
        name, rtype = req.arg("name"), req.arg("type")
        if rtype is not None and name is None:
            raise GError(400, "required", "The 'parameters.name' parameter is required with type")
        items = [v for _, v in sorted(zone.rrsets.items())]
        if name is not None:
            items = [r for r in items if r["name"] == _fqdn(name)]
        if rtype is not None:
            items = [r for r in items if r["type"] == rtype.upper()]
        page, token = _page(req, copy.deepcopy(items), self.page_size)
        return _listing("dns#resourceRecordSetsListResponse", "rrsets", page, token)

    def _create_change(self, zone: _Zone, body: dict[str, Any]) -> dict[str, Any]:
        additions = [self._rrset_in(zone, r, "additions") for r in body.get("additions") or []]
        deletions = [self._rrset_in(zone, r, "deletions") for r in body.get("deletions") or []]
        if not additions and not deletions:
            raise GError(
                400,
                "required",
                "The 'entity.change' parameter is required but was "
                "missing: a change needs additions or deletions",
            )
        work = dict(zone.rrsets)
        for rr in deletions:
            key = (rr["name"], rr["type"])
            cur = work.get(key)
            if cur is None or (cur["ttl"], sorted(cur["rrdatas"])) != (
                rr["ttl"],
                sorted(rr["rrdatas"]),
            ):
                raise GError(
                    412,
                    "conditionNotMet",
                    f"Precondition not met for "
                    f"'entity.change.deletions[{rr['name']}][{rr['type']}]'",
                )
            del work[key]
        for rr in additions:
            key = (rr["name"], rr["type"])
            if key in work:
                raise GError(
                    409,
                    "alreadyExists",
                    f"The resource 'entity.change.additions"
                    f"[{rr['name']}][{rr['type']}]' named '{rr['name']} ({rr['type']})' "
                    "already exists",
                )
            work[key] = rr
        zone.rrsets = work  # atomic: applied at creation, as the real service does
        change = {
            "kind": "dns#change",
            "id": str(len(zone.changes) + 1),
            "startTime": _now(),
            "additions": additions,
            "deletions": deletions,
        }
        zone.changes.append(_Change(change, self.polls_until_done))
        return zone.changes[-1].view(count_poll=False)

    @staticmethod
    def _rrset_in(zone: _Zone, raw: object, where: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise GError(400, "invalid", f"entity.change.{where}: expected objects")
        name, rtype, ttl, rrdatas = (raw.get(k) for k in ("name", "type", "ttl", "rrdatas"))
        if not isinstance(name, str) or not name.endswith("."):
            raise GError(
                400,
                "invalid",
                f"Invalid value for 'entity.change.{where}[].name': "
                f"'{name}' (a fully qualified name ending in a dot)",
            )
        name = _fqdn(name)
        apex = zone.info["dnsName"]
        if name != apex and not name.endswith("." + apex):
            raise GError(
                400,
                "invalid",
                f"Invalid value for 'entity.change.{where}[].name': '{name}' is not in zone {apex}",
            )
        if not isinstance(rtype, str) or rtype.upper() not in TYPES:
            raise GError(
                400, "invalid", f"Invalid value for 'entity.change.{where}[].type': '{rtype}'"
            )
        try:
            ttl_int = int(str(ttl))
        except ValueError:
            raise GError(
                400, "invalid", f"Invalid value for 'entity.change.{where}[].ttl': '{ttl}'"
            ) from None
        if ttl_int < 0:
            raise GError(400, "invalid", f"Invalid value for 'entity.change.{where}[].ttl'")
        if (
            not isinstance(rrdatas, list)
            or not rrdatas
            or not all(isinstance(v, str) and v for v in rrdatas)
        ):
            raise GError(
                400,
                "invalid",
                f"entity.change.{where}[].rrdatas must be a non-empty list of strings",
            )
        for value in rrdatas:
            _check_rdata(rtype.upper(), value, where)
        return _rrset(name, rtype.upper(), ttl_int, list(rrdatas))


def _rrset(name: str, rtype: str, ttl: int, rrdatas: list[str]) -> dict[str, Any]:
    return {
        "kind": "dns#resourceRecordSet",
        "name": name,
        "type": rtype,
        "ttl": ttl,
        "rrdatas": rrdatas,
    }


def _check_rdata(rtype: str, value: str, where: str) -> None:
    try:
        if rtype == "A":
            ipaddress.IPv4Address(value)
        elif rtype == "AAAA":
            ipaddress.IPv6Address(value)
    except ValueError:
        raise GError(
            400, "invalid", f"Invalid value for 'entity.change.{where}[].rrdata': '{value}'"
        ) from None


def _page(
    req: Request, items: list[dict[str, Any]], default_size: int
) -> tuple[list[dict[str, Any]], str | None]:
    try:
        start = int(req.arg("pageToken") or 0)
        size = int(req.arg("maxResults") or default_size)
    except ValueError:
        raise GError(400, "invalid", "Invalid pageToken or maxResults") from None
    if start < 0 or size < 1:
        raise GError(400, "invalid", "Invalid pageToken or maxResults")
    end = start + size
    return items[start:end], (str(end) if end < len(items) else None)


def _listing(kind: str, key: str, items: list[dict[str, Any]], token: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind, key: items}
    if token is not None:
        out["nextPageToken"] = token
    return out
