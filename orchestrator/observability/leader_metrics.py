"""Prometheus metrics of leader election (names are public interface; the alert rules in
``deploy/prometheus/alerts.yml`` use ``helios_leader``).

Guarantees: the metrics live in the registry passed in (no global registry); ``helios_leader``
is read at scrape time: 1 exactly while this instance considers itself leader (its local
deadline included), and
``helios_leader_epoch`` holds the epoch of its latest leadership (0 before the first).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_RENEW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class LeaderMetrics:
    def __init__(self, registry: CollectorRegistry, is_leader: Callable[[], bool]) -> None:
        self.leader = Gauge(
            "helios_leader",
            "1 while this orchestrator instance holds the leader lease, else 0.",
            registry=registry,
        )
        self.epoch = Gauge(
            "helios_leader_epoch",
            "Fencing epoch of this instance's latest leadership (0: never leader).",
            registry=registry,
        )
        self.renew_seconds = Histogram(
            "helios_lease_renew_seconds",
            "Duration of successful leader lease renewals.",
            buckets=_RENEW_BUCKETS,
            registry=registry,
        )
        self.renew_failures = Counter(
            "helios_lease_renew_failures_total",
            "Leader lease renewals that failed, by reason (unavailable, rejected, lost).",
            ["reason"],
            registry=registry,
        )
        self.changes = Counter(
            "helios_leader_changes_total",
            "Times this instance became leader or stopped being leader.",
            registry=registry,
        )
        self.leader.set_function(lambda: 1.0 if is_leader() else 0.0)
        self.epoch.set(0)
