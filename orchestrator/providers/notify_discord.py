"""Discord webhook: the plan's backup communication channel.

``POST <webhook URL>`` with ``{"content": ...}`` (at most 2,000 characters: longer messages are
cut) and no mention parsing; success is HTTP 204 (200 with ``?wait=true``). A 429 carries the
delay in its JSON ``retry_after`` (seconds), preferred to the ``Retry-After`` header. Errors
quote Discord's ``message`` and ``code``. The webhook URL is the secret; it never appears in an
error.
"""

from __future__ import annotations

import asyncio
from typing import Final

import httpx

from orchestrator.config_bcp import DiscordChannel
from orchestrator.providers.notify_http import (
    Delivered,
    HttpChannel,
    Notice,
    Sleep,
    clip,
    retry_after_header,
    url_secrets,
)

MAX_CONTENT: Final = 2000


def retry_after(resp: httpx.Response) -> float | None:
    """Discord's JSON ``retry_after`` (seconds), else the ``Retry-After`` header."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    value = body.get("retry_after") if isinstance(body, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(0.0, float(value))
    return retry_after_header(resp)


class DiscordNotifier(HttpChannel):
    """One Discord webhook. ``send`` and ``check`` post ``notice.text`` (cut to 2,000)."""

    KIND = "discord"

    def __init__(self, cfg: DiscordChannel, *, sleep: Sleep = asyncio.sleep) -> None:
        self._url = cfg.webhook_url.get_secret_value()
        super().__init__(cfg, url_secrets(self._url), sleep=sleep)

    async def send(self, notice: Notice) -> Delivered:
        body = {"content": clip(notice.text, MAX_CONTENT), "allowed_mentions": {"parse": []}}
        await self._http.call("POST", self._url, json=body, ok={200, 204}, retry_after=retry_after)
        return Delivered("posted")
