"""Local HTTP stand-ins for the DNS providers' REST APIs, a tiny authoritative DNS server and
a moto wrapper for Route53: what the sandbox and the contract tests run against.

Everything binds to loopback only. Every server has ``start()``/``stop()`` (idempotent, joins its
threads) and a ``lookup(name, rtype)`` usable by :class:`AuthoritativeServer`.
"""

from orchestrator.sandbox.standins.cloudflare import CloudflareStandIn
from orchestrator.sandbox.standins.dnsserver import AuthoritativeServer, Lookup
from orchestrator.sandbox.standins.faults import Fault, FaultPlan, RequestRecord
from orchestrator.sandbox.standins.gcloud import GoogleDnsStandIn
from orchestrator.sandbox.standins.receiver import NotifyReceiver
from orchestrator.sandbox.standins.route53 import MotoRoute53

__all__ = [
    "AuthoritativeServer",
    "CloudflareStandIn",
    "Fault",
    "FaultPlan",
    "GoogleDnsStandIn",
    "Lookup",
    "MotoRoute53",
    "NotifyReceiver",
    "RequestRecord",
]
