"""Atlassian Statuspage: one public incident per orchestrator incident, created, updated and
resolved as the incident evolves.

* create: ``POST {base}/pages/{page}/incidents`` ``{"incident": {name, status, body,
  component_ids, components}}`` -> 201 with the incident's ``id``;
* update and resolve: ``PATCH {base}/pages/{page}/incidents/{id}`` ``{"incident": {status,
  body, components}}`` -> 200;
* the communication test reads the page (``GET {base}/pages/{page}``): no public incident.

Statuses are investigating / identified / monitoring / resolved; affected components get the
notice's component status. Requests carry ``Authorization: OAuth <key>``; errors quote
Statuspage's ``error``. 420 and 429 (rate limits) and 5xx are retried (a create whose answer
was lost may then create a second incident: the retry errs on the side of telling). The API key
is the secret; it never appears in an error.
"""

from __future__ import annotations

import asyncio
from typing import Any

from orchestrator.config_bcp import StatuspageChannel
from orchestrator.errors import PermanentError
from orchestrator.providers.notify_http import Delivered, HttpChannel, Notice, Sleep


class StatuspageNotifier(HttpChannel):
    """One status page. ``send`` creates the incident when ``notice.external_id`` is None and
    updates it otherwise; the id to keep is returned as ``Delivered.external_id``."""

    KIND = "statuspage"

    def __init__(self, cfg: StatuspageChannel, *, sleep: Sleep = asyncio.sleep) -> None:
        self._page = f"{cfg.base_url.rstrip('/')}/pages/{cfg.page_id}"
        self._components = list(cfg.component_ids)
        key = cfg.api_key.get_secret_value()
        super().__init__(cfg, [key], sleep=sleep, headers={"Authorization": f"OAuth {key}"})

    def _incident(self, notice: Notice, create: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": notice.status, "body": notice.text}
        if create:
            doc["name"] = notice.title
            doc["component_ids"] = self._components
        if self._components:
            doc["components"] = {c: notice.component_status for c in self._components}
        return {"incident": doc}

    async def send(self, notice: Notice) -> Delivered:
        if notice.external_id is None:
            resp = await self._http.call(
                "POST", f"{self._page}/incidents", json=self._incident(notice, True), ok={201}
            )
            incident_id = self._http.json_of(resp).get("id")
            if not isinstance(incident_id, str) or not incident_id:
                raise PermanentError(f"{self._http.label}: HTTP 201 without an incident id")
            return Delivered(f"created incident {incident_id} ({notice.status})", incident_id)
        await self._http.call(
            "PATCH",
            f"{self._page}/incidents/{notice.external_id}",
            json=self._incident(notice, False),
            ok={200},
        )
        return Delivered(
            f"updated incident {notice.external_id} ({notice.status})", notice.external_id
        )

    async def check(self, notice: Notice) -> Delivered:
        resp = await self._http.call("GET", self._page, ok={200})
        page = self._http.json_of(resp)
        return Delivered(f"page {page.get('name') or page.get('id') or '?'} readable")
