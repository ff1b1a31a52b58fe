"""Composition root: builds probes, metrics, server and loop from the config and runs them.

Guarantees: one root :class:`asyncio.TaskGroup` owns every task; SIGTERM/SIGINT set a stop event,
the loop finishes its in-flight tick (bounded by the probe timeout), the HTTP server stops, every
probe and connection is closed, and :func:`run_daemon` returns. Nothing is left running.

Under systemd (``Type=notify``, see ``deploy/systemd/``) the daemon sends READY=1 once the first
tick has judged the world (exactly when ``/readyz`` turns 200), STATUS=<the tick's sentence>
whenever it changes, WATCHDOG=1 while ticks keep completing, and STOPPING=1 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from orchestrator.api.auth import Authenticator
from orchestrator.api.control import ControlPlane
from orchestrator.api.routes import ControlApi
from orchestrator.autopilot import Autopilot
from orchestrator.comms import Comms
from orchestrator.config import Config, Node
from orchestrator.controls import load_mark, mark_path
from orchestrator.dnsruntime import open_switcher, reconcile_forever
from orchestrator.dnsswitch import DnsSwitcher
from orchestrator.drilldaemon import DaemonDrills
from orchestrator.drillsvc import DrillScheduler
from orchestrator.failover import FailoverService, load_product_runbooks
from orchestrator.health import HealthSettings
from orchestrator.leadership import Elected, Leadership, Solo
from orchestrator.loop import CycleHook, DaemonState, Loop
from orchestrator.model import Assessment, NodeRef, Snapshot, Topology
from orchestrator.notify import Notifier
from orchestrator.observability.drill_metrics import DrillMetrics
from orchestrator.observability.failover_metrics import FailoverMetrics
from orchestrator.observability.metrics import Metrics
from orchestrator.observability.notify_metrics import NotifyMetrics
from orchestrator.observability.sdnotify import SystemdNotifier, watchdog_pings
from orchestrator.observability.server import HttpServer
from orchestrator.observe import NodeProbes, Observer
from orchestrator.providers.db_postgres import HeartbeatWriter
from orchestrator.signals import stop_on_signals
from probes.http import HttpProbe
from probes.postgres import PostgresProbe

log = structlog.get_logger("helios.app")
SHUTDOWN_GRACE = 30.0
"""Seconds an in-flight failover may take to finish after SIGTERM before it is cancelled (the
journal lets the next start resume it)."""


def topology(cfg: Config) -> Topology:
    """The frozen topology: regions in preference order and their nodes."""
    regions = cfg.ordered_regions()
    return Topology(
        service=cfg.service,
        regions=tuple(r.name for r in regions),
        nodes=tuple(NodeRef(name=n.name, region=r.name) for r in regions for n in r.nodes),
        rpo=cfg.objectives.rpo,
        rto=cfg.objectives.rto,
    )


def health_settings(cfg: Config) -> HealthSettings:
    p = cfg.probes
    return HealthSettings(
        failure_threshold=p.failure_threshold,
        recovery_threshold=p.recovery_threshold,
        flap_window=p.flap_window,
        flap_changes=p.flap_changes,
        rpo=cfg.objectives.rpo,
        # With the heartbeat written every tick, an upstream that stays silent for longer than
        # the failure window is gone.
        receiver_silence=p.failure_threshold * p.interval + 1.0,
    )


def _password(node: Node) -> str | None:
    return node.password.get_secret_value() if node.password else None


def build_observer(cfg: Config) -> Observer:
    """One SQL probe per node, plus an HTTP probe where a health URL is configured."""
    timeout = cfg.probes.timeout
    nodes = []
    for region, node in cfg.all_nodes():
        ref = NodeRef(name=node.name, region=region.name)
        db = PostgresProbe(node.name, node.dsn, _password(node), timeout, service=cfg.service)
        http = HttpProbe(node.name, node.health_url, timeout) if node.health_url else None
        nodes.append(NodeProbes(node=ref, database=db, http=http))
    return Observer(nodes, mark=load_mark(mark_path(cfg.state_dir)))


def heartbeat_factory(cfg: Config) -> Callable[[str], HeartbeatWriter]:
    by_name = {n.name: n for _, n in cfg.all_nodes()}

    def make(node_name: str) -> HeartbeatWriter:
        node = by_name[node_name]
        return HeartbeatWriter(cfg.service, node.dsn, _password(node), cfg.probes.timeout)

    return make


def _reporting_to(systemd: SystemdNotifier, on_cycle: CycleHook | None) -> CycleHook:
    """The tick hook: READY=1 after the first tick (when ``/readyz`` turns 200), then STATUS=
    whenever the sentence changes; then the caller's own hook."""

    def judged(snap: Snapshot, assessment: Assessment) -> None:
        systemd.judged(assessment.sentence)
        if on_cycle is not None:
            on_cycle(snap, assessment)

    return judged


def _started(
    cfg: Config, topo: Topology, port: int, on_listening: Callable[[int], None] | None
) -> None:
    log.info(
        f"helios-orchestrator watching {len(topo.nodes)} nodes in {len(topo.regions)} regions; "
        f"metrics on http://{cfg.listen.address}:{port}/metrics",
        reason="STARTED",
        service=topo.service,
        port=port,
    )
    if on_listening is not None:
        on_listening(port)


@dataclass
class _Parts:
    """The daemon's acting parts, wired to each other."""

    service: FailoverService
    comms: Comms
    autopilot: Autopilot
    drill_metrics: DrillMetrics
    drills: DaemonDrills
    scheduler: DrillScheduler
    control: ControlPlane
    leadership: Leadership

    @classmethod
    def build(
        cls,
        cfg: Config,
        registry: CollectorRegistry,
        switcher: DnsSwitcher | None,
        notifier: Notifier,
        autopilot_metrics: FailoverMetrics,
        state: DaemonState,
    ) -> _Parts:
        leadership: Leadership = (
            Elected.build(cfg, registry) if cfg.coordination is not None else Solo(registry)
        )
        sends = notifier if cfg.notifications.channels else None
        elected = leadership if isinstance(leadership, Elected) else None
        service = FailoverService(
            cfg,
            switcher,
            sends,
            fence=leadership.fence,
            agent_fence=elected.fence_via_agent if elected and cfg.agent.enabled else None,
            on_record=elected.mirror_record if elected else None,
        )
        comms = Comms(
            cfg, service.incidents, sends, monitoring_period=cfg.notifications.monitoring_period
        )
        autopilot = Autopilot(service, autopilot_metrics, comms, leadership)
        if isinstance(leadership, Elected):  # the agents stand aside while a run is in flight
            leadership.run_in_flight = lambda: "in-flight" if autopilot.busy else None
        drill_metrics = DrillMetrics(registry)
        drills = DaemonDrills(cfg, service, autopilot, notifier, drill_metrics)
        scheduler = DrillScheduler(
            cfg,
            drills.run,
            incident_open=lambda: autopilot.incident is not None,
            busy=lambda: autopilot.busy or drills.busy or not leadership.is_leader,
        )
        control = ControlPlane(cfg, state, service, autopilot, drills)
        return cls(service, comms, autopilot, drill_metrics, drills, scheduler, control, leadership)

    def start_background(self, tg: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        """The notification worker, leader election and publishing, the drill scheduler."""
        tg.create_task(self.comms.run(stop), name="notifications")
        if isinstance(self.leadership, Elected):
            tg.create_task(self.leadership.run(stop), name="leadership")
        tg.create_task(self.scheduler.run(stop), name="drill-scheduler")

    def status_fields(self) -> dict[str, Any]:
        """The status document's ``bcp`` and ``drills`` sections."""
        return {
            "bcp": self.comms.status_fields(self.autopilot.incident, time.time()),
            "drills": {
                **self.scheduler.status_fields(),
                "last": self.drill_metrics.last_summary(),
            },
            "leadership": self.leadership.status_fields(),
        }


def _observed_by(leadership: Leadership, on_cycle: CycleHook | None) -> CycleHook | None:
    """Hand every tick to the publisher of this vantage point (with leader election)."""
    if not isinstance(leadership, Elected):
        return on_cycle

    def observed(snap: Snapshot, assessment: Assessment) -> None:
        leadership.observed(snap, assessment)
        if on_cycle is not None:
            on_cycle(snap, assessment)

    return observed


async def run_daemon(
    cfg: Config,
    *,
    stop: asyncio.Event | None = None,
    on_cycle: CycleHook | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Run the daemon until ``stop`` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    load_product_runbooks(cfg)  # a broken runbook is refused before anything starts
    topo = topology(cfg)
    registry = CollectorRegistry()
    metrics = Metrics(registry, topo)
    state = DaemonState(
        topo=topo,
        priorities={r.name: r.priority for r in cfg.regions},
        interval=cfg.probes.interval,
    )
    api = ControlApi(Authenticator(cfg.api), tuple(r.name for r in cfg.ordered_regions()))
    server = HttpServer(state, registry, cfg.listen.address, cfg.listen.port, api)
    # Broken operator templates are refused (ConfigError) before anything starts.
    notifier = await Notifier.create(cfg, NotifyMetrics(registry))
    observer = build_observer(cfg)
    autopilot_metrics = FailoverMetrics(registry)
    with stop_on_signals(stop), contextlib.closing(SystemdNotifier.from_env()) as systemd:
        try:
            await server.start()
        except OSError as exc:
            await observer.aclose()
            await notifier.aclose()
            raise OSError(
                exc.errno,
                f"cannot listen on {cfg.listen.address}:{cfg.listen.port}: {exc.strerror}",
            ) from None
        assert server.port is not None
        _started(cfg, topo, server.port, on_listening)
        try:
            async with contextlib.AsyncExitStack() as stack:
                switcher = (
                    await stack.enter_async_context(open_switcher(cfg, registry))
                    if cfg.dns is not None
                    else None
                )
                parts = _Parts.build(cfg, registry, switcher, notifier, autopilot_metrics, state)
                stack.push_async_callback(parts.service.aclose)
                stack.push_async_callback(notifier.aclose)
                await asyncio.to_thread(parts.drill_metrics.load, cfg.state_dir)
                autopilot = parts.autopilot
                state.extras = parts.status_fields
                loop = Loop(
                    state=state,
                    observer=observer,
                    settings=health_settings(cfg),
                    metrics=metrics,
                    heartbeat=heartbeat_factory(cfg) if cfg.probes.heartbeat else None,
                    on_cycle=_reporting_to(systemd, _observed_by(parts.leadership, on_cycle)),
                    autopilot=autopilot,
                    mark_file=mark_path(cfg.state_dir),
                )
                async with asyncio.TaskGroup() as tg:
                    await autopilot.start(tg)
                    parts.control.start(tg)
                    api.bind(parts.control)
                    tg.create_task(loop.run(stop), name="tick-loop")
                    parts.start_background(tg, stop)
                    if switcher is not None:
                        tg.create_task(
                            reconcile_forever(switcher, cfg, stop), name="dns-reconciler"
                        )
                    tg.create_task(watchdog_pings(systemd, state.live, stop), name="sd-watchdog")
                    await stop.wait()
                    api.bind(None)  # no new run or drill from the API while stopping
                    systemd.stopping("stopping: finishing any failover in flight")
                    await autopilot.drain(SHUTDOWN_GRACE)
        finally:
            await server.stop()
            log.info("helios-orchestrator stopped", reason="STOPPED")


async def probe_once(cfg: Config) -> tuple[Topology, Snapshot]:
    """Observe every node once (for ``orchestrator status`` without a daemon)."""
    observer = build_observer(cfg)
    try:
        snap = await observer.snapshot(1, time.time())
    finally:
        await observer.aclose()
    return topology(cfg), snap
