"""Slack incoming webhook: the plan's primary communication channel.

``POST <webhook URL>`` with ``{"text": ...}``; success is HTTP 200 (body ``ok``). Slack's errors
are plain-text codes (``invalid_payload``, ``no_service``, ``channel_is_archived``, ...), which
the error message quotes. Retries, timeouts and secrecy: :mod:`orchestrator.providers.notify_http`.
The webhook URL is the secret; it never appears in an error.
"""

from __future__ import annotations

import asyncio
from typing import Final

import httpx

from orchestrator.config_bcp import SlackChannel
from orchestrator.providers.notify_http import (
    Delivered,
    HttpChannel,
    Notice,
    Sleep,
    clip,
    url_secrets,
)

MAX_TEXT: Final = 40_000


def _describe(resp: httpx.Response) -> str:
    return resp.text.strip() or resp.reason_phrase  # the sender masks secrets, then clips


class SlackNotifier(HttpChannel):
    """One Slack webhook. ``send`` and ``check`` post ``notice.text``; not idempotent (a retry
    after a lost answer may post twice, which beats not posting)."""

    KIND = "slack"

    def __init__(self, cfg: SlackChannel, *, sleep: Sleep = asyncio.sleep) -> None:
        self._url = cfg.webhook_url.get_secret_value()
        super().__init__(cfg, url_secrets(self._url), sleep=sleep)

    async def send(self, notice: Notice) -> Delivered:
        await self._http.call(
            "POST",
            self._url,
            json={"text": clip(notice.text, MAX_TEXT)},
            ok={200},
            describe=_describe,
        )
        return Delivered("posted")
