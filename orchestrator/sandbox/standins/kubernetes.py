"""A local stand-in for the Kubernetes API server, limited to ``coordination.k8s.io/v1`` Leases:
what the Lease coordination backend (:mod:`orchestrator.coord.kubernetes`) calls.

Routes (``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases``): ``GET`` the collection
(``labelSelector`` with ``=``, ``==``, ``!=``, ``in``, ``notin``, ``key`` and ``!key``; ``limit``
and ``continue``), ``POST`` it; ``GET``, ``PUT`` and ``DELETE`` one Lease. Semantics follow the
API server's generic registry and the Lease strategy:

* every write takes the next value of one global ``resourceVersion`` counter (etcd's revision);
  a PUT that changes nothing writes nothing and keeps the version;
* ``PUT`` needs ``metadata.resourceVersion`` (Leases disallow unconditional updates: 422 Invalid
  without it) and answers 409 Conflict when it is not the stored one; a ``metadata.uid`` in the
  body is a precondition (409 when the Lease is gone or was re-created); a PUT without ``uid``
  on a missing Lease creates it (Leases allow create-on-update);
* ``POST`` of an existing name is 409 AlreadyExists; a ``resourceVersion`` on create is refused;
* ``DELETE`` takes ``preconditions`` (``resourceVersion``, ``uid``) in its DeleteOptions body;
* validation: names are DNS-1123 subdomains, labels and annotation keys are qualified names,
  label values at most 63 characters, annotations 256 KiB in all, ``leaseDurationSeconds`` > 0,
  ``leaseTransitions`` >= 0, ``MicroTime`` fields RFC 3339 with six fractional digits.

Errors are ``Status`` objects (``{"kind": "Status", "apiVersion": "v1", "status": "Failure",
"message", "reason", "details", "code"}``). Requests need ``Authorization: Bearer <token>`` (401
otherwise) and may only address the ``namespaces`` given (403). Several stand-ins can share one
:class:`LeaseStore`: several API servers in front of one etcd, or one restarted on its port.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from orchestrator.sandbox.standins._http import JsonStandIn, Request, Response

GROUP, VERSION = "coordination.k8s.io", "v1"
RESOURCE = f"leases.{GROUP}"
_ROUTE = re.compile(
    rf"^/apis/{re.escape(GROUP)}/{VERSION}/namespaces/([^/]+)/leases(?:/([^/]+))?/?$"
)
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_SPEC = {"holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaseTransitions"}
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
ANNOTATIONS_LIMIT = 256 * 1024
INT32 = 2**31 - 1


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or _REASONS.get(code, "")
        self.details = details


def status_response(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    """A ``Status`` answer, as the API server sends for every error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return Response(code, body)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LeaseStore:
    """Leases by (namespace, name) and the global resourceVersion counter; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.revision = 0

    def next_version(self) -> str:
        self.revision += 1
        return str(self.revision)

    def leases(self, namespace: str) -> list[dict[str, Any]]:
        """Copies of the namespace's Leases, by name."""
        with self.lock:
            found = [v for (ns, _), v in sorted(self.objects.items()) if ns == namespace]
            return copy.deepcopy(found)


class KubernetesStandIn(JsonStandIn):
    """See the module docstring. ``base_url`` is the API server URL a client takes."""

    def __init__(
        self,
        token: str,
        namespaces: Iterable[str] = ("default",),
        store: LeaseStore | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        if not token:
            raise ValueError("the stand-in needs a non-empty token")
        self.token = token
        self.namespaces = frozenset(namespaces)
        self.store = store if store is not None else LeaseStore()

    @property
    def base_url(self) -> str:
        return self.root_url

    # --- HTTP -----------------------------------------------------------------------------

    def error(self, status: int, reason: str, message: str) -> Response:
        return status_response(status, _REASONS.get(status, reason), message)

    def dispatch(self, req: Request) -> Response:
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return status_response(401, "Unauthorized", "Unauthorized")
        m = _ROUTE.match(req.path)
        if not m:
            return status_response(
                404, "NotFound", "the server could not find the requested resource"
            )
        namespace, name = m.group(1), m.group(2)
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update"}.get(
            req.method, req.method.lower()
        )
        if namespace not in self.namespaces:
            where = f'"{name}" ' if name else ""
            return status_response(
                403,
                "Forbidden",
                f"{RESOURCE} {where}is forbidden: User "
                f'"system:serviceaccount:{min(self.namespaces, default="default")}:helios" '
                f'cannot {verb} resource "leases" in API group "{GROUP}" in the namespace '
                f'"{namespace}"',
                {"name": name, "group": GROUP, "kind": "leases"} if name else None,
            )
        try:
            with self.store.lock:
                return self._route(req, namespace, name)
        except ApiError as exc:
            return status_response(exc.code, exc.reason, exc.message, exc.details or None)

    def _route(self, req: Request, namespace: str, name: str | None) -> Response:
        if name is None and req.method == "GET":
            return self._list(req, namespace)
        if name is None and req.method == "POST":
            return Response(201, self._create(namespace, _body(req)))
        if name is not None and req.method == "GET":
            return Response(200, _typed(self._existing(namespace, name)))
        if name is not None and req.method == "PUT":
            return self._update(namespace, name, _body(req))
        if name is not None and req.method == "DELETE":
            return self._delete(namespace, name, req)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    def _existing(self, namespace: str, name: str) -> dict[str, Any]:
        found = self.store.objects.get((namespace, name))
        if found is None:
            raise _not_found(name)
        return found

    # --- writes (with the store's lock held) ----------------------------------------------

    def _create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        name = meta.get("name")
        if not name:
            raise _invalid("", "metadata.name", "", "name or generateName is required", True)
        _validate(namespace, str(name), body)
        if meta.get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        if (namespace, name) in self.store.objects:
            raise ApiError(
                409,
                f'{RESOURCE} "{name}" already exists',
                "AlreadyExists",
                name=name,
                group=GROUP,
                kind="leases",
            )
        meta["namespace"] = namespace
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["resourceVersion"] = self.store.next_version()
        stored = _stored(body)
        self.store.objects[(namespace, name)] = stored
        return _typed(stored)

    def _update(self, namespace: str, name: str, body: dict[str, Any]) -> Response:
        meta = body["metadata"]
        if meta.get("name") != name:
            raise ApiError(
                400,
                f"the name of the object ({meta.get('name')}) does not match the name on "
                f"the URL ({name})",
            )
        _validate(namespace, name, body)
        old = self.store.objects.get((namespace, name))
        uid = meta.get("uid")
        if uid and (old is None or old["metadata"]["uid"] != uid):
            have = old["metadata"]["uid"] if old is not None else ""
            raise _conflict(
                name, f"Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
            )
        if old is None:  # Leases allow create-on-update
            meta.pop("resourceVersion", None)
            return Response(201, self._create(namespace, body))
        version = meta.get("resourceVersion")
        if not version:
            raise _invalid(
                name, "metadata.resourceVersion", 0, "must be specified for an update", False
            )
        if version != old["metadata"]["resourceVersion"]:
            raise _conflict(
                name,
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        for field in ("uid", "creationTimestamp"):
            meta[field] = old["metadata"][field]
        meta["namespace"] = namespace
        new = _stored(body)
        if new != old:
            new["metadata"]["resourceVersion"] = self.store.next_version()
            self.store.objects[(namespace, name)] = new
        return Response(200, _typed(self.store.objects[(namespace, name)]))

    def _delete(self, namespace: str, name: str, req: Request) -> Response:
        old = self._existing(namespace, name)
        try:
            options = req.json() or {}
        except ValueError:
            raise ApiError(400, "the body of the request was in an unknown format") from None
        pre = options.get("preconditions") or {} if isinstance(options, dict) else {}
        for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            want = pre.get(field)
            if want is not None and want != old["metadata"][field]:
                raise _conflict(
                    name,
                    f"Precondition failed: {label} in precondition: {want}, {label} in object "
                    f"meta: {old['metadata'][field]}",
                )
        del self.store.objects[(namespace, name)]
        self.store.next_version()
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        body["details"] = {
            "name": name,
            "group": GROUP,
            "kind": "leases",
            "uid": old["metadata"]["uid"],
        }
        return Response(200, body)

    # --- reads ----------------------------------------------------------------------------

    def _list(self, req: Request, namespace: str) -> Response:
        selector = parse_selector(req.arg("labelSelector") or "")
        items = [
            o
            for (ns, _), o in sorted(self.store.objects.items())
            if ns == namespace and matches(selector, o["metadata"].get("labels") or {})
        ]
        try:
            limit = int(req.arg("limit") or 0)
            start = _decode_continue(req.arg("continue")) if req.arg("continue") else ""
        except ValueError:
            raise ApiError(400, "invalid limit or continue parameter") from None
        items = [o for o in items if o["metadata"]["name"] > start] if start else items
        meta: dict[str, Any] = {"resourceVersion": str(self.store.revision)}
        if limit > 0 and len(items) > limit:
            meta["continue"] = _encode_continue(items[limit - 1]["metadata"]["name"])
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        body = {
            "kind": "LeaseList",
            "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": meta,
            "items": copy.deepcopy(items),
        }
        return Response(200, body)


# --- objects ----------------------------------------------------------------------------------


def _body(req: Request) -> dict[str, Any]:
    try:
        body = req.json()
    except ValueError as exc:
        raise ApiError(400, f"couldn't get version/kind; json parse error: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body of the request was in an unknown format")
    if (
        body.get("apiVersion", f"{GROUP}/{VERSION}") != f"{GROUP}/{VERSION}"
        or body.get("kind", "Lease") != "Lease"
    ):
        raise ApiError(
            400,
            f"the API version in the data ({body.get('apiVersion')}) and kind "
            f"({body.get('kind')}) do not match this resource ({GROUP}/{VERSION}, Lease)",
        )
    meta = body.get("metadata")
    if not isinstance(meta, dict):
        raise ApiError(400, 'Lease in version "v1" cannot be handled as a Lease: metadata')
    body["metadata"] = dict(meta)
    return body


def _validate(namespace: str, name: str, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    if meta.get("namespace") not in (None, "", namespace):
        raise ApiError(
            400,
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        raise _invalid(
            name,
            "metadata.name",
            name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character",
        )
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        raise ApiError(
            400, 'Lease in version "v1" cannot be handled as a Lease: labels/annotations'
        )
    for key, value in labels.items():
        _check_key(name, "metadata.labels", key)
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            raise _invalid(
                name,
                "metadata.labels",
                value,
                "a valid label must be an empty "
                "string or consist of alphanumeric characters, '-', '_' or '.', "
                "63 characters at most",
            )
    size = 0
    for key, value in annotations.items():
        _check_key(name, "metadata.annotations", key)
        if not isinstance(value, str):
            raise ApiError(400, 'Lease in version "v1" cannot be handled as a Lease: annotation')
        size += len(key) + len(value)
    if size > ANNOTATIONS_LIMIT:
        raise _invalid(
            name,
            "metadata.annotations",
            "",
            f"Too long: must have at most {ANNOTATIONS_LIMIT} bytes",
        )
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        raise ApiError(400, 'Lease in version "v1" cannot be handled as a Lease: spec')
    body["spec"] = {k: v for k, v in spec.items() if k in _SPEC and v is not None}
    spec = body["spec"]
    for field in ("leaseDurationSeconds", "leaseTransitions"):
        value = spec.get(field)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or abs(value) > INT32
        ):
            raise ApiError(
                400,
                f'Lease in version "v1" cannot be handled as a Lease: spec.{field}: expected int32',
            )
    if spec.get("leaseDurationSeconds") is not None and spec["leaseDurationSeconds"] <= 0:
        raise _invalid(
            name,
            "spec.leaseDurationSeconds",
            spec["leaseDurationSeconds"],
            "must be greater than 0",
        )
    if spec.get("leaseTransitions") is not None and spec["leaseTransitions"] < 0:
        raise _invalid(
            name,
            "spec.leaseTransitions",
            spec["leaseTransitions"],
            "must be greater than or equal to 0",
        )
    if not isinstance(spec.get("holderIdentity", ""), str):
        raise ApiError(
            400, 'Lease in version "v1" cannot be handled as a Lease: spec.holderIdentity'
        )
    for field in ("acquireTime", "renewTime"):
        value = spec.get(field)
        if value is not None and (not isinstance(value, str) or not _MICRO_TIME.match(value)):
            raise ApiError(
                400,
                f'Lease in version "v1" cannot be handled as a Lease: parsing time "{value}" as '
                '"2006-01-02T15:04:05.000000Z07:00"',
            )
        if value is not None:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
            spec[field] = parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_key(name: str, field: str, key: object) -> None:
    if not isinstance(key, str):
        raise ApiError(400, 'Lease in version "v1" cannot be handled as a Lease: key')
    prefix, _, part = key.rpartition("/")
    ok = 0 < len(part) <= 63 and _NAME_PART.match(part) is not None
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        ok = False
    if not ok:
        raise _invalid(
            name,
            field,
            key,
            "name part must consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character",
        )


def _stored(body: dict[str, Any]) -> dict[str, Any]:
    """What is kept: metadata (without managedFields) and spec, no type fields."""
    meta = {k: v for k, v in body["metadata"].items() if k not in ("managedFields", "generateName")}
    for field in ("labels", "annotations"):
        if not meta.get(field):
            meta.pop(field, None)
    return copy.deepcopy({"metadata": meta, "spec": body.get("spec") or {}})


def _typed(stored: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Lease", "apiVersion": f"{GROUP}/{VERSION}", **copy.deepcopy(stored)}


def _not_found(name: str) -> ApiError:
    return ApiError(404, f'{RESOURCE} "{name}" not found', name=name, group=GROUP, kind="leases")


def _conflict(name: str, why: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {RESOURCE} "{name}": {why}',
        name=name,
        group=GROUP,
        kind="leases",
    )


def _invalid(name: str, field: str, value: object, why: str, required: bool = False) -> ApiError:
    detail = f"Required value: {why}" if required else f"Invalid value: {json.dumps(value)}: {why}"
    return ApiError(
        422,
        f'Lease.{GROUP} "{name}" is invalid: {field}: {detail}',
        name=name,
        group=GROUP,
        kind="Lease",
        causes=[
            {
                "reason": "FieldValueRequired" if required else "FieldValueInvalid",
                "message": detail,
                "field": field,
            }
        ],
    )


def _encode_continue(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"start": after}).encode()).decode()


def _decode_continue(token: str | None) -> str:
    data = json.loads(base64.urlsafe_b64decode((token or "").encode()))
    if not isinstance(data, dict) or not isinstance(data.get("start"), str):
        raise ValueError("bad continue token")
    return str(data["start"])


# --- label selectors --------------------------------------------------------------------------

Requirement = tuple[str, str, frozenset[str]]  # (key, operator, values)


def parse_selector(text: str) -> list[Requirement]:
    """Parse a label selector; ApiError 400 when it is malformed."""
    out: list[Requirement] = []
    for part in _split(text):
        m = re.fullmatch(r"\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^()]*)\)\s*", part)
        if m:
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            out.append((m.group(1), m.group(2), values))
            continue
        m = re.fullmatch(r"\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*", part)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            out.append((m.group(1), op, frozenset({m.group(3)})))
            continue
        m = re.fullmatch(r"\s*(!?)\s*([^\s!=(),]+)\s*", part)
        if m:
            out.append((m.group(2), "!" if m.group(1) else "exists", frozenset()))
            continue
        raise ApiError(400, f"unable to parse requirement: {part!r}")
    for key, _, values in out:
        _, _, name = key.rpartition("/")
        if not _NAME_PART.match(name) or any(not _LABEL_VALUE.match(v) for v in values):
            raise ApiError(400, f"unable to parse requirement: invalid label key or value {key!r}")
    return out


def _split(text: str) -> list[str]:
    """Requirements are separated by commas outside parentheses."""
    if not text.strip():
        return []
    parts: list[str] = []
    depth, current = 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def matches(selector: list[Requirement], labels: dict[str, str]) -> bool:
    for key, op, values in selector:
        has = key in labels
        if op == "exists" and not has:
            return False
        if op == "!" and has:
            return False
        if op in ("=", "in") and (not has or labels[key] not in values):
            return False
        if op in ("!=", "notin") and has and labels[key] in values:
            return False
    return True
