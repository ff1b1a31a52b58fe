"""Builds the DNS switcher from the config, runs the daemon's reconciler and resolves the
service name as a client would.

Guarantees: :func:`open_switcher` owns the providers and the worker threads their sync SDKs run
in, and releases both on exit; :func:`reconcile_forever` never raises for provider trouble (it
logs and counts it) and returns when ``stop`` is set; :func:`resolve_service` asks the
configured name servers directly (no cache in between), each bounded by its query timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import dns.exception
import structlog
from prometheus_client import CollectorRegistry

from orchestrator import dnsstate
from orchestrator.config import Config
from orchestrator.dnsswitch import DnsSwitcher, query_nameserver
from orchestrator.errors import HeliosError, PermanentError, TransientError, UsageError
from orchestrator.observability.dns_metrics import DnsMetrics
from orchestrator.providers.dns_factory import build_dns_provider

log = structlog.get_logger("helios.dns")


@contextlib.asynccontextmanager
async def open_switcher(
    cfg: Config, registry: CollectorRegistry | None = None
) -> AsyncIterator[DnsSwitcher]:
    """A switcher for ``cfg.dns``; raises UsageError when the config has no dns section."""
    if cfg.dns is None:
        raise UsageError("the configuration has no dns section")
    names = [p.name for p in cfg.dns.providers]
    executor = ThreadPoolExecutor(
        max_workers=max(4, 2 * len(names)), thread_name_prefix="helios-dns"
    )
    providers = {p.name: build_dns_provider(p, executor) for p in cfg.dns.providers}
    metrics = DnsMetrics(registry, names) if registry is not None else None
    switcher = DnsSwitcher(cfg.dns, providers, metrics=metrics)
    try:
        yield switcher
    finally:
        await switcher.aclose()
        executor.shutdown(wait=False, cancel_futures=True)


def target_of_region(cfg: Config, region: str) -> str:
    """The DNS target that serves ``region``: its first node's ``dns_target``."""
    for r in cfg.regions:
        if r.name == region:
            for n in r.nodes:
                if n.dns_target:
                    return n.dns_target
            raise UsageError(f"region {region} has no node with a dns_target")
    names = ", ".join(r.name for r in cfg.ordered_regions())
    raise UsageError(f"unknown region {region!r} (regions: {names})")


async def resolve_service(cfg: Config) -> str:
    """The address the service record (``failover.verify.record``, else the first owned record)
    resolves to, asked of each configured name server in turn (the first answer wins); with no
    name servers, the system resolver. PermanentError without a record to resolve;
    TransientError when no name server answers."""
    verify = cfg.failover.verify
    name = (verify.record if verify else None) or (cfg.dns.records[0].name if cfg.dns else None)
    if name is None:
        raise PermanentError("no service record to resolve (failover.verify.record)")
    servers = cfg.dns.nameservers if cfg.dns else []
    errors = []
    for ns in servers:
        try:
            values = await query_nameserver(ns.address, ns.port, name, "A")
        except (dns.exception.DNSException, OSError) as exc:
            errors.append(f"{ns.address}:{ns.port}: {type(exc).__name__}: {exc}")
            continue
        if values:
            return values[0]
    if servers:
        raise TransientError(f"cannot resolve {name}: {'; '.join(errors) or 'no answer'}")
    infos = await asyncio.to_thread(socket.getaddrinfo, name.rstrip("."), None)
    return str(infos[0][4][0])


async def reconcile_forever(switcher: DnsSwitcher, cfg: Config, stop: asyncio.Event) -> None:
    """Every ``dns.reconcile_interval``: re-apply the desired state where a provider drifted."""
    assert cfg.dns is not None
    interval = cfg.dns.reconcile_interval
    while not stop.is_set():
        try:
            desired = dnsstate.load(cfg.state_dir)
            if desired is None:
                await switcher.drift(None)  # keeps provider health fresh
            else:
                await switcher.reconcile(desired)
        except HeliosError as exc:
            log.error(f"DNS reconciliation failed: {exc}", reason="DNS_RECONCILE_ERROR")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()
