"""HTTP handlers of the control API (aiohttp) and the mapping of errors to status codes.

Guarantees: every answer is JSON; errors are ``{"error": {"code", "message", "details"?}}`` with
400 (body is not a JSON object), 401/403 (authentication), 404, 409 (busy, unsafe or stale plan),
413 (body over 64 KiB), 422 (a field is wrong: ``details`` names it), 503 (no tick yet); an
unexpected exception is logged and answered 500 without a traceback; no request can stop the
daemon. Mutating endpoints are dry runs unless the body says ``"execute": true``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from orchestrator.api.auth import Authenticator, Denied, Principal
from orchestrator.api.control import ControlPlane, NotReady, StalePlan
from orchestrator.api.models import (
    ControlRequest,
    DrillRequest,
    FailoverRequest,
    SwitchoverRequest,
)
from orchestrator.api.openapi import openapi_document
from orchestrator.errors import Busy, HeliosError, NotFound, UnsafePlan, UsageError

log = structlog.get_logger("helios.api")

MAX_BODY = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.Response]]


def error(status: int, code: str, message: str, details: list[Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    headers = {"WWW-Authenticate": 'Bearer realm="helios"'} if status == 401 else None
    return web.json_response({"error": body}, status=status, headers=headers)


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for e in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in e["loc"]) or "(body)"
        out.append({"field": field, "message": e["msg"]})
    return out


M = TypeVar("M", bound=BaseModel)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The request body as ``model``; an empty body is ``{}`` (a dry run)."""
    raw = await request.read()
    if not raw.strip():
        doc: Any = {}
    else:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _BadBody(400, "BAD_JSON", f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _BadBody(400, "BAD_JSON", "the body must be a JSON object")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        details = _field_errors(exc)
        names = ", ".join(d["field"] for d in details)
        raise _BadBody(422, "INVALID_BODY", f"invalid field(s): {names}", details) from None


class _BadBody(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: list[Any] | None = None
    ) -> None:
        super().__init__(message)
        self.response = error(status, code, message, details)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors under /v1 (unknown path, wrong method, body too large) as JSON."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/v1/") or exc.status < 400:
            raise
        codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "BODY_TOO_LARGE"}
        message = {413: f"the body is larger than {MAX_BODY // 1024} KiB"}.get(
            exc.status, exc.reason
        )
        resp = error(exc.status, codes.get(exc.status, "HTTP_ERROR"), message)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp


class ControlApi:
    """Adds ``/v1/...`` routes to an aiohttp application."""

    def __init__(
        self, auth: Authenticator, regions: tuple[str, ...], control: ControlPlane | None = None
    ) -> None:
        self._auth = auth
        self._regions = regions
        self._bound = control

    def bind(self, control: ControlPlane | None) -> None:
        """Serve through ``control`` (None: every API call answers 503 until bound again)."""
        self._bound = control

    @property
    def _control(self) -> ControlPlane:
        if self._bound is None:
            raise NotReady("the daemon is starting or stopping")
        return self._bound

    def install(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v1/openapi.json", self._openapi)
        r.add_get("/v1/incidents", self._read(self._incidents))
        r.add_get("/v1/incidents/{id}", self._read(self._incident))
        r.add_get("/v1/drills/{id}", self._read(self._drill))
        r.add_get("/v1/plan", self._read(self._plan))
        r.add_post("/v1/failover", self._write(self._failover))
        r.add_post("/v1/switchover", self._write(self._switchover))
        r.add_post("/v1/drill", self._write(self._start_drill))
        for action in ("pause", "resume", "ack"):
            r.add_post(f"/v1/{action}", self._write(self._controller(action)))

    max_body = MAX_BODY

    def middlewares(self) -> list[Any]:
        return [json_errors]

    def guard_read(self, handler: Handler) -> Handler:
        """Wraps the server's own ``/v1/status`` in the read rule."""

        async def wrapped(request: web.Request) -> web.Response:
            try:
                self._auth.for_read(request.headers.get("Authorization"))
            except Denied as d:
                return error(d.status, d.code, d.message)
            return await handler(request)

        return wrapped

    # --- auth and error mapping ------------------------------------------------------------------

    def _read(self, fn: Callable[[web.Request], Awaitable[Any]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            try:
                self._auth.for_read(request.headers.get("Authorization"))
            except Denied as d:
                return error(d.status, d.code, d.message)
            return await _answer(request, fn(request))

        return handler

    def _write(self, fn: Callable[[web.Request, Principal], Awaitable[Any]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            try:
                who = self._auth.for_write(request.headers.get("Authorization"))
            except Denied as d:
                log.warning(
                    f"control API refused {request.method} {request.path}: {d.message}",
                    reason="API_DENIED",
                    status=d.status,
                )
                return error(d.status, d.code, d.message)
            return await _answer(request, fn(request, who))

        return handler

    # --- reads -----------------------------------------------------------------------------------

    async def _openapi(self, _: web.Request) -> web.Response:
        return web.json_response(openapi_document(self._regions))

    async def _incidents(self, request: web.Request) -> Any:
        q = request.query
        status = q.get("status")
        allowed = ("open", "held", "failed_over", "recovered", "failed")
        if status is not None and status not in allowed:
            raise UsageError(f"status must be one of {', '.join(allowed)}")
        limit = _int_param(q.get("limit"), "limit", 1, 1000, default=100)
        return {"incidents": await self._control.incidents(status, limit)}

    async def _incident(self, request: web.Request) -> Any:
        return await self._control.incident(request.match_info["id"])

    async def _drill(self, request: web.Request) -> Any:
        return await self._control.drill(request.match_info["id"])

    async def _plan(self, request: web.Request) -> Any:
        kind = request.query.get("kind", "failover")
        if kind not in ("failover", "switchover"):
            raise UsageError("kind must be failover or switchover")
        to = request.query.get("to") or None
        plan = await self._control.plan(kind, to)
        return {"dry_run": True, "plan": plan.to_dict()}

    # --- writes ----------------------------------------------------------------------------------

    async def _failover(self, request: web.Request, who: Principal) -> Any:
        req = await parse_body(request, FailoverRequest)
        return await self._control.run("failover", req, who)

    async def _switchover(self, request: web.Request, who: Principal) -> Any:
        sw = await parse_body(request, SwitchoverRequest)
        return await self._control.run("switchover", FailoverRequest(**sw.model_dump()), who)

    async def _start_drill(self, request: web.Request, who: Principal) -> Any:
        req = await parse_body(request, DrillRequest)
        return await self._control.start_drill(req, who)

    def _controller(self, action: str) -> Callable[[web.Request, Principal], Awaitable[Any]]:
        async def handle(request: web.Request, who: Principal) -> Any:
            req = await parse_body(request, ControlRequest)
            return await self._control.control(action, req, who)

        return handle


def _int_param(raw: str | None, name: str, low: int, high: int, *, default: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise UsageError(f"{name} must be between {low} and {high}")
    return value


async def _answer(request: web.Request, work: Awaitable[Any]) -> web.Response:
    """Run a handler's work and turn its result or error into the JSON answer."""
    try:
        doc = await work
    except _BadBody as bad:
        return bad.response
    except UsageError as exc:
        return error(422, "INVALID_REQUEST", str(exc))
    except NotFound:
        what = request.match_info.get("id", "")
        return error(404, "NOT_FOUND", f"no such record: {what}")
    except NotReady as exc:
        return error(503, "NOT_READY", str(exc))
    except Busy as exc:
        return error(409, "BUSY", str(exc))
    except StalePlan as exc:
        return error(409, "STALE_PLAN", str(exc))
    except UnsafePlan as exc:
        return error(409, "UNSAFE_PLAN", str(exc))
    except web.HTTPException:
        raise  # aiohttp's own (413 and the like): json_errors answers them
    except HeliosError as exc:
        log.error(f"control API {request.method} {request.path} failed: {exc}", reason="API_ERROR")
        return error(502, "OPERATION_FAILED", str(exc))
    except Exception as exc:
        log.exception(f"control API {request.method} {request.path} crashed", reason="API_BUG")
        return error(500, "INTERNAL", f"internal error ({type(exc).__name__}); see the log")
    status = 202 if isinstance(doc, dict) and doc.get("accepted") else 200
    return web.json_response(doc, status=status)
