"""Where the sandbox's regions live on the network: their listen addresses and, optionally, a
network namespace per region (for partition tests that cut a region off with ``ip netns``).

The default placement is the classic sandbox: the loopback addresses ``127.0.0.1/.2/.3`` in
the caller's own network namespace. A placement with namespaces runs every PostgreSQL program
that listens or connects over TCP (the postmaster, ``pg_basebackup``, ``pg_rewind``) through
``ip netns exec <namespace>`` and then ``setpriv`` to the PostgreSQL OS user, so the server of
a region lives in that region's namespace whoever starts it. The namespaces themselves (links,
addresses) belong to the caller; the sandbox never creates or deletes one. Unix sockets are not
bound to a network namespace, so the sandbox's own SQL (over each server's unix socket) works
from anywhere.

A placement is recorded in ``sandbox.json`` when the sandbox is created, so later commands on
the same state directory (``sandbox fence``, ``sandbox rejoin``, ...) place the servers the same
way. Namespaces need root (``ip netns exec``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import SandboxError

LOOPBACK_ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
"""Each region's loopback address in the default placement (in ``Sandbox.REGIONS`` order)."""


@dataclass(frozen=True)
class Placement:
    """Per region (in ``Sandbox.REGIONS`` order): the address its server listens on and the
    network namespace it runs in (None: the caller's). ``networks``: extra CIDRs ``pg_hba.conf``
    admits besides ``127.0.0.0/8`` (the namespaces' subnet)."""

    hosts: tuple[str, ...] = LOOPBACK_ADDRESSES
    netns: tuple[str | None, ...] = (None, None, None)
    networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.hosts) != 3 or len(self.netns) != 3:
            raise SandboxError("a placement names an address and a namespace for 3 regions")
        for host in self.hosts:
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise SandboxError(f"region address {host!r} is not an IPv4 address") from None
        if len(set(self.hosts)) != 3:
            raise SandboxError(f"region addresses must differ: {', '.join(self.hosts)}")
        for net in self.networks:
            try:
                ipaddress.IPv4Network(net)
            except ValueError:
                raise SandboxError(f"{net!r} is not an IPv4 network (CIDR)") from None
        for ns in self.netns:
            if ns is not None and (not ns or "/" in ns or ns.startswith(".")):
                raise SandboxError(f"{ns!r} is not a network namespace name")

    @classmethod
    def of(
        cls,
        hosts: Sequence[str],
        netns: Sequence[str | None] | None = None,
        networks: Sequence[str] = (),
    ) -> Placement:
        return cls(tuple(hosts), tuple(netns or (None, None, None)), tuple(networks))

    @property
    def uses_netns(self) -> bool:
        return any(ns is not None for ns in self.netns)

    def to_json(self) -> dict[str, Any]:
        return {
            "hosts": list(self.hosts),
            "netns": list(self.netns),
            "networks": list(self.networks),
        }

    @classmethod
    def from_json(cls, doc: object) -> Placement | None:
        """The recorded placement; None when absent or malformed (the default then applies)."""
        if not isinstance(doc, Mapping):
            return None
        try:
            return cls(
                tuple(str(h) for h in doc["hosts"]),
                tuple(None if n is None else str(n) for n in doc["netns"]),
                tuple(str(n) for n in doc.get("networks", ())),
            )
        except (KeyError, TypeError, SandboxError):
            return None

    def check_usable(self) -> None:
        """Namespaces need root and the ``ip`` and ``setpriv`` programs."""
        if not self.uses_netns:
            return
        if os.geteuid() != 0:
            raise SandboxError("a sandbox in network namespaces must run as root (ip netns exec)")
        for program in ("ip", "setpriv"):
            if shutil.which(program) is None:
                raise SandboxError(
                    f"{program} not found: network namespaces need iproute2 and util-linux"
                )


def netns_prefix(netns: str | None, uid: int | None, gid: int | None) -> list[str]:
    """The argv prefix that runs a program in ``netns`` (none: the caller's namespace) as
    ``uid``/``gid`` (None: unchanged) without supplementary groups. ``ip netns exec`` and
    ``setpriv`` both exec in place, so the program keeps the PID of the process started."""
    if netns is None:
        return []
    ip = shutil.which("ip") or "ip"
    prefix = [ip, "netns", "exec", netns]
    if uid is not None and gid is not None:
        setpriv = shutil.which("setpriv") or "setpriv"
        prefix += [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    return prefix
