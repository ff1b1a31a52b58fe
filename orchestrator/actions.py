"""The runbook actions: what ``fence``, ``promote``, ``switch_dns``... do, bound to the drivers.

Guarantees: every action is idempotent (the executor re-runs an interrupted step after a
restart), bounded by the driver's own timeouts (the executor adds the step timeout), raises
:class:`~orchestrator.errors.TransientError` when retrying may help and
:class:`~orchestrator.errors.PermanentError` when it cannot, and reports what it did in its
result mapping (journaled). Timeline events go to the incident through ``on_event``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestrator import dnsstate
from orchestrator.config import Config, Node
from orchestrator.dnsplan import SwitchOutcome
from orchestrator.dnsruntime import resolve_service, target_of_region
from orchestrator.dnsswitch import DnsSwitcher
from orchestrator.errors import OperationError, PermanentError, TransientError, UsageError
from orchestrator.executor import ActionFn
from orchestrator.providers.db_postgres import PostgresDriver

log = structlog.get_logger("helios.actions")
REPLAY_POLL = 0.05
OnEvent = Callable[[str, str], Awaitable[None]]
Notify = Callable[[str], Awaitable[list[dict[str, Any]]]]
AgentFence = Callable[[str], Awaitable[str]]
"""Fence a node through its node agent; returns once it is certainly fenced (see
:meth:`orchestrator.leadership.Elected.fence_via_agent`)."""


def slot_of(node: str) -> str:
    """The physical replication slot a node streams from on its upstream."""
    return node.replace("-", "_")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    region: str
    host: str
    port: int
    dns_target: str | None
    node: Node


def node_infos(cfg: Config) -> dict[str, NodeInfo]:
    out = {}
    for region, node in cfg.all_nodes():
        parts = conninfo_to_dict(node.dsn)
        host = str(parts.get("hostaddr") or parts.get("host") or "")
        out[node.name] = NodeInfo(
            node.name,
            region.name,
            host.split(",", maxsplit=1)[0],
            int(str(parts.get("port") or 5432)),
            node.dns_target,
            node,
        )
    return out


def make_drivers(cfg: Config) -> dict[str, PostgresDriver]:
    drivers = {}
    for region, node in cfg.all_nodes():
        drivers[node.name] = PostgresDriver(
            node.name,
            node.dsn,
            node.password.get_secret_value() if node.password else None,
            timeout=max(2.0, cfg.probes.timeout * 3),
            fence_command=node.fence_command,
            rejoin_command=node.rejoin_command,
            region=region.name,
        )
    return drivers


class Actions:
    """Builds the action table for one run."""

    def __init__(
        self,
        cfg: Config,
        drivers: Mapping[str, PostgresDriver],
        switcher: DnsSwitcher | None,
        on_event: OnEvent,
        notify: Notify | None = None,
        agent_fence: AgentFence | None = None,
    ) -> None:
        self._agent_fence = agent_fence
        self._cfg = cfg
        self._notify = notify
        self._drivers = drivers
        self._switcher = switcher
        self._infos = node_infos(cfg)
        self._event = on_event

    def table(self) -> dict[str, ActionFn]:
        return {
            "fence": self.fence,
            "promote": self.promote,
            "ensure_slots": self.ensure_slots,
            "repoint": self.repoint,
            "switch_dns": self.switch_dns,
            "verify_write": self.verify_write,
            "notify": self.notify,
            "stop_writes": self.stop_writes,
            "wait_replay": self.wait_replay,
            "rejoin": self.rejoin,
            "pause": self.pause,
            "approve": self.approve,
        }

    def _driver(self, node: object) -> PostgresDriver:
        if not isinstance(node, str) or node not in self._drivers:
            raise PermanentError(f"unknown node {node!r}")
        return self._drivers[node]

    async def fence(self, p: dict[str, Any]) -> Mapping[str, Any]:
        driver = self._driver(p["node"])
        if self._agent_fence is not None and self._infos[p["node"]].node.fence_command is None:
            how = await self._agent_fence(p["node"])  # its node agent: a hard fence
        else:
            how = await driver.fence("failover")
        await self._event("fenced", f"{p['node']}: {how}")
        return {"node": p["node"], "how": how}

    async def promote(self, p: dict[str, Any]) -> Mapping[str, Any]:
        timeline = await self._driver(p["node"]).promote()
        await self._event("promoted", f"{p['node']} on timeline {timeline}")
        return {"node": p["node"], "timeline": timeline}

    async def ensure_slots(self, p: dict[str, Any]) -> Mapping[str, Any]:
        created = await self._driver(p["node"]).ensure_slots(list(p["slots"] or []))
        return {"created": created}

    async def repoint(self, p: dict[str, Any]) -> Mapping[str, Any]:
        up = self._infos[str(p["upstream"])]
        done, failed = [], []
        for name in p["nodes"] or []:
            try:
                await self._driver(name).repoint(up.host, up.port, name, slot_of(name))
                done.append(name)
            except OperationError as exc:
                failed.append(f"{name}: {exc}")
        if failed and not done:
            raise TransientError("; ".join(failed))
        return {"repointed": done, "failed": failed}

    async def switch_dns(self, p: dict[str, Any]) -> Mapping[str, Any]:
        if self._switcher is None:
            return {"skipped": "no dns configured"}
        region = str(p["region"])
        try:
            target = target_of_region(self._cfg, region)
        except UsageError as exc:
            raise PermanentError(str(exc)) from None
        plan = await self._switcher.plan(region, target)
        report = await self._switcher.apply(plan, force=True)
        if any(r.ok for r in report.results):
            await asyncio.to_thread(
                dnsstate.save,
                self._cfg.state_dir,
                dnsstate.DesiredState(region, target, plan.desired, time.time()),
            )
        providers = {r.provider: r.ok for r in report.results}
        if report.outcome is SwitchOutcome.FAILED:
            raise PermanentError(f"DNS switch failed: {providers}")
        await self._event("dns_switched", f"{target} ({report.outcome.value}: {providers})")
        return {"outcome": report.outcome.value, "providers": providers, "target": target}

    async def verify_write(self, p: dict[str, Any]) -> Mapping[str, Any]:
        verify = self._cfg.failover.verify
        if verify is None:
            return {"skipped": "failover.verify is not configured"}
        region = str(p["region"])
        expected = {i.dns_target for i in self._infos.values() if i.region == region}
        address = await resolve_service(self._cfg)
        if address not in expected:
            raise TransientError(f"the service name still resolves to {address}")
        dsn = make_conninfo(verify.dsn, host=address, connect_timeout="2")
        password = verify.password.get_secret_value() if verify.password else None
        try:
            async with asyncio.timeout(5):
                conn = await psycopg.AsyncConnection.connect(
                    dsn, password=password, autocommit=True
                )
                async with conn:
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS helios.write_check"
                        " (id bigserial PRIMARY KEY, at double precision, region text)"
                    )
                    await conn.execute(
                        "INSERT INTO helios.write_check (at, region) VALUES (%s, %s)",
                        (time.time(), region),
                    )
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise TransientError(f"write through the service name failed: {exc}") from None
        await self._event("first_verified_write", f"through {address}")
        return {"address": address}

    async def notify(self, p: dict[str, Any]) -> Mapping[str, Any]:
        """Tell the incident's audiences where the run stands (the channels' failures are
        recorded on the incident, never raised: a notification never fails a failover)."""
        log.warning(f"notification: {p['event']}", reason="NOTIFY", notify_event=p["event"])
        if self._notify is None:
            return {"event": p["event"], "channels": []}
        records = await self._notify("status_changed")
        return {
            "event": p["event"],
            "delivered": sorted({r["channel"] for r in records if r.get("ok")}),
            "failed": sorted({r["channel"] for r in records if not r.get("ok")}),
        }

    async def stop_writes(self, p: dict[str, Any]) -> Mapping[str, Any]:
        driver = self._driver(p["node"])
        lsn = await driver.stop_writes()
        await self._event("writes_stopped", f"{p['node']} at LSN {lsn}")
        return {"node": p["node"], "lsn": lsn}

    async def wait_replay(self, p: dict[str, Any]) -> Mapping[str, Any]:
        """Poll every 50 ms until the candidate replayed the old primary's final position
        (the step's timeout bounds it): a promotion must not lose a single commit."""
        driver, target = self._driver(p["node"]), int(p["lsn"])
        while True:
            st = await driver.status()
            if not st.reachable:
                raise TransientError(f"{p['node']} unreachable: {st.error}")
            if st.replay_lsn is not None and st.replay_lsn >= target:
                return {"replayed": st.replay_lsn}
            await asyncio.sleep(REPLAY_POLL)

    async def rejoin(self, p: dict[str, Any]) -> Mapping[str, Any]:
        node, up = self._driver(p["node"]), self._infos[str(p["upstream"])]
        await node.fence("rejoin")
        await node.rejoin(up.name, up.region, up.host, up.port)
        return {"node": p["node"], "upstream": up.name}

    async def pause(self, p: dict[str, Any]) -> Mapping[str, Any]:
        await asyncio.sleep(float(p["seconds"]))
        return {}

    async def approve(self, p: dict[str, Any]) -> Mapping[str, Any]:
        return {}
