"""Configuration of the business continuity features: activation levels, notifications and
drills (the ``levels``, ``notifications`` and ``drill`` sections of the config file).

Defaults follow the company's Business Continuity Plan: the activation table (single component
failure: automated; Level 1 service degradation: Operations, up to 4 hours; Level 2 partial
outage: VP Engineering, 4-24 hours; Level 3 full outage: Executive team, 24+ hours; Level 4
regional disaster: CEO, extended), the communication tables (BCP team in real time, engineering
hourly, customers on the status page) and the monthly technical DR drill.

Guarantees: every cross reference (a level's audience, an audience's channel, a channel's
backup) is checked at load time and reported with its field path; secrets (webhook URLs, API
keys, routing keys, tokens) are only accepted by reference (``env:``/``file:``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from orchestrator.config_types import Duration, Name, SecretRef, check_url

# --- activation levels ---------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LevelPolicy(_Strict):
    """One activation level: who has authority, how long it is expected to last, whom to tell."""

    authority: str = Field(min_length=1, description="Who owns decisions at this level.")
    expected_duration: Duration | None = Field(
        None,
        gt=0,
        description="An incident open longer than this escalates to the next level "
        "(none: no escalation by duration).",
    )
    notify: list[Name] = Field(
        default_factory=list, description="Audiences told at this level (escalation targets)."
    )


def _level(authority: str, hours: float | None, notify: list[str]) -> LevelPolicy:
    return LevelPolicy(
        authority=authority,
        expected_duration=None if hours is None else hours * 3600.0,
        notify=notify,
    )


class Levels(_Strict):
    """The plan's activation table. ``none`` is a single component failure (automated)."""

    none: LevelPolicy = _level("Automated", None, [])
    level1: LevelPolicy = _level("Operations", 4, ["bcp-team"])
    level2: LevelPolicy = _level("VP Engineering", 24, ["bcp-team", "engineering", "customers"])
    level3: LevelPolicy = _level(
        "Executive team", None, ["bcp-team", "engineering", "executives", "customers"]
    )
    level4: LevelPolicy = _level(
        "CEO", None, ["bcp-team", "engineering", "executives", "customers"]
    )

    def policy(self, level: int) -> LevelPolicy:
        """The policy of level 0 (none) to 4."""
        return (self.none, self.level1, self.level2, self.level3, self.level4)[level]


# --- notifications -------------------------------------------------------------------------


class NotifyRetry(_Strict):
    """Retries of one notification (tenacity, exponential backoff; 429/5xx/timeouts only)."""

    attempts: int = Field(3, ge=1, le=10, description="Total attempts, the first included.")
    initial_delay: Duration = Field(0.5, ge=0)
    max_delay: Duration = Field(5.0, gt=0)


class _ChannelBase(_Strict):
    name: Name = Field(description="Unique channel name (metrics, logs, routing).")
    timeout: Duration = Field(5.0, gt=0, description="Deadline of one HTTP request.")
    retry: NotifyRetry = NotifyRetry()
    backup: Name | None = Field(
        None, description="Channel that gets the same message when this one fails."
    )


class SlackChannel(_ChannelBase):
    """Slack incoming webhook (the plan's primary communication tool)."""

    kind: Literal["slack"]
    webhook_url: SecretRef = Field(description="Incoming webhook URL reference.")


class DiscordChannel(_ChannelBase):
    """Discord webhook (the plan's backup communication tool)."""

    kind: Literal["discord"]
    webhook_url: SecretRef = Field(description="Webhook URL reference.")


class PagerDutyChannel(_ChannelBase):
    """PagerDuty Events API v2: trigger, acknowledge and resolve with one dedup key per
    incident."""

    kind: Literal["pagerduty"]
    routing_key: SecretRef = Field(description="Integration (routing) key reference.")
    url: Annotated[str, AfterValidator(check_url)] = Field(
        "https://events.pagerduty.com/v2/enqueue", description="Events API v2 endpoint."
    )


class StatuspageChannel(_ChannelBase):
    """Atlassian Statuspage incidents (create, update, resolve)."""

    kind: Literal["statuspage"]
    api_key: SecretRef = Field(description="Statuspage API key reference.")
    page_id: str = Field(min_length=1, description="The status page id.")
    base_url: Annotated[str, AfterValidator(check_url)] = Field(
        "https://api.statuspage.io/v1", description="API base URL."
    )
    component_ids: list[str] = Field(
        default_factory=list, description="Components marked as affected."
    )


class WebhookChannel(_ChannelBase):
    """A generic JSON webhook (POST)."""

    kind: Literal["webhook"]
    url: Annotated[str, AfterValidator(check_url)] = Field(description="Where to POST.")
    token: SecretRef | None = Field(None, description="Optional bearer token reference.")


ChannelConfig = Annotated[
    SlackChannel | DiscordChannel | PagerDutyChannel | StatuspageChannel | WebhookChannel,
    Field(discriminator="kind"),
]


class Audience(_Strict):
    """Who is told, on which channels, how often (the plan's communication tables)."""

    name: Name
    channels: list[Name] = Field(min_length=1)
    template: Literal["internal", "customer"] = Field(
        "internal", description="Message template family."
    )
    update_interval: Duration | None = Field(
        None, gt=0, description="Periodic status updates while an incident is open."
    )


def _default_audiences() -> list[Audience]:
    return []


class NotificationSettings(_Strict):
    """Channels, audiences and templates."""

    channels: list[ChannelConfig] = Field(default_factory=list)
    audiences: list[Audience] = Field(default_factory=_default_audiences)
    templates_dir: str | None = Field(
        None,
        description="Directory of operator-edited templates; a template missing there falls "
        "back to the one shipped with the project.",
    )
    status_url: str = Field(
        "status.heliosdb.io", description="The 'Updates:' link in customer messages."
    )
    service_title: str = Field(
        "HeliosDB Service",
        min_length=1,
        description="The service as customers know it: the customer subject line "
        "('[Status Update] <title>') and the Statuspage incident name.",
    )
    send_drills: bool = Field(True, description="Announce drills to the bcp-team audience.")
    monitoring_period: Duration = Field(
        300.0,
        gt=0,
        description="After a failover, how long the service must stay healthy before the "
        "incident is announced resolved (customers see 'monitoring' meanwhile).",
    )

    @model_validator(mode="after")
    def _references(self) -> NotificationSettings:
        problems = []
        names = [c.name for c in self.channels]
        for i, n in enumerate(names):
            if n in names[:i]:
                problems.append(f"notifications.channels[{i}].name: {n!r} is used twice")
        for i, c in enumerate(self.channels):
            if c.backup is not None and c.backup not in names:
                problems.append(f"notifications.channels[{i}].backup: no channel {c.backup!r}")
            if c.backup == c.name:
                problems.append(
                    f"notifications.channels[{i}].backup: a channel cannot back up itself"
                )
        seen: list[str] = []
        for i, a in enumerate(self.audiences):
            if a.name in seen:
                problems.append(f"notifications.audiences[{i}].name: {a.name!r} is used twice")
            seen.append(a.name)
            for j, ch in enumerate(a.channels):
                if ch not in names:
                    problems.append(
                        f"notifications.audiences[{i}].channels[{j}]: no channel {ch!r}"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def channel(self, name: str) -> ChannelConfig:
        return next(c for c in self.channels if c.name == name)

    def audience(self, name: str) -> Audience | None:
        return next((a for a in self.audiences if a.name == name), None)


# --- drills --------------------------------------------------------------------------------

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _check_cron(value: str) -> str:
    if not croniter.is_valid(value):
        raise ValueError(
            f"{value!r} is not a valid cron expression (minute hour day month weekday)"
        )
    return value


def _check_hhmm(value: str) -> str:
    if not _HHMM.match(value):
        raise ValueError(f"{value!r} is not a time of day HH:MM (24 h)")
    return value


class Blackout(_Strict):
    """A weekly window in which no scheduled drill starts (UTC). ``end`` before ``start``
    spans midnight."""

    days: list[Day] = Field(default_factory=lambda: list(DAYS))
    start: Annotated[str, AfterValidator(_check_hhmm)]
    end: Annotated[str, AfterValidator(_check_hhmm)]


class SqlSmokeCheck(_Strict):
    """A query run through the service name after each drill leg."""

    name: Name
    kind: Literal["sql"]
    query: str = Field(min_length=1)
    expect: str | None = Field(None, description="Expected first column of the first row.")
    timeout: Duration = Field(5.0, gt=0)


class HttpSmokeCheck(_Strict):
    """An HTTP GET after each drill leg."""

    name: Name
    kind: Literal["http"]
    url: Annotated[str, AfterValidator(check_url)]
    expect_status: int = Field(200, ge=100, le=599)
    timeout: Duration = Field(5.0, gt=0)


SmokeCheck = Annotated[SqlSmokeCheck | HttpSmokeCheck, Field(discriminator="kind")]


class WriteLoad(_Strict):
    """The synthetic write load a drill runs to measure RTO and RPO from the client's side."""

    rate: float = Field(20.0, gt=0, le=1000, description="Writes per second.")
    timeout: Duration = Field(1.0, gt=0, description="Deadline of one write.")


class DrillSettings(_Strict):
    """The monthly technical DR drill."""

    schedule: Annotated[str, AfterValidator(_check_cron)] | None = Field(
        None, description="Cron expression (UTC) for scheduled drills, e.g. '0 3 1 * *'."
    )
    blackout: list[Blackout] = Field(default_factory=list)
    kind: Literal["switchover", "failover"] = "switchover"
    to: Name | None = Field(None, description="Target region (default: the best candidate).")
    failback: bool = Field(True, description="Move the primary back after the drill.")
    failure_command: list[str] | None = Field(
        None,
        min_length=1,
        description="Argv (no shell) that fails a node the way a real outage would, for "
        "failover drills; formatted with {node} and {region}.",
    )
    write_load: WriteLoad = WriteLoad()
    smoke_checks: list[SmokeCheck] = Field(default_factory=list)
    max_duration: Duration = Field(
        1800.0, gt=0, description="A drill still running after this is aborted."
    )
    settle: Duration = Field(
        10.0, ge=0, description="Wait for the cluster to be healthy between legs, at most."
    )
