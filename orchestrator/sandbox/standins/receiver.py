"""A local receiver for the notification channels: it answers like Slack, Discord, PagerDuty,
Statuspage and a generic webhook, and records every request.

Routes (answers in each provider's documented shape):

* ``POST /slack/<id...>`` -> 200 ``ok``; 400 ``invalid_payload`` when the JSON has no ``text``;
* ``POST /discord/<id...>`` -> 204 (200 with the message under ``?wait=true``); 400
  ``{"message", "code"}`` without ``content``/``embeds`` (50006) or with ``content`` over
  2,000 characters (50035); a faulted 429 carries ``{"retry_after", "global"}``;
* ``POST /pagerduty/v2/enqueue`` -> 202 ``{"status": "success", "message": "Event processed",
  "dedup_key"}``; 400 ``{"status": "invalid event", "message", "errors"}`` for a routing key
  that is not 32 characters, an unknown ``event_action``, a trigger without
  ``payload.summary``/``source``/``severity`` (or a bad severity), an acknowledge or resolve
  without ``dedup_key``. Alerts are kept by dedup key (:meth:`NotifyReceiver.pagerduty_alerts`);
* ``/statuspage/v1/pages/<page>``: ``GET`` the page; ``GET/POST .../incidents``; ``GET/PATCH
  .../incidents/<id>`` -> 201 on create with the new ``id``, 200 otherwise; 422 ``{"error":
  [...]}`` for a blank name or an unknown status; 401 ``{"error"}`` unless the request carries
  ``Authorization: OAuth <key>`` with the configured key (any key when none is configured).
  Incidents keep their status history (:meth:`NotifyReceiver.statuspage_incidents`);
* ``POST /webhook/<id...>`` -> 200 ``{"ok": true}`` for a JSON body (401 without the configured
  bearer token, when one is configured);
* ``GET /_recorded`` -> every recorded request as JSON (never faulted, never recorded).

Every other request is recorded too, faulted ones included, as ``{"seq", "at", "kind", "method",
"path", "query", "headers", "json", "text", "status"}`` (``status`` 0: dropped unanswered).
Faults come from :class:`~orchestrator.sandbox.standins.faults.FaultPlan` (``.faults``) and are
answered in the provider's shape. Loopback only by default.

Run it on its own::

    python -m orchestrator.sandbox.standins.receiver --port N [--host 127.0.0.1] \\
        [--statuspage-key-file F] [--webhook-token-file F]

It prints one JSON line with its URLs once it listens, and stops on SIGTERM/SIGINT (exit 0).
Exit 1: the port cannot be bound; 2: bad arguments or an unreadable key file.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final

from orchestrator.sandbox.standins._http import JsonStandIn, Request, Response
from orchestrator.sandbox.standins.faults import Fault

PD_ACTIONS: Final = ("trigger", "acknowledge", "resolve")
PD_SEVERITIES: Final = ("critical", "error", "warning", "info")
SP_STATUSES: Final = ("investigating", "identified", "monitoring", "resolved")
DISCORD_MAX: Final = 2000
_SLACK_ERRORS: Final = {
    400: "invalid_payload",
    403: "action_prohibited",
    404: "no_service",
    410: "channel_is_archived",
    429: "rate_limited",
}
_SP_PAGE: Final = re.compile(r"^/statuspage/v1/pages/([^/]+)(/incidents(?:/([^/]+))?)?/?$")
_TEXT: Final = {"Content-Type": "text/plain; charset=utf-8"}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def kind_of(path: str) -> str:
    """slack | discord | pagerduty | statuspage | webhook | unknown."""
    for kind in ("slack", "discord", "pagerduty", "statuspage", "webhook"):
        if path.startswith(f"/{kind}/"):
            return kind
    return "unknown"


class NotifyReceiver(JsonStandIn):
    """See the module docstring. ``statuspage_key``/``webhook_token`` None: not checked."""

    def __init__(
        self,
        statuspage_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        webhook_token: str | None = None,
    ) -> None:
        super().__init__(host, port)
        self._sp_key = statuspage_key
        self._webhook_token = webhook_token
        self._local = threading.local()
        self._records: list[dict[str, Any]] = []
        self._incidents: dict[str, dict[str, dict[str, Any]]] = {}
        self._alerts: dict[str, dict[str, Any]] = {}

    # --- URLs -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.root_url

    def slack_url(self, hook: str = "T0000/B0000/receiver") -> str:
        return f"{self.root_url}/slack/{hook}"

    def discord_url(self, hook: str = "1000/receiver") -> str:
        return f"{self.root_url}/discord/{hook}"

    @property
    def pagerduty_url(self) -> str:
        return f"{self.root_url}/pagerduty/v2/enqueue"

    @property
    def statuspage_base(self) -> str:
        return f"{self.root_url}/statuspage/v1"

    def webhook_url(self, hook: str = "receiver") -> str:
        return f"{self.root_url}/webhook/{hook}"

    # --- what was received (copies) ---------------------------------------------------------

    def recorded(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Recorded requests in arrival order, optionally of one kind."""
        with self._lock:
            return [copy.deepcopy(r) for r in self._records if kind in (None, r["kind"])]

    def delivered(self, kind: str) -> list[dict[str, Any]]:
        """JSON bodies of the requests of ``kind`` answered with a 2xx."""
        return [r["json"] for r in self.recorded(kind) if 200 <= r["status"] < 300]

    def statuspage_incidents(self, page_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._incidents.get(page_id, {}).values()))

    def pagerduty_alerts(self) -> dict[str, dict[str, Any]]:
        """Alerts by dedup key: ``{"status", "actions": [...], "summary"}``."""
        with self._lock:
            return copy.deepcopy(self._alerts)

    def reset(self) -> None:
        """Forget recorded requests, incidents and alerts (faults stay)."""
        with self._lock:
            self._records.clear()
            self._incidents.clear()
            self._alerts.clear()

    # --- HTTP -------------------------------------------------------------------------------

    def handle(self, req: Request) -> Response | None:
        if req.path == "/_recorded" and req.method == "GET":
            return Response(200, self.recorded())
        self._local.kind = kind_of(req.path)
        resp = super().handle(req)
        self._record(req, 0 if resp is None else resp.status)
        return resp

    def _record(self, req: Request, status: int) -> None:
        try:
            body = req.json()
        except ValueError:
            body = None
        with self._lock:
            self._records.append(
                {
                    "seq": len(self._records),
                    "at": time.time(),
                    "kind": kind_of(req.path),
                    "method": req.method,
                    "path": req.path,
                    "query": {k: v[0] for k, v in req.query.items()},
                    "headers": dict(req.headers),
                    "json": body,
                    "text": req.body.decode("utf-8", "replace"),
                    "status": status,
                }
            )

    def error(self, status: int, reason: str, message: str) -> Response:
        kind = getattr(self._local, "kind", "unknown")
        if kind == "slack":
            text = _SLACK_ERRORS.get(status, "rollup_error" if status >= 500 else reason)
            return Response(status, text.encode(), dict(_TEXT))
        if kind == "discord":
            return Response(status, {"message": message, "code": 0})
        if kind == "pagerduty":
            label = "throttle event" if status == 429 else "error"
            return Response(status, {"status": label, "message": message, "errors": [message]})
        return Response(status, {"error": message})

    def fault_response(self, fault: Fault) -> Response | None:
        if fault.status == 429 and getattr(self._local, "kind", "") == "discord":
            body = {
                "message": "You are being rate limited.",
                "retry_after": fault.retry_after if fault.retry_after is not None else 1.0,
                "global": False,
            }
            return Response(429, body)
        return super().fault_response(fault)

    def dispatch(self, req: Request) -> Response:
        kind = kind_of(req.path)
        if kind == "statuspage":
            return self._statuspage(req)
        if req.method != "POST":
            return self.error(405, "methodNotAllowed", f"{req.method} is not allowed here")
        if kind == "slack" and len(req.path) > len("/slack/"):
            return self._slack(req)
        if kind == "discord" and len(req.path) > len("/discord/"):
            return self._discord(req)
        if kind == "pagerduty" and req.path == "/pagerduty/v2/enqueue":
            return self._pagerduty(req)
        if kind == "webhook" and len(req.path) > len("/webhook/"):
            return self._webhook(req)
        return Response(404, {"error": f"no route for {req.method} {req.path}"})

    @staticmethod
    def _body(req: Request) -> dict[str, Any] | None:
        try:
            body = req.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    # --- providers ----------------------------------------------------------------------------

    def _slack(self, req: Request) -> Response:
        body = self._body(req)
        text = body.get("text") if body else None
        if not isinstance(text, str) or not text.strip():
            return Response(400, b"invalid_payload", dict(_TEXT))
        return Response(200, b"ok", dict(_TEXT))

    def _discord(self, req: Request) -> Response:
        body = self._body(req)
        if body is None:
            return Response(400, {"message": "Cannot send an empty message", "code": 50006})
        content = body.get("content")
        if not content and not body.get("embeds"):
            return Response(400, {"message": "Cannot send an empty message", "code": 50006})
        if isinstance(content, str) and len(content) > DISCORD_MAX:
            error = {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
            return Response(
                400,
                {
                    "message": "Invalid Form Body",
                    "code": 50035,
                    "errors": {"content": {"_errors": [error]}},
                },
            )
        if req.arg("wait") == "true":
            message = {"id": str(uuid.uuid4().int >> 64), "content": content or "", "type": 0}
            return Response(200, message)
        return Response(204, b"")

    def _pagerduty(self, req: Request) -> Response:
        body = self._body(req)
        errors = _pagerduty_errors(body)
        if body is None or errors:
            return Response(
                400,
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
            )
        action = body["event_action"]
        key = str(body.get("dedup_key") or uuid.uuid4().hex)
        with self._lock:
            alert = self._alerts.setdefault(key, {"status": "triggered", "actions": []})
            alert["actions"].append(action)
            alert["status"] = {"trigger": "triggered", "acknowledge": "acknowledged"}.get(
                action, "resolved"
            )
            if action == "trigger":
                alert["summary"] = body["payload"]["summary"]
        return Response(202, {"status": "success", "message": "Event processed", "dedup_key": key})

    def _webhook(self, req: Request) -> Response:
        if self._webhook_token is not None and req.headers.get("authorization") != (
            f"Bearer {self._webhook_token}"
        ):
            return Response(401, {"error": "missing or wrong bearer token"})
        if self._body(req) is None:
            return Response(400, {"error": "expected a JSON object"})
        return Response(200, {"ok": True})

    def _statuspage(self, req: Request) -> Response:
        auth = req.headers.get("authorization", "")
        expected = f"OAuth {self._sp_key}" if self._sp_key is not None else None
        if (
            not auth.startswith("OAuth ")
            or len(auth) <= len("OAuth ")
            or (expected is not None and auth != expected)
        ):
            return Response(401, {"error": "Could not authenticate"})
        m = _SP_PAGE.match(req.path)
        if not m:
            return Response(404, {"error": "Not found"})
        page, incidents, incident_id = m.group(1), m.group(2), m.group(3)
        with self._lock:
            store = self._incidents.setdefault(page, {})
            if incidents is None and req.method == "GET":
                return Response(200, _page(page))
            if incidents is not None and incident_id is None:
                if req.method == "GET":
                    return Response(200, copy.deepcopy(list(store.values())))
                if req.method == "POST":
                    return self._sp_create(req, page, store)
            if incident_id is not None:
                if incident_id not in store:
                    return Response(404, {"error": "Incident not found"})
                if req.method == "GET":
                    return Response(200, copy.deepcopy(store[incident_id]))
                if req.method in ("PATCH", "PUT"):
                    return self._sp_update(req, store[incident_id])
        return Response(405, {"error": f"{req.method} is not allowed here"})

    def _sp_create(self, req: Request, page: str, store: dict[str, dict[str, Any]]) -> Response:
        doc = (self._body(req) or {}).get("incident")
        if not isinstance(doc, dict):
            return Response(400, {"error": "incident is missing"})
        problems = []
        if not isinstance(doc.get("name"), str) or not doc["name"].strip():
            problems.append("Name can't be blank")
        status = doc.get("status", "investigating")
        if status not in SP_STATUSES:
            problems.append("Status is not included in the list")
        if problems:
            return Response(422, {"error": problems})
        incident_id = "".join(
            secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12)
        )
        now = _now_iso()
        inc: dict[str, Any] = {
            "id": incident_id,
            "page_id": page,
            "name": doc["name"],
            "status": status,
            "created_at": now,
            "updated_at": now,
            "resolved_at": now if status == "resolved" else None,
            "shortlink": f"https://stspg.io/{incident_id[:5]}",
            "component_ids": list(doc.get("component_ids") or []),
            "components": dict(doc.get("components") or {}),
            "incident_updates": [],
        }
        _add_update(inc, status, str(doc.get("body") or ""), now)
        store[incident_id] = inc
        return Response(201, copy.deepcopy(inc))

    @classmethod
    def _sp_update(cls, req: Request, inc: dict[str, Any]) -> Response:
        doc = (cls._body(req) or {}).get("incident")
        if not isinstance(doc, dict):
            return Response(400, {"error": "incident is missing"})
        status = doc.get("status", inc["status"])
        if status not in SP_STATUSES:
            return Response(422, {"error": ["Status is not included in the list"]})
        now = _now_iso()
        inc["status"] = status
        inc["updated_at"] = now
        if status == "resolved":
            inc["resolved_at"] = now
        if isinstance(doc.get("name"), str) and doc["name"].strip():
            inc["name"] = doc["name"]
        if isinstance(doc.get("components"), dict):
            inc["components"].update(doc["components"])
        _add_update(inc, status, str(doc.get("body") or ""), now)
        return Response(200, copy.deepcopy(inc))


def _add_update(inc: dict[str, Any], status: str, body: str, at: str) -> None:
    inc["incident_updates"].insert(
        0, {"id": uuid.uuid4().hex[:12], "status": status, "body": body, "created_at": at}
    )


def _page(page: str) -> dict[str, Any]:
    return {
        "id": page,
        "name": f"{page} status",
        "subdomain": page,
        "time_zone": "Etc/UTC",
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": _now_iso(),
    }


def _pagerduty_errors(body: dict[str, Any] | None) -> list[str]:
    if body is None:
        return ["Event object is not a JSON object"]
    errors = []
    key = body.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = body.get("event_action")
    if action not in PD_ACTIONS:
        errors.append("'event_action' is missing or invalid (trigger, acknowledge or resolve)")
    dedup = body.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append("'dedup_key' is missing or blank")
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "'payload' is missing"]
        for field in ("summary", "source", "severity"):
            value = payload.get(field)
            if not isinstance(value, str) or not value.strip():
                errors.append(f"'payload.{field}' is missing or blank")
        if payload.get("severity") and payload.get("severity") not in PD_SEVERITIES:
            errors.append("'payload.severity' is invalid (critical, error, warning or info)")
        if isinstance(payload.get("summary"), str) and len(payload["summary"]) > 1024:
            errors.append("'payload.summary' is longer than 1024 characters")
    return errors


# --- as a process --------------------------------------------------------------------------------


def _read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise ValueError(f"{path} is empty")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.sandbox.standins.receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="TCP port (0: a free one)")
    parser.add_argument("--statuspage-key-file", type=Path, help="the Statuspage API key")
    parser.add_argument("--webhook-token-file", type=Path, help="the webhook bearer token")
    args = parser.parse_args(argv)
    try:
        key = _read_secret(args.statuspage_key_file)
        token = _read_secret(args.webhook_token_file)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"receiver: cannot read a secret: {exc}\n")
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    receiver = NotifyReceiver(key, args.host, args.port, webhook_token=token)
    try:
        receiver.start()
    except OSError as exc:
        sys.stderr.write(f"receiver: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 1
    try:
        info = {
            "url": receiver.url,
            "slack": f"{receiver.url}/slack/<id>",
            "discord": f"{receiver.url}/discord/<id>",
            "pagerduty": receiver.pagerduty_url,
            "statuspage": receiver.statuspage_base,
            "webhook": f"{receiver.url}/webhook/<id>",
            "recorded": f"{receiver.url}/_recorded",
        }
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
