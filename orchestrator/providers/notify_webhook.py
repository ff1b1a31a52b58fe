"""A generic JSON webhook: ``POST <url>`` with one document per message::

    {"event", "service", "title", "message", "level", "status", "incident", "sent_at"}

``incident`` is the incident summary (empty for tests and drills), ``status`` the customer
status, ``sent_at`` ISO 8601 UTC. An optional bearer token goes in ``Authorization``. Success
is any 2xx. The token (and the URL's path, which may carry one) never appears in an error.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from orchestrator.config_bcp import WebhookChannel
from orchestrator.providers.notify_http import (
    Delivered,
    HttpChannel,
    Notice,
    Sleep,
    url_secrets,
)


class WebhookNotifier(HttpChannel):
    """One JSON webhook; ``check`` posts the test message like any other."""

    KIND = "webhook"

    def __init__(self, cfg: WebhookChannel, *, sleep: Sleep = asyncio.sleep) -> None:
        self._url = cfg.url
        token = cfg.token.get_secret_value() if cfg.token is not None else None
        secrets = [*url_secrets(cfg.url), *([token] if token else [])]
        headers = {"Authorization": f"Bearer {token}"} if token else None
        super().__init__(cfg, secrets, sleep=sleep, headers=headers)

    @staticmethod
    def document(notice: Notice) -> dict[str, Any]:
        return {
            "event": notice.event,
            "service": notice.service,
            "title": notice.title,
            "message": notice.text,
            "level": notice.level,
            "status": notice.status,
            "incident": dict(notice.incident),
            "sent_at": datetime.fromtimestamp(notice.sent_at, UTC).isoformat(),
        }

    async def send(self, notice: Notice) -> Delivered:
        resp = await self._http.call(
            "POST", self._url, json=self.document(notice), ok=range(200, 300)
        )
        return Delivered(f"accepted (HTTP {resp.status_code})")
