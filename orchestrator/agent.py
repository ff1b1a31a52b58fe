"""The node agent (``orchestrator agent --node NAME``), run beside each database node: it keeps
its node a writable primary only while it can reach the coordination quorum, fences it when it
cannot, and brings an old primary back only as a replica of the current one. The decisions are
pure (:mod:`orchestrator.agentlogic`); this module is the I/O around them.

Two tasks, owned by one TaskGroup:

* **contact** - every ``agent.interval``: a linearizable read of ``{service}/primary`` through
  the Coordinator (it succeeds only when the service has quorum), bounded by
  ``coordination.timeout``. Success records the instant the request was *sent* (monotonic) as
  the last quorum contact and the leader's current-primary document, then publishes the
  heartbeat ``{service}/agents/{node}`` (ttl 3 x interval): node, region, role
  (primary/replica/down), fenced, the last decision, ``at`` (wall time).
* **guard** - every ``agent.interval``, and also exactly when the last contact turns
  ``fence_after`` old: probes its own node with SQL (bounded by ``min(probes.timeout,
  agent.interval)``), decides, and acts: fence (the node's ``fence_command``, or
  :func:`orchestrator.agentstop.hard_stop` without one: ``standby.signal`` plus SIGKILL of every
  server process) or rejoin (the node's ``rejoin_command`` with ``{upstream_node}``,
  ``{upstream_region}``, ``{upstream_host}``, ``{upstream_port}`` from the current primary's
  node in the configuration). Commands run through ``asyncio.create_subprocess_exec`` (no
  shell, own process group, killed on timeout).

**Timing guarantee.** Let ``T`` be the instant, on the agent's monotonic clock, at which its
last successful quorum check was sent; ``T`` is no later than the moment the quorum was lost.
The guard sleeps until the earlier of its next tick and ``T + fence_after``; a tick probes the
node (bounded by one ``interval``), decides with the time after the probe, and starts the
fence, which takes at most ``agent.fence_timeout``. So the fence starts by
``T + fence_after + interval``, and a primary cut off from the quorum stops taking writes
within ``fence_after + interval + fence_timeout`` of losing it (on the sandbox, with
``fence_after`` 3 s, ``interval`` 0.5 s and its fence command, writes stopped 3.5-3.9 s after
etcd was frozen). A check that hangs does not delay this: the guard never waits for the
contact task. The leader must wait at least that long before promoting over an unreachable
primary. (Monotonic time throughout: wall-clock steps change nothing.)

**At start** the agent first makes one quorum check. Without it the node is treated as cut off
from the beginning: a writable primary is fenced at once, and a stopped node that may have
been the primary is fenced so it cannot start as one. With it, and a current primary named that
is not this node, an old primary is fenced and then rejoined as that primary's replica (a node
the agent fenced: at once; one stopped by someone else: after ``fence_after``, the time the
orchestrator's runbook has to rejoin it itself; see :mod:`orchestrator.agentlogic`).

**Records.** ``<state-dir>/<node>.json`` (atomic, fsynced) holds whether the agent fenced the
node (and when, and why) and the node's last role; the heartbeat carries ``fenced`` too, once
the agent can publish again. Logs: one JSON line per decision change, the fence with
``reason=SELF_FENCED`` (or ``SUPERSEDED`` / ``STALE_PRIMARY``), ``REJOINED``,
``FENCE_FAILED``, ``REJOIN_FAILED``, ``QUORUM_LOST``, ``QUORUM_REGAINED``.

**Stopping.** SIGTERM/SIGINT: no new decision; a fence or rejoin in flight finishes (bounded by
its timeout; an interrupted pg_rewind can ruin a data directory); the connections close.
Under systemd (``deploy/systemd/helios-agent@.service``, ``Type=notify``): READY=1 after the
first decision, STATUS= the decision's sentence, WATCHDOG=1 while the guard keeps ticking.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog
from psycopg.conninfo import conninfo_to_dict

from orchestrator import agentlogic as logic
from orchestrator.agentlogic import ActionKind, CurrentPrimary, Decision, LocalRole
from orchestrator.agentstop import hard_stop
from orchestrator.atomic import write_json
from orchestrator.commands import fill_argv, run_command
from orchestrator.config import Config, Node
from orchestrator.coord import (
    CoordinationRejected,
    CoordinationUnavailable,
    Coordinator,
    build_coordinator,
)
from orchestrator.errors import ConfigError, OperationError, UsageError
from orchestrator.observability.sdnotify import SystemdNotifier, watchdog_pings
from orchestrator.signals import stop_on_signals
from probes.base import Role
from probes.postgres import PostgresProbe

log = structlog.get_logger("helios.agent")

EXTRA_BUDGET = 1.5
"""Added to every call's own bound in the outer ``asyncio.timeout`` (belt and braces)."""


def primary_key(service: str) -> str:
    return f"{service}/primary"


def fence_key(service: str, node: str) -> str:
    """Where the leader asks a node's agent to fence it: ``{"epoch", "at", "by"}``."""
    return f"{service}/fence/{node}"


def agent_key(service: str, node: str) -> str:
    return f"{service}/agents/{node}"


@dataclass
class AgentRecord:
    """The agent's state file: what must survive a restart."""

    node: str
    fenced: bool = False
    fenced_at: float | None = None
    fence_reason: str | None = None
    last_role: LocalRole | None = None
    rejoined_at: float | None = None

    @classmethod
    def load(cls, path: Path, node: str) -> AgentRecord:
        """The record, or a blank one when the file is absent or unreadable (a blank record
        is the cautious one: the node "may have been the primary")."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(node)
        except (OSError, ValueError) as exc:
            log.error(
                f"agent state file {path} unreadable ({exc}); starting blank",
                reason="STATE_UNREADABLE",
            )
            return cls(node)
        if not isinstance(doc, dict) or doc.get("node") != node:
            log.error(
                f"agent state file {path} is not {node}'s; starting blank",
                reason="STATE_UNREADABLE",
            )
            return cls(node)
        role = doc.get("last_role")
        return cls(
            node,
            fenced=doc.get("fenced") is True,
            fenced_at=_number(doc.get("fenced_at")),
            fence_reason=str(doc["fence_reason"]) if doc.get("fence_reason") else None,
            last_role=LocalRole(role) if role in {"primary", "replica"} else None,
            rejoined_at=_number(doc.get("rejoined_at")),
        )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _local_role(role: Role, ok: bool, receiver: str | None) -> LocalRole:
    if not ok:
        return LocalRole.DOWN
    if role is Role.PRIMARY:
        return LocalRole.PRIMARY
    if role is Role.REPLICA:
        return LocalRole.REPLICA if receiver == "streaming" else LocalRole.DETACHED
    return LocalRole.DOWN


def _host_port(node: Node) -> tuple[str, int]:
    parts = conninfo_to_dict(node.dsn)
    host = str(parts.get("hostaddr") or parts.get("host") or "")
    return host.split(",", maxsplit=1)[0], int(str(parts.get("port") or 5432))


class NodeAgent:
    """The agent of one node; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        cfg: Config,
        node_name: str,
        coordinator: Coordinator,
        *,
        state_dir: Path,
        data_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        check_agent_config(cfg, node_name, data_dir)
        assert cfg.coordination is not None  # checked above
        self._cfg = cfg
        self._nodes = {n.name: (r.name, n) for r, n in cfg.all_nodes()}
        self.region, self._node = self._nodes[node_name]
        self.node = node_name
        self._coord = coordinator
        self._coord_timeout = cfg.coordination.timeout
        self._settings = cfg.agent
        self._data_dir = data_dir
        self._clock = clock
        self._wall = wall
        self._systemd = notifier or SystemdNotifier(None)
        self.state_path = state_dir / f"{node_name}.json"
        self.record = AgentRecord(node_name)  # read from state_path when run() starts
        self._probe_timeout = min(cfg.probes.timeout, cfg.agent.interval)
        password = self._node.password.get_secret_value() if self._node.password else None
        self._probe = PostgresProbe(node_name, self._node.dsn, password, self._probe_timeout)
        self._log = log.bind(node=node_name)
        # What the contact task learnt.
        self.contact_at: float | None = None
        self.quorum_ok = False
        self._lost_logged = False
        self.primary: CurrentPrimary | None = None
        self.fence_requested: int | None = None
        """Epoch of the leader's live fence request for this node (see :func:`fence_key`)."""
        self._max_epoch: int | None = None
        # What the guard task saw and decided.
        self.role = LocalRole.DOWN
        self.decision: Decision | None = None
        self._conflict_since: float | None = None
        self._down_since: float | None = None
        self._rejoin_failures = 0
        self._rejoin_not_before: float | None = None
        self._ticked_at: float | None = None
        self._busy: tuple[float, float] | None = None  # (since, budget) of an action in flight

    # --- running ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Read the record, check the quorum once, decide once, then run the contact and guard
        tasks until ``stop``; the probe is closed on the way out (the coordinator belongs to
        the caller)."""
        self.record = await asyncio.to_thread(AgentRecord.load, self.state_path, self.node)
        self._log.info(
            f"node agent for {self.node} ({self.region}) starting: fence after "
            f"{self._settings.fence_after:g}s without quorum, checks every "
            f"{self._settings.interval:g}s",
            reason="AGENT_STARTING",
            fenced=self.record.fenced,
            last_role=self.record.last_role,
        )
        try:
            await self._check_quorum()
            async with asyncio.TaskGroup() as tg:
                # The watchdog first: the first decision's action (a rejoin) may take minutes.
                tg.create_task(
                    watchdog_pings(self._systemd, self.live, stop), name="agent-sd-watchdog"
                )
                tg.create_task(self._announce_stop(stop), name="agent-stopping")
                await self.tick()  # so the first heartbeat carries a real role and decision
                tg.create_task(self._contact_loop(stop), name=f"agent-contact-{self.node}")
                tg.create_task(self._guard_loop(stop), name=f"agent-guard-{self.node}")
        finally:
            await self._probe.aclose()
            self._log.info(f"node agent for {self.node} stopped", reason="STOPPED")

    async def _announce_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._systemd.stopping("stopping: an action in flight finishes first")
        self._log.info("node agent stopping", reason="STOPPING")

    def live(self) -> tuple[bool, str]:
        """For the systemd watchdog: the guard keeps ticking (or its action is within budget)."""
        now = self._clock()
        if self._busy is not None:
            since, budget = self._busy
            ok = now - since < budget + 5.0
            return ok, "" if ok else f"an action has run for {now - since:.0f}s"
        stall = max(3 * self._settings.interval, 5.0)
        if self._ticked_at is None or now - self._ticked_at < stall:
            return True, ""
        return False, f"no guard tick for {now - self._ticked_at:.0f}s"

    async def _sleep_until(self, when: float, stop: asyncio.Event) -> None:
        delay = when - self._clock()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()

    # --- contact ---------------------------------------------------------------------------

    async def _contact_loop(self, stop: asyncio.Event) -> None:
        interval = self._settings.interval
        while not stop.is_set():
            started = self._clock()
            if await self._check_quorum():
                await self._publish()
            await self._sleep_until(started + interval, stop)

    async def _check_quorum(self) -> bool:
        """One linearizable read of the current-primary document; True when it succeeded."""
        sent = self._clock()
        key = primary_key(self._cfg.service)
        request_key = fence_key(self._cfg.service, self.node)
        try:
            async with asyncio.timeout(self._coord_timeout + EXTRA_BUDGET):
                docs = await self._coord.read_prefix(key)
                requests = await self._coord.read_prefix(request_key)
        except (CoordinationUnavailable, CoordinationRejected, TimeoutError) as exc:
            if self.quorum_ok or not self._lost_logged:
                self._lost_logged = True
                self._log.warning(
                    f"cannot reach the coordination quorum: {exc or 'timed out'}",
                    reason="QUORUM_LOST",
                )
            self.quorum_ok = False
            return False
        self._lost_logged = False
        if not self.quorum_ok and self.contact_at is not None:
            self._log.info(
                f"quorum reached again after {sent - self.contact_at:.1f}s",
                reason="QUORUM_REGAINED",
            )
        self.contact_at = max(sent, self.contact_at or sent)
        self.quorum_ok = True
        request = requests.get(request_key)
        epoch = request.document.get("epoch") if request else None
        requested = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
        if requested is not None and requested < (self._max_epoch or 0):
            requested = None  # a deposed leader's request
        if requested != self.fence_requested and requested is not None:
            self._log.warning(
                f"the leader (epoch {requested}) asks to fence {self.node}",
                reason="FENCE_REQUESTED",
            )
        self.fence_requested = requested
        pub = docs.get(key)
        doc = CurrentPrimary.from_document(pub.document if pub else None)
        if doc is None:
            self.primary = None
        elif logic.accept_primary(self._max_epoch, doc):
            before = self.primary
            if before is None or (before.node, before.epoch, before.run) != (
                doc.node,
                doc.epoch,
                doc.run,
            ):  # the leader rewrites "at" on every tick: not news
                self._log.info(
                    f"current primary: {doc.node} ({doc.region}), epoch {doc.epoch}"
                    + (f", run {doc.run} in flight" if doc.run else ""),
                    reason="PRIMARY_PUBLISHED",
                )
            self.primary = doc
            self._max_epoch = doc.epoch
        return True

    async def _publish(self) -> None:
        rec = self.record
        doc = logic.heartbeat(
            node=self.node,
            region=self.region,
            role=self.role,
            fenced=rec.fenced,
            fenced_at=rec.fenced_at,
            fence_reason=rec.fence_reason,
            decision=self.decision,
            primary=self.primary,
            at=self._wall(),
        )
        try:
            async with asyncio.timeout(self._coord_timeout + EXTRA_BUDGET):
                await self._coord.publish(
                    agent_key(self._cfg.service, self.node), doc, 3 * self._settings.interval
                )
        except (CoordinationUnavailable, CoordinationRejected, TimeoutError) as exc:
            self._log.debug(f"heartbeat not published: {exc}", reason="PUBLISH_FAILED")

    # --- guard -----------------------------------------------------------------------------

    async def _guard_loop(self, stop: asyncio.Event) -> None:
        interval, fence_after = self._settings.interval, self._settings.fence_after
        next_tick = self._clock()
        while True:
            now = self._clock()
            next_tick = max(next_tick + interval, now)
            wake = next_tick
            deadline = logic.fence_deadline(self.contact_at, fence_after)
            if deadline is not None and now < deadline < wake:
                wake = deadline  # decide exactly when the contact turns stale
            await self._sleep_until(wake, stop)
            if stop.is_set():
                return
            try:
                await self.tick()
            except Exception:  # the top of the loop: logged; no tick counted for the watchdog
                self._log.exception("guard tick failed", reason="TICK_FAILED")

    async def observe_role(self) -> LocalRole:
        """The node's role; DOWN when it does not answer within the probe timeout, and in any
        case within one interval (which keeps the timing guarantee strict)."""
        try:
            async with asyncio.timeout(self._settings.interval):
                obs = await self._probe.observe()
        except TimeoutError:
            return LocalRole.DOWN
        db = obs.database
        return _local_role(obs.role, obs.ok, db.wal_receiver_status if db else None)

    async def tick(self) -> Decision:
        """Probe, decide, act: one guard tick."""
        role = await self.observe_role()
        now = self._clock()
        rec = self.record
        self.role = role
        self._conflict_since = logic.track_conflict(
            self._conflict_since, role, self.primary, self.node, now
        )
        self._down_since = logic.track_down(self._down_since, role, now)
        changed = False
        remembered = logic.remembered_role(rec.last_role, role)
        if remembered != rec.last_role:
            rec.last_role, changed = remembered, True
        if rec.fenced and not logic.still_fenced(rec.fenced, role, self.primary, self.node):
            self._log.info(f"{self.node} is {role}: no longer fenced", reason="UNFENCED")
            rec.fenced, changed = False, True
        decision = logic.decide(
            logic.View(
                node=self.node,
                role=role,
                now=now,
                contact_at=self.contact_at,
                quorum_ok=self.quorum_ok,
                fence_after=self._settings.fence_after,
                primary=self.primary,
                known_nodes=frozenset(self._nodes),
                fenced=rec.fenced,
                last_role=rec.last_role,
                conflict_since=self._conflict_since,
                down_since=self._down_since,
                rejoin_not_before=self._rejoin_not_before,
                can_rejoin=self._node.rejoin_command is not None,
                fence_requested=self.fence_requested,
            )
        )
        self._report(decision)
        if decision.action is ActionKind.FENCE:
            await self._fence(decision)
        elif decision.action is ActionKind.REJOIN and decision.upstream is not None:
            await self._rejoin(decision.upstream)
        if changed:  # after acting: a fence never waits for a disk
            await self._save()
        self._ticked_at = self._clock()
        return decision

    def _report(self, decision: Decision) -> None:
        """Log a decision when its reason changes; tell systemd (READY=1 on the first)."""
        previous, self.decision = self.decision, decision
        if previous is None or previous.reason != decision.reason:
            level = "info" if decision.action is ActionKind.NONE else "warning"
            getattr(self._log, level)(
                decision.sentence, reason=f"AGENT_{decision.reason}", action=str(decision.action)
            )
        if previous is None:
            self._systemd.ready(decision.sentence)
        else:
            self._systemd.judged(decision.sentence)

    async def _save(self) -> None:
        """Write the record; a failure is logged, never fatal (what it records has happened,
        and a blank record on the next start is the cautious one)."""
        try:
            await asyncio.to_thread(write_json, self.state_path, asdict(self.record))
        except OSError as exc:
            self._log.error(
                f"cannot write the agent state file {self.state_path}: {exc}",
                reason="STATE_NOT_SAVED",
            )

    async def _fence(self, decision: Decision) -> None:
        budget = self._settings.fence_timeout
        started = self._clock()
        contact_age = None if self.contact_at is None else round(started - self.contact_at, 3)
        self._busy = (started, budget)
        try:
            if self._node.fence_command is not None:
                values = {"node": self.node, "region": self.region}
                argv = fill_argv(self._node.fence_command, values)
                await run_command(argv, budget, label=f"{self.node}: fence_command")
                how = "fence_command ran"
            else:
                assert self._data_dir is not None  # checked at construction
                async with asyncio.timeout(budget + EXTRA_BUDGET):
                    how = await asyncio.to_thread(hard_stop, self._data_dir, budget)
        except (OperationError, ValueError, TimeoutError) as exc:
            self._log.error(
                f"could not fence {self.node}: {exc or 'timed out'}; trying again next tick",
                reason="FENCE_FAILED",
                why=str(decision.reason),
            )
            return
        finally:
            self._busy = None
        took = self._clock() - started
        rec = self.record
        rec.fenced, rec.fenced_at, rec.fence_reason = True, self._wall(), str(decision.reason)
        self._log.warning(
            f"fenced {self.node} in {took:.2f}s ({how}): {decision.sentence}",
            reason=str(decision.reason),
            took=round(took, 3),
            contact_age=contact_age,
        )
        await self._save()

    async def _rejoin(self, upstream: str) -> None:
        if self._node.rejoin_command is None:  # decide() never asks then
            return
        up_region, up_node = self._nodes[upstream]
        host, port = _host_port(up_node)
        values = {
            "node": self.node,
            "region": self.region,
            "upstream_node": upstream,
            "upstream_region": up_region,
            "upstream_host": host,
            "upstream_port": str(port),
        }
        budget = self._settings.rejoin_timeout
        started = self._clock()
        self._busy = (started, budget)
        try:
            argv = fill_argv(self._node.rejoin_command, values)
            out = await run_command(argv, budget, label=f"{self.node}: rejoin_command")
        except (OperationError, ValueError) as exc:
            self._rejoin_failures += 1
            wait = logic.rejoin_backoff(self._rejoin_failures)
            self._rejoin_not_before = self._clock() + wait
            self._log.error(
                f"could not rejoin {self.node} to {upstream}: {exc}; again in {wait:g}s",
                reason="REJOIN_FAILED",
            )
            return
        finally:
            self._busy = None
        self._rejoin_failures, self._rejoin_not_before = 0, None
        rec = self.record
        rec.fenced, rec.last_role, rec.rejoined_at = False, LocalRole.REPLICA, self._wall()
        await self._save()
        first = next((ln for ln in out.splitlines() if ln.strip()), "")
        self._log.info(
            f"rejoined {self.node} as a replica of {upstream} in {self._clock() - started:.1f}s"
            + (f": {first.strip()}" if first else ""),
            reason="REJOINED",
        )


def check_agent_config(cfg: Config, node_name: str, data_dir: Path | None) -> None:
    """Refuse what would make the agent unable to keep its promise (UsageError / ConfigError)."""
    nodes = {n.name: n for _, n in cfg.all_nodes()}
    if node_name not in nodes:
        raise UsageError(f"no node named {node_name!r} in the configuration ({', '.join(nodes)})")
    coord = cfg.coordination
    if coord is None:
        raise ConfigError(
            "coordination", ["the node agent needs a coordination section (its quorum)"]
        )
    agent = cfg.agent
    if agent.fence_after <= agent.interval + coord.timeout:
        raise ConfigError(
            "agent",
            [
                f"fence_after: {agent.fence_after:g}s must exceed agent.interval plus "
                f"coordination.timeout ({agent.interval + coord.timeout:g}s), or a slow but "
                "healthy quorum would fence the primary"
            ],
        )
    if nodes[node_name].fence_command is None and data_dir is None:
        raise UsageError(
            f"node {node_name} has no fence_command: pass --data-dir so that the agent can stop "
            "PostgreSQL itself (standby.signal, then SIGKILL)"
        )


async def run_agent(
    cfg: Config,
    node_name: str,
    *,
    state_dir: Path,
    data_dir: Path | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the agent of ``node_name`` until ``stop`` is set or SIGTERM/SIGINT arrives."""
    check_agent_config(cfg, node_name, data_dir)
    assert cfg.coordination is not None
    stop = stop or asyncio.Event()
    coordinator = build_coordinator(cfg.coordination)
    with stop_on_signals(stop), contextlib.closing(SystemdNotifier.from_env()) as systemd:
        try:
            agent = NodeAgent(
                cfg,
                node_name,
                coordinator,
                state_dir=state_dir,
                data_dir=data_dir,
                notifier=systemd,
            )
            await agent.run(stop)
        finally:
            await coordinator.aclose()
