"""The sandbox's DNS stack as one process: Route53 (moto), the Cloudflare and Google Cloud DNS
stand-ins, and one authoritative DNS server per provider, all on fixed 127.0.0.1 ports::

    python -m orchestrator.sandbox.dnsstack --state-dir DIR \\
        --ports R53,CF,GCP,NS_R53,NS_CF,NS_GCP,NOTIFY [--cloudflare-zone helios.test]

It also runs the notification receiver (Slack, Discord, PagerDuty, Statuspage and webhook
endpoints that record what they receive; ``GET /_recorded`` lists it) on the NOTIFY port, with
the Statuspage API key read from ``DIR/secrets/statuspage.key``.

The Cloudflare API token is read from ``DIR/secrets/cloudflare.token`` (created by the caller).
When every server listens, ``DIR/dns.json`` is written (atomically) with this process's PID,
the endpoints, the Cloudflare zone ids and the token reference. SIGTERM or SIGINT stops every
server, removes ``dns.json`` and exits 0. Exit status 1: a server could not start; 2: bad
arguments or no token.

The state lives in memory only: a restart starts from empty providers (the sandbox re-seeds).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from orchestrator.sandbox.standins import (
    AuthoritativeServer,
    CloudflareStandIn,
    GoogleDnsStandIn,
    MotoRoute53,
    NotifyReceiver,
)

GCP_PROJECT = "helios-sandbox"
PROVIDERS = ("route53", "cloudflare", "gcloud")
HOST = "127.0.0.1"

log = logging.getLogger("orchestrator.sandbox.dnsstack")


class _Server(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


def token_path(state_dir: Path) -> Path:
    return state_dir / "secrets" / "cloudflare.token"


def statuspage_key_path(state_dir: Path) -> Path:
    return state_dir / "secrets" / "statuspage.key"


def info_path(state_dir: Path) -> Path:
    return state_dir / "dns.json"


def parse_ports(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected seven comma-separated ports"
        ) from None
    if len(ports) != 7 or not all(1024 <= p <= 65535 for p in ports) or len(set(ports)) != 7:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected seven distinct ports in 1024-65535 "
            "(R53,CF,GCP,NS_R53,NS_CF,NS_GCP,NOTIFY)"
        )
    return ports


class DnsStack:
    """The servers of one stack; :meth:`start` brings all up or none."""

    def __init__(
        self,
        state_dir: Path,
        ports: list[int],
        token: str,
        zones: list[str],
        statuspage_key: str | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.receiver = NotifyReceiver(statuspage_key, HOST, ports[6])
        self.route53 = MotoRoute53(HOST, ports[0])
        self.cloudflare = CloudflareStandIn(token, HOST, ports[1])
        self.gcloud = GoogleDnsStandIn(GCP_PROJECT, HOST, ports[2])
        self.nameservers = {
            "route53": AuthoritativeServer(self.route53.lookup, HOST, ports[3]),
            "cloudflare": AuthoritativeServer(self.cloudflare.lookup, HOST, ports[4]),
            "gcloud": AuthoritativeServer(self.gcloud.lookup, HOST, ports[5]),
        }
        self._zones = zones
        self._started: list[_Server] = []

    def start(self) -> None:
        servers: list[_Server] = [self.route53, self.cloudflare, self.gcloud]
        servers += list(self.nameservers.values())
        servers.append(self.receiver)
        try:
            for server in servers:
                server.start()
                self._started.append(server)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        while self._started:
            server = self._started.pop()
            try:
                server.stop()
            except Exception:  # keep stopping the others
                log.exception("stopping %s failed", type(server).__name__)

    def info(self) -> dict[str, Any]:
        zones = {z.rstrip(".").lower(): self.cloudflare.add_zone(z) for z in self._zones}
        return {
            "version": 1,
            "pid": os.getpid(),
            "route53": {"endpoint_url": self.route53.endpoint_url, "region": "us-east-1"},
            "cloudflare": {
                "base_url": self.cloudflare.base_url,
                "api_token": f"file:{token_path(self.state_dir)}",
                "zones": zones,
            },
            "gcloud": {"api_endpoint": self.gcloud.api_endpoint, "project": GCP_PROJECT},
            "nameservers": {
                name: {"address": HOST, "port": ns.port} for name, ns in self.nameservers.items()
            },
            "notify": {"url": self.receiver.url},
        }


def _write_info(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(path)


def _remove_info(path: Path) -> None:
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.sandbox.dnsstack")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--ports", type=parse_ports, required=True)
    parser.add_argument("--cloudflare-zone", action="append", default=[])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    state_dir: Path = args.state_dir.absolute()
    try:
        token = token_path(state_dir).read_text(encoding="utf-8").strip()
    except OSError as exc:
        log.error("cannot read the Cloudflare token: %s", exc)
        return 2
    if not token:
        log.error("the Cloudflare token file %s is empty", token_path(state_dir))
        return 2

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        sp_key = statuspage_key_path(state_dir).read_text(encoding="utf-8").strip() or None
    except OSError:
        sp_key = None
    stack = DnsStack(state_dir, args.ports, token, args.cloudflare_zone, sp_key)
    try:
        stack.start()
    except OSError as exc:
        log.error("cannot start the DNS stack: %s", exc)
        return 1
    try:
        info = stack.info()
        _write_info(info_path(state_dir), info)
        log.info("DNS stack ready (pid %d): %s", os.getpid(), json.dumps(info))
        while not stop.wait(0.5):
            pass
    finally:
        _remove_info(info_path(state_dir))
        stack.stop()
        log.info("DNS stack stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
