"""DNS switch planning, safety rails and outcome policy. Pure: no I/O, no clock.

A switch is planned from what every provider serves now (read by the caller) and the target of
the region the records should follow. The resulting :class:`SwitchPlan` is what a dry run prints
and what the executor applies — the real run and the dry run share everything up to here.

Safety rails (:func:`raise_if_unsafe`): only owned records are changed; no record set is left
without an answer; no more records than ``max_changes`` change in one switch unless forced.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from orchestrator.errors import UnsafePlan
from orchestrator.providers.dns import ChangeKind, RecordChange, RecordSet, diff, fqdn

RecordKey = tuple[str, str]
"""(fully qualified name, type)"""


@dataclass(frozen=True, slots=True)
class OwnedRecordSpec:
    """A record the orchestrator owns (from ``dns.records`` in the config)."""

    name: str
    type: str
    ttl: int

    @property
    def key(self) -> RecordKey:
        return (fqdn(self.name), self.type.upper())


def desired_records(owned: Iterable[OwnedRecordSpec], target: str) -> tuple[RecordSet, ...]:
    """The record sets every owned record should hold when ``target`` serves the service."""
    if not target.strip():
        raise UnsafePlan("the target is empty: a switch must never leave a name without answer")
    return tuple(RecordSet.make(o.name, o.type, o.ttl, [target]) for o in owned)


@dataclass(frozen=True, slots=True)
class ProviderRead:
    """What one provider serves now for each record, or why it could not be read."""

    provider: str
    records: Mapping[RecordKey, RecordSet | None] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SwitchPlan:
    """Per provider, the changes that make every owned record point at ``target``."""

    region: str
    target: str
    desired: tuple[RecordSet, ...]
    changes: tuple[RecordChange, ...]
    unreadable: Mapping[str, str] = field(default_factory=dict)
    """Providers whose current state could not be read: their change is planned blind."""

    def for_provider(self, provider: str) -> tuple[RecordChange, ...]:
        return tuple(c for c in self.changes if c.provider == provider)

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.provider for c in self.changes))

    @property
    def effective(self) -> tuple[RecordChange, ...]:
        """Changes that modify something (not NOOPs)."""
        return tuple(c for c in self.changes if c.kind is not ChangeKind.NOOP)

    def records_changed(self) -> set[RecordKey]:
        return {(c.after.name, c.after.type) for c in self.effective}

    def checksum(self) -> str:
        """Stable digest of the plan: what is there now and what it becomes."""
        doc = [
            [
                c.provider,
                [c.before.name, c.before.type, c.before.ttl, list(c.before.values)]
                if c.before
                else None,
                [c.after.name, c.after.type, c.after.ttl, list(c.after.values)],
            ]
            for c in self.changes
        ]
        raw = json.dumps([self.region, self.target, doc, sorted(self.unreadable)])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def plan_switch(
    region: str, target: str, owned: Iterable[OwnedRecordSpec], reads: Iterable[ProviderRead]
) -> SwitchPlan:
    """Diff each provider's current records against the desired ones."""
    owned = list(owned)
    desired = desired_records(owned, target)
    changes: list[RecordChange] = []
    unreadable: dict[str, str] = {}
    for read in reads:
        if read.error is not None:
            unreadable[read.provider] = read.error
        for want in desired:
            current = read.records.get((want.name, want.type)) if read.error is None else None
            changes.append(diff(read.provider, current, want))
    return SwitchPlan(
        region=region,
        target=target,
        desired=desired,
        changes=tuple(changes),
        unreadable=unreadable,
    )


def check_change(change: RecordChange, owned: Iterable[OwnedRecordSpec]) -> None:
    """The rails that hold for every single change: owned record, never an empty answer."""
    key = (change.after.name, change.after.type)
    if key not in {o.key for o in owned}:
        raise UnsafePlan(
            f"{change.provider}: {change.after.name} {change.after.type} is not a record this "
            "orchestrator owns (dns.records); refusing to change it"
        )
    if not change.after.values or any(not v.strip(".") for v in change.after.values):
        raise UnsafePlan(
            f"{change.provider}: the change would leave {change.after.name} "
            f"{change.after.type} with no answer"
        )


def raise_if_unsafe(
    plan: SwitchPlan, owned: Iterable[OwnedRecordSpec], max_changes: int, force: bool = False
) -> None:
    """Refuse a plan that breaks a safety rail. ``force`` lifts only the ``max_changes`` rail."""
    owned = list(owned)
    for c in plan.changes:
        check_change(c, owned)
    changed = plan.records_changed()
    if len(changed) > max_changes and not force:
        names = ", ".join(f"{n} {t}" for n, t in sorted(changed))
        raise UnsafePlan(
            f"this switch changes {len(changed)} records ({names}), more than dns.max_changes="
            f"{max_changes}; review the plan and pass --force to apply it"
        )


def select_records(owned: Iterable[OwnedRecordSpec], names: Iterable[str]) -> list[OwnedRecordSpec]:
    """The owned records named in ``names`` (all when empty); a name not owned is refused."""
    owned = list(owned)
    wanted = [fqdn(n) for n in names]
    if not wanted:
        return owned
    by_name: dict[str, list[OwnedRecordSpec]] = {}
    for o in owned:
        by_name.setdefault(fqdn(o.name), []).append(o)
    out: list[OwnedRecordSpec] = []
    for name in wanted:
        if name not in by_name:
            raise UnsafePlan(
                f"{name} is not a record this orchestrator owns (dns.records); "
                "refusing to change it"
            )
        out.extend(by_name[name])
    return out


class SwitchOutcome(enum.StrEnum):
    SUCCESS = "success"
    """Every provider serves the new answer."""
    PARTIAL = "partial"
    """The policy is met, but at least one provider failed (degraded supplier)."""
    FAILED = "failed"
    """The policy is not met."""


def outcome(
    policy: str, results: Mapping[str, bool], primary_provider: str | None = None
) -> SwitchOutcome:
    """Judge a switch from per-provider success under ``require: all | any | primary``."""
    if not results:
        return SwitchOutcome.FAILED
    ok = [p for p, good in results.items() if good]
    if len(ok) == len(results):
        return SwitchOutcome.SUCCESS
    if policy == "all":
        met = False
    elif policy == "any":
        met = bool(ok)
    elif policy == "primary":
        met = primary_provider is not None and results.get(primary_provider, False)
    else:
        raise ValueError(f"unknown policy {policy!r}")
    return SwitchOutcome.PARTIAL if met else SwitchOutcome.FAILED
