"""Prometheus metrics of the daemon. Names are part of the public interface (see README).

Guarantees: every metric lives in the :class:`~prometheus_client.CollectorRegistry` passed in
(no global registry, no import-time registration), so several daemons can share a process.
Recording never raises for missing data: unknown values are simply not exported.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from orchestrator.model import Assessment, Snapshot, Topology, Verdict
from probes.base import Observation, Role

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_CYCLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)


def package_version() -> str:
    try:
        return version("helios-orchestrator")
    except PackageNotFoundError:
        return "unknown"


class Metrics:
    """All metrics of one daemon instance."""

    def __init__(self, registry: CollectorRegistry, topo: Topology) -> None:
        self.registry = registry
        self._topo = topo
        r = registry
        node_labels = ["region", "node", "probe"]
        self.build = Info("helios_build", "Orchestrator version and service.", registry=r)
        self.build.info({"version": package_version(), "service": topo.service})
        self.probe_up = Gauge(
            "helios_probe_up", "1 if the last probe of the node succeeded.", node_labels, registry=r
        )
        self.probe_latency = Gauge(
            "helios_probe_latency_seconds",
            "Duration of the last probe of the node.",
            node_labels,
            registry=r,
        )
        self.probe_duration = Histogram(
            "helios_probe_duration_seconds",
            "Distribution of probe durations.",
            node_labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.probe_errors = Counter(
            "helios_probe_errors_total",
            "Failed probes by error class.",
            [*node_labels, "error_class"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "helios_replication_lag_seconds",
            "Replica lag from the heartbeat row (0 when it replayed the latest heartbeat).",
            ["region", "node"],
            registry=r,
        )
        self.lag_bytes = Gauge(
            "helios_replication_lag_bytes",
            "WAL bytes the replica has not replayed yet.",
            ["region", "node"],
            registry=r,
        )
        self.role = Gauge(
            "helios_node_role",
            "1 for the node's current role (primary, replica, unknown).",
            ["region", "node", "role"],
            registry=r,
        )
        self.timeline = Gauge(
            "helios_node_timeline",
            "PostgreSQL timeline of the node.",
            ["region", "node"],
            registry=r,
        )
        self.wal_streaming = Gauge(
            "helios_wal_receiver_streaming",
            "1 if the replica's WAL receiver is streaming.",
            ["region", "node"],
            registry=r,
        )
        self.node_verdict = Gauge(
            "helios_node_verdict",
            "1 for the node's current verdict.",
            ["region", "node", "verdict"],
            registry=r,
        )
        self.region_verdict = Gauge(
            "helios_region_verdict",
            "1 for the region's current verdict.",
            ["region", "verdict"],
            registry=r,
        )
        self.primary_region = Gauge(
            "helios_primary_region",
            "1 for the region that holds the primary.",
            ["region"],
            registry=r,
        )
        self.primary_loss_confirmed = Gauge(
            "helios_primary_loss_confirmed",
            "1 when the primary is unreachable and every reachable replica lost it too.",
            registry=r,
        )
        self.rpo_target = Gauge(
            "helios_rpo_target_seconds", "Recovery point objective.", registry=r
        )
        self.rto_target = Gauge("helios_rto_target_seconds", "Recovery time objective.", registry=r)
        self.cycle_duration = Histogram(
            "helios_cycle_duration_seconds",
            "Duration of one tick (observe, judge, heartbeat, record).",
            buckets=_CYCLE_BUCKETS,
            registry=r,
        )
        self.cycles = Counter("helios_cycles_total", "Ticks completed.", registry=r)
        self.cycle_errors = Counter(
            "helios_cycle_errors_total", "Ticks that failed with an unexpected error.", registry=r
        )
        self.cycle_reason = Gauge(
            "helios_cycle_reason",
            "1 for the reason code of the last tick.",
            ["reason"],
            registry=r,
        )
        self.last_cycle = Gauge(
            "helios_last_cycle_timestamp_seconds",
            "Wall clock when the last tick completed.",
            registry=r,
        )
        self.heartbeat_seq = Gauge(
            "helios_heartbeat_sequence",
            "Last heartbeat sequence written on the primary.",
            registry=r,
        )
        self.heartbeat_errors = Counter(
            "helios_heartbeat_errors_total", "Failed heartbeat writes.", registry=r
        )
        self.rpo_target.set(topo.rpo)
        self.rto_target.set(topo.rto)
        self._last_reason: str | None = None

    def record_cycle(self, snap: Snapshot, assessment: Assessment, duration: float) -> None:
        """Export one tick's observations and verdicts."""
        for s in snap.samples:
            region, node = s.node.region, s.node.name
            self._record_probe(region, node, s.database)
            if s.http is not None:
                self._record_probe(region, node, s.http)
            db = s.database.database
            for role in Role:
                self.role.labels(region, node, role.value).set(1 if s.role is role else 0)
            if db is not None and db.timeline is not None:
                self.timeline.labels(region, node).set(db.timeline)
            if s.ok and s.role is Role.REPLICA:
                streaming = db is not None and db.wal_receiver_status == "streaming"
                self.wal_streaming.labels(region, node).set(1 if streaming else 0)
            if s.lag_seconds is not None:
                self.lag_seconds.labels(region, node).set(s.lag_seconds)
            elif s.ok and s.role is Role.PRIMARY:
                self._forget(self.lag_seconds, region, node)
            if s.lag_bytes is not None:
                self.lag_bytes.labels(region, node).set(s.lag_bytes)
            elif s.ok and s.role is Role.PRIMARY:
                self._forget(self.lag_bytes, region, node)
        for n in assessment.nodes:
            for v in Verdict:
                self.node_verdict.labels(n.node.region, n.node.name, v.value).set(
                    1 if n.verdict is v else 0
                )
        for rh in assessment.regions:
            for v in Verdict:
                self.region_verdict.labels(rh.region, v.value).set(1 if rh.verdict is v else 0)
        primary_region = assessment.primary_region
        for region in self._topo.regions:
            self.primary_region.labels(region).set(1 if region == primary_region else 0)
        self.primary_loss_confirmed.set(1 if assessment.primary_loss_confirmed else 0)
        if self._last_reason is not None and self._last_reason != assessment.reason:
            self.cycle_reason.labels(self._last_reason).set(0)
        self.cycle_reason.labels(assessment.reason).set(1)
        self._last_reason = assessment.reason
        self.cycle_duration.observe(duration)
        self.cycles.inc()
        self.last_cycle.set(assessment.at + duration)

    def _record_probe(self, region: str, node: str, obs: Observation) -> None:
        probe = obs.kind.value
        self.probe_up.labels(region, node, probe).set(1 if obs.ok else 0)
        self.probe_latency.labels(region, node, probe).set(obs.latency)
        self.probe_duration.labels(region, node, probe).observe(obs.latency)
        if not obs.ok:
            self.probe_errors.labels(region, node, probe, str(obs.error_class)).inc()

    @staticmethod
    def _forget(gauge: Gauge, *labels: str) -> None:
        try:
            gauge.remove(*labels)
        except KeyError:
            return
