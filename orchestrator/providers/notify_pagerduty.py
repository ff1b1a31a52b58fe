"""PagerDuty Events API v2: trigger, acknowledge and resolve an alert.

``POST <url>`` with ``{routing_key, event_action, dedup_key, payload, client}``; ``payload``
(summary <= 1,024 characters, source, severity, timestamp, component, group, class,
custom_details) is sent with ``trigger`` only. Success is HTTP 202 with ``"status": "success"``
and the ``dedup_key`` PagerDuty keeps. A 400 (``"invalid event"``) quotes PagerDuty's
``message`` and ``errors`` and is not retried; 429 and 5xx are. Every event of one incident uses
the incident's dedup key, so PagerDuty folds them into one alert. The routing key is the secret;
it never appears in an error.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Final

from orchestrator.config_bcp import PagerDutyChannel
from orchestrator.errors import PermanentError
from orchestrator.providers.notify_http import Delivered, HttpChannel, Notice, Sleep, clip

MAX_SUMMARY: Final = 1024
CLIENT: Final = "helios-orchestrator"


class PagerDutyNotifier(HttpChannel):
    """One Events API v2 integration. ``send`` maps ``notice.pagerduty_action``; ``check``
    triggers and resolves a test alert under ``notice.dedup_key``."""

    KIND = "pagerduty"

    def __init__(self, cfg: PagerDutyChannel, *, sleep: Sleep = asyncio.sleep) -> None:
        self._url = cfg.url
        self._key = cfg.routing_key.get_secret_value()
        super().__init__(cfg, [self._key], sleep=sleep)

    def event_body(self, notice: Notice, action: str) -> dict[str, Any]:
        """The Events API v2 document for ``action`` (payload with ``trigger`` only)."""
        if not notice.dedup_key:
            raise PermanentError(f"{self._http.label}: a PagerDuty event needs a dedup key")
        body: dict[str, Any] = {
            "routing_key": self._key,
            "event_action": action,
            "dedup_key": notice.dedup_key,
        }
        if action == "trigger":
            inc = notice.incident
            body["client"] = CLIENT
            body["payload"] = {
                "summary": clip(notice.title, MAX_SUMMARY),
                "source": str(inc.get("primary") or notice.service),
                "severity": notice.severity,
                "timestamp": datetime.fromtimestamp(notice.sent_at, UTC).isoformat(),
                "component": notice.service,
                "group": str(inc.get("region") or notice.service),
                "class": str(inc.get("kind") or notice.event),
                "custom_details": {
                    "event": notice.event,
                    "level": notice.level,
                    "status": notice.status,
                    "incident": dict(inc),
                    "message": notice.text,
                },
            }
        return body

    async def _post(self, notice: Notice, action: str) -> str:
        resp = await self._http.call(
            "POST", self._url, json=self.event_body(notice, action), ok={202}
        )
        answer = self._http.json_of(resp)
        if answer.get("status") != "success":
            raise PermanentError(
                f"{self._http.label}: HTTP 202 without success: {answer.get('message')}"
            )
        return str(answer.get("dedup_key") or notice.dedup_key)

    async def send(self, notice: Notice) -> Delivered:
        action = notice.pagerduty_action
        if action is None:
            raise PermanentError(f"{self._http.label}: no PagerDuty action for {notice.event}")
        key = await self._post(notice, action)
        return Delivered(f"{action} accepted", external_id=key)

    async def check(self, notice: Notice) -> Delivered:
        key = await self._post(notice, "trigger")
        await self._post(notice, "resolve")
        return Delivered(f"test alert {key} triggered and resolved", external_id=key)
