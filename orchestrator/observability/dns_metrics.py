"""Prometheus metrics of the DNS providers (names are part of the public interface)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_CHANGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class DnsMetrics:
    """Per-provider health, change timing, errors and drift."""

    def __init__(self, registry: CollectorRegistry, providers: list[str]) -> None:
        r = registry
        self.up = Gauge(
            "helios_dns_provider_up",
            "1 if the last call to the DNS provider succeeded, 0 if it failed (degraded).",
            ["provider"],
            registry=r,
        )
        self.last_change = Gauge(
            "helios_dns_last_change_timestamp_seconds",
            "Wall clock of the provider's last successful change.",
            ["provider"],
            registry=r,
        )
        self.change_duration = Histogram(
            "helios_dns_change_duration_seconds",
            "Time from the start of a switch until the provider reported the change live.",
            ["provider"],
            buckets=_CHANGE_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "helios_dns_errors_total",
            "Failed provider operations by class (transient, permanent, timeout).",
            ["provider", "error_class"],
            registry=r,
        )
        self.drift = Gauge(
            "helios_dns_drift",
            "1 if the provider serves something else than the desired state for the record.",
            ["provider", "record"],
            registry=r,
        )
        self.switches = Counter(
            "helios_dns_switches_total", "DNS switches by outcome.", ["outcome"], registry=r
        )
        for p in providers:
            self.up.labels(p).set(1)

    def provider_ok(self, provider: str) -> None:
        self.up.labels(provider).set(1)

    def provider_failed(self, provider: str, error_class: str) -> None:
        self.up.labels(provider).set(0)
        self.errors.labels(provider, error_class).inc()

    def changed(self, provider: str, duration: float) -> None:
        self.last_change.labels(provider).set(time.time())
        self.change_duration.labels(provider).observe(duration)
