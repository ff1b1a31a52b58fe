"""Build the DNS provider adapter for one configured provider.

Construction does no network I/O. The adapters for sync SDKs (Route53, Google) run their calls
in ``executor`` when one is given (the caller then owns it and shuts it down after closing the
providers); with None each adapter creates and owns a small pool of its own. Cloudflare's SDK is
asynchronous and ignores the executor.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from orchestrator.config import (
    CloudflareProvider,
    DnsProviderConfig,
    GcloudProvider,
    Route53Provider,
)
from orchestrator.providers.dns import DnsProvider


def build_dns_provider(
    cfg: DnsProviderConfig, executor: ThreadPoolExecutor | None = None
) -> DnsProvider:
    """The adapter for ``cfg.kind``. SDK modules are imported only for the kinds in use."""
    match cfg:
        case Route53Provider():
            from orchestrator.providers.dns_route53 import Route53Dns

            return Route53Dns(cfg, executor)
        case CloudflareProvider():
            from orchestrator.providers.dns_cloudflare import CloudflareDns

            return CloudflareDns(cfg)
        case GcloudProvider():
            from orchestrator.providers.dns_gcloud import GcloudDns

            return GcloudDns(cfg, executor)
    raise TypeError(f"unknown DNS provider config {type(cfg).__name__}")
