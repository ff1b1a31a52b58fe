"""The notifier the daemon uses: routes incident and drill events (:mod:`orchestrator.notifyplan`),
renders the messages from templates and sends them on every routed channel.

Guarantees:

* **Never raises for a channel.** A channel that fails after its retries is recorded
  (``ok: False`` with the error, secrets masked) and its ``backup`` channel, then the backup's
  backup, gets the same message; the failed channel's record names the channel that delivered
  it in ``via``. A backup already routed the same message for this event is not used twice,
  and a status page never backs up an internal message.
* **Bounded.** Channels are sent to concurrently; each channel's attempt is bounded by its
  timeout and retries (see :mod:`orchestrator.providers.notify_http`), a backup chain by the
  sum of its channels' bounds.
* **Recorded.** Every attempt appends one record per audience served to
  ``inc.notifications``: ``{"at", "event", "audience", "channel", "ok", "via", "detail"}``; a
  Statuspage incident id is kept in ``inc.external["statuspage:<channel>"]`` so that every
  later event updates the same public incident. PagerDuty events of one incident share one
  dedup key.
* **Templates** (:mod:`orchestrator.notifytemplates`) are compiled and checked when the
  notifier is built: a broken one raises :class:`~orchestrator.errors.ConfigError` naming the
  file and line. Should a template still fail at run time, a plain message is sent instead.
* Drill legs and drill announcements start with ``[DRILL]``. With no channels configured every
  method does nothing and returns [].
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog

from orchestrator import notifyplan
from orchestrator.config import Config
from orchestrator.config_bcp import ChannelConfig
from orchestrator.errors import OperationError, UsageError
from orchestrator.incidents import Incident
from orchestrator.notifytemplates import (
    Message,
    Templates,
    channel_test_context,
    drill_context,
    incident_context,
)
from orchestrator.observability.notify_metrics import NotifyMetrics
from orchestrator.providers.notify_discord import DiscordNotifier
from orchestrator.providers.notify_http import Notice, NotifyChannel
from orchestrator.providers.notify_pagerduty import PagerDutyNotifier
from orchestrator.providers.notify_slack import SlackNotifier
from orchestrator.providers.notify_statuspage import StatuspageNotifier
from orchestrator.providers.notify_webhook import WebhookNotifier

log = structlog.get_logger("helios.notify")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ChannelTest:
    """The outcome of the communication test on one channel."""

    name: str
    kind: str
    ok: bool
    latency: float
    detail: str


@dataclass(slots=True)
class _Attempt:
    channel: str
    ok: bool
    detail: str
    via: str | None = None
    external_id: str | None = None


def build_channel(cfg: ChannelConfig, sleep: Sleep = asyncio.sleep) -> NotifyChannel:
    """The provider of one configured channel."""
    match cfg.kind:
        case "slack":
            return SlackNotifier(cfg, sleep=sleep)
        case "discord":
            return DiscordNotifier(cfg, sleep=sleep)
        case "pagerduty":
            return PagerDutyNotifier(cfg, sleep=sleep)
        case "statuspage":
            return StatuspageNotifier(cfg, sleep=sleep)
        case "webhook":
            return WebhookNotifier(cfg, sleep=sleep)


def _statuspage_key(channel: str) -> str:
    return f"statuspage:{channel}"


class Notifier:
    """See the module docstring. ``sleep`` paces retries (injectable for tests)."""

    def __init__(
        self,
        cfg: Config,
        metrics: NotifyMetrics | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = cfg
        self._settings = cfg.notifications
        self._metrics = metrics
        self._clock = clock
        self._templates = Templates(cfg)
        self._channels = {c.name: build_channel(c, sleep) for c in self._settings.channels}

    @classmethod
    async def create(cls, cfg: Config, metrics: NotifyMetrics | None = None) -> Notifier:
        """Build it off the event loop (reading templates and TLS setup block briefly)."""
        return await asyncio.to_thread(cls, cfg, metrics)

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    # --- incidents ---------------------------------------------------------------------------

    async def incident_event(self, inc: Incident, event: str, now: float) -> list[dict[str, Any]]:
        """Send ``event`` (one of ``notifyplan.INCIDENT_EVENTS``, else ValueError) about
        ``inc`` to its routed audiences; the records appended to ``inc.notifications`` (also
        returned)."""
        if not self._channels:
            return []
        cfg = self._cfg
        routes = notifyplan.routes(inc, event, self._settings, cfg.levels, now)
        if not routes:
            return []
        ctx = incident_context(cfg, inc, event, now)
        drill = inc.drill_id is not None
        messages = {
            r.template: self._templates.render(r.template, ctx, drill=drill) for r in routes
        }
        resolved = event == "resolved"
        base = Notice(
            event=event,
            title="",
            text="",
            service=cfg.service,
            sent_at=now,
            level=inc.level,
            status="resolved" if resolved else notifyplan.customer_status(inc),
            component_status="operational" if resolved else notifyplan.component_status(inc),
            severity=notifyplan.pagerduty_severity(inc.level),
            pagerduty_action=notifyplan.pagerduty_action(event),
            dedup_key=notifyplan.dedup_key(cfg.service, inc.id),
            incident=_summary(inc),
        )
        records = await self._send_routes(routes, messages, base, inc.external, now)
        inc.notifications.extend(records)
        return records

    async def periodic(self, inc: Incident, now: float) -> list[dict[str, Any]]:
        """Send ``update`` to the audiences due one (``update_interval`` elapsed); [] when
        none is due or the incident is closed."""
        if not inc.is_open or not notifyplan.due_updates(inc, self._settings, now):
            return []
        return await self.incident_event(inc, "update", now)

    # --- drills ------------------------------------------------------------------------------

    async def drill_event(
        self, record: dict[str, Any], event: str, now: float
    ) -> list[dict[str, Any]]:
        """Announce ``drill_started`` / ``drill_finished`` to the bcp-team audience. ``record``
        is the drill's record (the shipped templates read id, kind, trigger, result, reasons
        and legs, each with a default); the notification records are appended to
        ``record["notifications"]`` and returned."""
        if not self._channels:
            return []
        routes = notifyplan.drill_routes(event, self._settings)
        if not routes:
            return []
        ctx = drill_context(self._cfg, event, record, now)
        messages = {r.template: self._templates.render(r.template, ctx, drill=True) for r in routes}
        base = Notice(event=event, title="", text="", service=self._cfg.service, sent_at=now)
        records = await self._send_routes(routes, messages, base, {}, now)
        record.setdefault("notifications", []).extend(records)
        return records

    # --- the communication test ----------------------------------------------------------------

    async def test(self, only: str | None = None) -> list[ChannelTest]:
        """Exercise every channel (or ``only``) on its own, backups included as channels in
        their own right: Slack, Discord and webhooks get a test message, PagerDuty a test alert
        triggered then resolved under its own dedup key, Statuspage a read of the page (no
        public incident). Raises UsageError for an unknown ``only``."""
        if not self._channels:
            return []
        if only is not None and only not in self._channels:
            known = ", ".join(self._channels)
            raise UsageError(f"no notification channel named {only!r} (configured: {known})")
        names = [only] if only is not None else list(self._channels)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._test_one(name)) for name in names]
        return [t.result() for t in tasks]

    async def _test_one(self, name: str) -> ChannelTest:
        channel = self._channels[name]
        now = time.time()
        ctx = channel_test_context(self._cfg, name, channel.kind, now)
        msg = self._templates.render("test", ctx, drill=False)
        key = f"{notifyplan.comms_test_dedup_key(self._cfg.service, now)}-{name}"
        notice = Notice(
            event="test",
            title=msg.title,
            text=msg.text,
            service=self._cfg.service,
            sent_at=now,
            dedup_key=key,
        )
        start = self._clock()
        try:
            delivered = await channel.check(notice)
        except OperationError as exc:
            ok, detail = False, str(exc)
        else:
            ok, detail = True, delivered.detail
        latency = self._clock() - start
        self._count(name, "test", ok, detail)
        return ChannelTest(name, channel.kind, ok, round(latency, 3), detail)

    # --- sending -------------------------------------------------------------------------------

    async def _send_routes(
        self,
        routes: list[notifyplan.Route],
        messages: dict[str, Message],
        base: Notice,
        external: dict[str, str],
        now: float,
    ) -> list[dict[str, Any]]:
        routed = {(r.channel, r.template) for r in routes}
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._deliver(r, messages[r.template], base, external, routed))
                for r in routes
            ]
        records = []
        for route, task in zip(routes, tasks, strict=True):
            for attempt in task.result():
                if attempt.ok and attempt.external_id and self._is_statuspage(attempt.channel):
                    external[_statuspage_key(attempt.channel)] = attempt.external_id
                records += [
                    {
                        "at": now,
                        "event": base.event,
                        "audience": audience,
                        "channel": attempt.channel,
                        "ok": attempt.ok,
                        "via": attempt.via,
                        "detail": attempt.detail,
                    }
                    for audience in route.audiences
                ]
        return records

    async def _deliver(
        self,
        route: notifyplan.Route,
        msg: Message,
        base: Notice,
        external: dict[str, str],
        routed: set[tuple[str, str]],
    ) -> list[_Attempt]:
        """The route's channel, then its backup chain until one accepts the message."""
        first = await self._attempt(route.channel, msg, base, external)
        attempts = [first]
        seen = {route.channel}
        backup = self._settings.channel(route.channel).backup
        while not first.ok and backup is not None and backup not in seen:
            if self._is_statuspage(backup) and route.template != "customer":
                first.detail += f"; backup {backup} is a public status page: not used"
                break
            if (backup, route.template) in routed:
                first.detail += f"; backup {backup} already gets this message"
                break
            seen.add(backup)
            attempt = await self._attempt(backup, msg, base, external)
            attempt.detail = f"backup of {route.channel}: {attempt.detail}"
            attempts.append(attempt)
            if attempt.ok:
                first.via = backup
                first.detail += f"; delivered via {backup}"
                break
            backup = self._settings.channel(backup).backup
        return attempts

    async def _attempt(
        self, name: str, msg: Message, base: Notice, external: dict[str, str]
    ) -> _Attempt:
        channel = self._channels[name]
        statuspage = channel.kind == "statuspage"
        notice = replace(
            base,
            title=msg.title,
            text=msg.body if statuspage else msg.text,
            external_id=external.get(_statuspage_key(name)) if statuspage else None,
        )
        try:
            delivered = await channel.send(notice)
        except OperationError as exc:
            self._count(name, base.event, False, str(exc))
            return _Attempt(name, False, str(exc))
        self._count(name, base.event, True, delivered.detail)
        return _Attempt(name, True, delivered.detail, external_id=delivered.external_id)

    def _is_statuspage(self, name: str) -> bool:
        return self._channels[name].kind == "statuspage"

    def _count(self, channel: str, event: str, ok: bool, detail: str) -> None:
        if self._metrics is not None:
            self._metrics.record(channel, event, ok)
        if ok:
            log.info(f"{event} sent on {channel}", reason="NOTIFY_SENT", channel=channel)
        else:
            log.warning(
                f"{event} not delivered on {channel}: {detail}",
                reason="NOTIFY_FAILED",
                channel=channel,
            )

    async def aclose(self) -> None:
        """Close every channel's HTTP client. Idempotent."""
        for channel in self._channels.values():
            await channel.aclose()


def _summary(inc: Incident) -> dict[str, Any]:
    """What webhooks and PagerDuty's custom details carry about the incident."""
    return {
        "id": inc.id,
        "status": inc.status,
        "level": inc.level,
        "primary": inc.primary,
        "region": inc.region,
        "kind": inc.kind,
        "new_primary": inc.new_primary,
        "opened_at": inc.opened_at,
        "closed_at": inc.closed_at,
        "rto_seconds": inc.rto_seconds,
        "rpo_seconds": inc.rpo_seconds,
        "drill_id": inc.drill_id,
    }


@contextlib.asynccontextmanager
async def open_notifier(
    cfg: Config, metrics: NotifyMetrics | None = None
) -> AsyncIterator[Notifier | None]:
    """A Notifier for the commands that act (failover, switchover, drill), or None when no
    channel is configured; closed on exit."""
    if not cfg.notifications.channels:
        yield None
        return
    notifier = await Notifier.create(cfg, metrics)
    try:
        yield notifier
    finally:
        await notifier.aclose()
