"""Prometheus metrics of notifications (names are public interface).

Guarantees: the counters live in the registry passed in (no global registry); one message on
one channel counts once, as sent or as failed after its retries (a delivery by the backup
channel counts as sent on the backup and failed on the primary).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "helios_notifications_sent_total",
            "Messages a channel accepted, by channel and event.",
            ["channel", "event"],
            registry=registry,
        )
        self.failed = Counter(
            "helios_notifications_failed_total",
            "Messages a channel did not accept after its retries, by channel and event.",
            ["channel", "event"],
            registry=registry,
        )

    def record(self, channel: str, event: str, ok: bool) -> None:
        (self.sent if ok else self.failed).labels(channel, event).inc()
