"""The sandbox's DNS stack, seen from :class:`~orchestrator.sandbox.cluster.Sandbox`: start and
stop the ``dnsstack`` process, seed the zones and the owned record through the providers' real
APIs, and describe it all in the orchestrator configuration::

    <state>/dns.json                         endpoints and ids, written by the running stack
    <state>/logs/dns.log                     the stack's output
    <state>/secrets/cloudflare.token         random API token (0600)
    <state>/secrets/aws_access_key_id        fake AWS keys ("testing"), for the config
    <state>/secrets/aws_secret_access_key

The stack runs as the invoking user (never the PostgreSQL user), detached in its own session,
with the state directory as its working directory and on its command line, so that it can be
found through ``/proc`` without trusting a PID file. Its ports are ``base_port + 10 .. + 15``
(Route53 on moto, Cloudflare, Google, then the name servers for Route53, Cloudflare, Google)
and ``base_port + 4`` (the notification receiver the generated config's channels point at).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from orchestrator.errors import SandboxError
from orchestrator.sandbox import procs
from orchestrator.sandbox.dnsstack import (
    GCP_PROJECT,
    PROVIDERS,
    info_path,
    statuspage_key_path,
    token_path,
)

ZONE = "helios.test."
RECORD = "db.helios.test."
RECORD_TTL = 60
GCP_ZONE = "helios-test"
PORT_OFFSET = 10
PORT_NAMES = (
    *("route53", "cloudflare", "gcloud", "ns-route53", "ns-cloudflare", "ns-gcloud"),
    "notify",
)
NOTIFY_OFFSET = 4
"""The notification receiver's port: ``base_port + 4`` (free in the sandbox's port block)."""
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CALL_TIMEOUT = 5.0
FAKE_AWS_KEY = "testing"
METADATA_BLACKHOLE = "127.0.0.1:9"  # google-auth must never reach for a real metadata server
MODULE = "orchestrator.sandbox.dnsstack"


def dns_ports(base_port: int) -> list[int]:
    """The stack's ports in :data:`PORT_NAMES` order."""
    return [base_port + PORT_OFFSET + i for i in range(6)] + [base_port + NOTIFY_OFFSET]


def no_metadata_server(env: dict[str, str] | os._Environ[str]) -> None:
    env.setdefault("GCE_METADATA_HOST", METADATA_BLACKHOLE)
    env.setdefault("GCE_METADATA_IP", METADATA_BLACKHOLE)


class SandboxDns:
    """The DNS stack of one sandbox state directory. Every method is safe to repeat."""

    def __init__(self, state_dir: Path, base_port: int) -> None:
        self.state_dir = state_dir
        self.ports = dns_ports(base_port)

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs" / "dns.log"

    @property
    def token_path(self) -> Path:
        return token_path(self.state_dir)

    @property
    def aws_key_paths(self) -> tuple[Path, Path]:
        secrets_dir = self.state_dir / "secrets"
        return secrets_dir / "aws_access_key_id", secrets_dir / "aws_secret_access_key"

    def ensure_secrets(self) -> None:
        """A random Cloudflare token and the fake AWS keys, each 0600 (kept when present)."""
        if not (self.token_path.is_file() and self.token_path.read_text().strip()):
            procs.write_private(self.token_path, secrets.token_urlsafe(32) + "\n")
        for path in self.aws_key_paths:
            if not path.is_file():
                procs.write_private(path, FAKE_AWS_KEY + "\n")
        notify = f"http://127.0.0.1:{self.ports[6]}"
        for name, value in {
            "statuspage.key": secrets.token_hex(16),
            "pagerduty.key": secrets.token_hex(16),  # 32 characters, like a routing key
        }.items():
            path = self.state_dir / "secrets" / name
            if not (path.is_file() and path.read_text().strip()):
                procs.write_private(path, value + "\n")
        # Webhook URLs are secrets (they carry the credential): referenced with file:.
        hook = secrets.token_hex(8)
        for name, url in {
            "slack.url": f"{notify}/slack/T0SANDBOX/B0SANDBOX/{hook}",
            "discord.url": f"{notify}/discord/1000/{hook}",
        }.items():
            procs.write_private(self.state_dir / "secrets" / name, url + "\n")

    def notifications_section(self, info: dict[str, Any]) -> dict[str, Any]:
        """The generated config's ``notifications``: every channel kind, on the receiver, routed
        to the plan's audiences (short intervals, so `make run` shows them)."""
        url = info["notify"]["url"]
        sec = self.state_dir / "secrets"

        def quick() -> dict[str, Any]:
            return {"timeout": "2s", "retry": {"attempts": 2, "initial_delay": "200ms"}}

        return {
            "monitoring_period": "30s",
            "channels": [
                {
                    "name": "slack",
                    "kind": "slack",
                    "webhook_url": f"file:{sec / 'slack.url'}",
                    "backup": "discord",
                    **quick(),
                },
                {
                    "name": "discord",
                    "kind": "discord",
                    "webhook_url": f"file:{sec / 'discord.url'}",
                    **quick(),
                },
                {
                    "name": "pagerduty",
                    "kind": "pagerduty",
                    "routing_key": f"file:{sec / 'pagerduty.key'}",
                    "url": f"{url}/pagerduty/v2/enqueue",
                    **quick(),
                },
                {
                    "name": "statuspage",
                    "kind": "statuspage",
                    "api_key": f"file:{statuspage_key_path(self.state_dir)}",
                    "page_id": "helios-sandbox",
                    "base_url": f"{url}/statuspage/v1",
                    **quick(),
                },
                {
                    "name": "executives",
                    "kind": "webhook",
                    "url": f"{url}/webhook/executives",
                    **quick(),
                },
            ],
            "audiences": [
                {"name": "bcp-team", "channels": ["slack", "pagerduty"]},
                {"name": "engineering", "channels": ["slack"], "update_interval": "10m"},
                {"name": "executives", "channels": ["executives"]},
                {
                    "name": "customers",
                    "channels": ["statuspage"],
                    "template": "customer",
                    "update_interval": "5m",
                },
            ],
        }

    # --- the process ----------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Live (non-zombie) dnsstack processes of this state directory."""
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            argv = [a.decode(errors="replace") for a in args]
            if MODULE not in argv or "--state-dir" not in argv:
                continue
            i = argv.index("--state-dir")
            ours = i + 1 < len(argv) and argv[i + 1] == str(self.state_dir)
            if ours and procs.proc_state(pid) not in (None, "Z", "X"):
                found.append(pid)
        return found

    def state(self) -> str:
        """``running``, ``hung`` (SIGSTOPped) or ``stopped``."""
        pids = self.pids()
        if not pids:
            return "stopped"
        return "hung" if all(procs.is_stopped(p) for p in pids) else "running"

    def check_ports_free(self) -> None:
        if self.pids():
            return
        for name, port in zip(PORT_NAMES, self.ports, strict=True):
            kind = socket.SOCK_DGRAM if name.startswith("ns-") else socket.SOCK_STREAM
            if not _bindable(port, kind):
                proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
                raise SandboxError(
                    f"{proto} port {port} (for the DNS stack's {name}) is already in use by "
                    "another process; stop it, or choose another base port or state dir"
                )

    def spawn(self) -> subprocess.Popen[bytes] | None:
        """Start the stack unless it runs (resuming it if hung); returns the new process."""
        running = self.pids()
        if running:
            for pid in running:
                procs.signal_pid(pid, signal.SIGCONT)
            return None
        self.check_ports_free()
        info_path(self.state_dir).unlink(missing_ok=True)
        env = dict(os.environ)
        no_metadata_server(env)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, "-m", MODULE, "--state-dir", str(self.state_dir)]
        argv += ["--ports", ",".join(map(str, self.ports)), "--cloudflare-zone", ZONE]
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=self.state_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.reap_in_background(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes] | None) -> dict[str, Any]:
        """Wait (bounded) until the stack wrote ``dns.json``; return its content."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            info = self.info()
            pids = [proc.pid] if proc is not None else self.pids()
            if info is not None and info.get("pid") in pids:
                return info
            if proc is not None and proc.poll() is not None:
                raise SandboxError(
                    f"the DNS stack exited during startup (exit {proc.returncode}); "
                    f"{procs.tail(self.log_path)}"
                )
            if proc is None and not pids:
                raise SandboxError(f"the DNS stack is not running; {procs.tail(self.log_path)}")
            if time.monotonic() >= deadline:
                self.stop()
                raise SandboxError(
                    f"the DNS stack was not ready within {READY_TIMEOUT:g}s; "
                    f"{procs.tail(self.log_path)}"
                )
            time.sleep(0.05)

    def info(self) -> dict[str, Any] | None:
        try:
            data = json.loads(info_path(self.state_dir).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the stack, SIGKILL it after ``timeout``; no-op when it is not running."""
        pids = self.pids()
        for pid in pids:
            procs.signal_pid(pid, signal.SIGCONT)
            procs.signal_pid(pid, signal.SIGTERM)
        for sig, wait in ((signal.SIGKILL, timeout), (None, 5.0)):
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
            left = self.pids()
            if not left:
                return
            if sig is None:
                raise SandboxError(f"DNS stack processes {left} survived SIGKILL")
            for pid in left:
                procs.signal_pid(pid, sig)

    # --- seeding through the real APIs ----------------------------------------------------

    def seed(self, info: dict[str, Any], target: str) -> dict[str, str]:
        """Create the zones and ``db.helios.test. A 60 target`` where absent; existing records
        are left alone (the orchestrator may have switched them). Returns the zone ids."""
        no_metadata_server(os.environ)
        return {
            "route53": self._seed_route53(info["route53"]["endpoint_url"], target),
            "cloudflare": self._seed_cloudflare(info["cloudflare"], target),
            "gcloud": self._seed_gcloud(info["gcloud"], target),
        }

    def _seed_route53(self, endpoint_url: str, target: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        from orchestrator.sandbox.standins.route53 import make_client

        key_id, secret = (p.read_text(encoding="utf-8").strip() for p in self.aws_key_paths)
        client = make_client(endpoint_url, CALL_TIMEOUT, key_id, secret)
        try:
            zones = client.list_hosted_zones_by_name(DNSName=ZONE, MaxItems="1")["HostedZones"]
            if zones and zones[0]["Name"] == ZONE:
                zone_id = str(zones[0]["Id"])
            else:
                ref = f"helios-sandbox-{uuid.uuid4()}"
                created = client.create_hosted_zone(Name=ZONE, CallerReference=ref)
                zone_id = str(created["HostedZone"]["Id"])
            zone_id = zone_id.rsplit("/", 1)[-1]
            sets = client.list_resource_record_sets(
                HostedZoneId=zone_id, StartRecordName=RECORD, StartRecordType="A", MaxItems="1"
            )["ResourceRecordSets"]
            if not any(s["Name"] == RECORD and s["Type"] == "A" for s in sets):
                rrset = {
                    "Name": RECORD,
                    "Type": "A",
                    "TTL": RECORD_TTL,
                    "ResourceRecords": [{"Value": target}],
                }
                client.change_resource_record_sets(
                    HostedZoneId=zone_id,
                    ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": rrset}]},
                )
            return zone_id
        except (BotoCoreError, ClientError) as exc:
            raise SandboxError(f"seeding Route53 at {endpoint_url} failed: {exc}") from None
        finally:
            client.close()

    def _seed_cloudflare(self, cf: dict[str, Any], target: str) -> str:
        import cloudflare

        zone_id = str(cf["zones"][ZONE.rstrip(".")])
        name = RECORD.rstrip(".")
        token = self.token_path.read_text(encoding="utf-8").strip()
        client = cloudflare.Cloudflare(
            api_token=token, base_url=cf["base_url"], max_retries=0, timeout=CALL_TIMEOUT
        )
        try:
            page = client.dns.records.list(zone_id=zone_id, name={"exact": name}, type="A")
            if page.result is None:
                raise SandboxError("Cloudflare stand-in answered success=false to a list")
            if not page.result:
                client.dns.records.create(
                    zone_id=zone_id,
                    name=name,
                    type="A",
                    content=target,
                    ttl=RECORD_TTL,
                    proxied=False,
                )
            return zone_id
        except cloudflare.APIError as exc:
            raise SandboxError(f"seeding Cloudflare at {cf['base_url']} failed: {exc}") from None
        finally:
            client.close()

    def _seed_gcloud(self, g: dict[str, Any], target: str) -> str:
        from google.api_core import exceptions as gexc
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import dns as gdns

        session = _BoundedSession(CALL_TIMEOUT)
        try:
            client = gdns.Client(
                project=g["project"],
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": g["api_endpoint"]},
                _http=session,
            )
            zone = client.zone(GCP_ZONE, ZONE)
            if not zone.exists():
                zone.create()
            have = any(
                r.name == RECORD and r.record_type == "A" for r in zone.list_resource_record_sets()
            )
            if not have:
                change = zone.changes()
                change.add_record_set(zone.resource_record_set(RECORD, "A", RECORD_TTL, [target]))
                change.create()
            return GCP_ZONE
        except (gexc.GoogleAPIError, requests.RequestException, ValueError) as exc:
            raise SandboxError(
                f"seeding Google Cloud DNS at {g['api_endpoint']} failed: {exc}"
            ) from None
        finally:
            session.close()

    # --- configuration --------------------------------------------------------------------

    def config_section(self, info: dict[str, Any], zones: dict[str, str]) -> dict[str, Any]:
        """The ``dns:`` section of the generated orchestrator.yaml."""
        timing = {"timeout": "5s", "propagation_timeout": "30s", "poll_interval": "500ms"}
        key_id, secret = self.aws_key_paths
        providers: list[dict[str, Any]] = [
            {
                "name": "route53",
                "kind": "route53",
                "primary": True,
                "zone_id": zones["route53"],
                "endpoint_url": info["route53"]["endpoint_url"],
                "region": "us-east-1",
                "access_key_id": f"file:{key_id}",
                "secret_access_key": f"file:{secret}",
                **timing,
            },
            {
                "name": "cloudflare",
                "kind": "cloudflare",
                "zone_id": zones["cloudflare"],
                "api_token": f"file:{self.token_path}",
                "base_url": info["cloudflare"]["base_url"],
                **timing,
            },
            {
                "name": "gcloud",
                "kind": "gcloud",
                "project": GCP_PROJECT,
                "managed_zone": zones["gcloud"],
                "api_endpoint": info["gcloud"]["api_endpoint"],
                "anonymous": True,
                **timing,
            },
        ]
        nameservers = [
            {
                "provider": name,
                "address": info["nameservers"][name]["address"],
                "port": info["nameservers"][name]["port"],
            }
            for name in PROVIDERS
        ]
        return {
            "records": [{"name": RECORD, "type": "A", "ttl": RECORD_TTL}],
            "providers": providers,
            "require": "all",
            "switch_timeout": "60s",
            "nameservers": nameservers,
        }


def query_a(address: str, port: int, name: str, timeout: float) -> list[str]:
    """Ask the authoritative server at ``address:port`` (recursion not desired) for ``name``'s
    A records; the sorted addresses. SandboxError when it does not answer within ``timeout``
    or answers with an error code."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    query = dns.message.make_query(name, "A")
    query.flags &= ~dns.flags.RD
    try:
        reply = dns.query.udp(query, address, port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError) as exc:
        raise SandboxError(
            f"the name server {address}:{port} did not answer for {name}: "
            f"{exc or type(exc).__name__}"
        ) from None
    if reply.rcode() != dns.rcode.NOERROR:
        raise SandboxError(
            f"the name server {address}:{port} answered {dns.rcode.to_text(reply.rcode())} "
            f"for {name}"
        )
    return sorted(
        str(rd.to_text())
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.A
        for rd in rrset
    )


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _BoundedSession(requests.Session):
    """google-cloud-dns passes ``timeout=60`` on every call and takes no timeout argument:
    cap every timeout at ``limit`` seconds."""

    def __init__(self, limit: float) -> None:
        super().__init__()
        self.limit = limit

    def request(self, *args: Any, **kwargs: Any) -> Any:
        given = kwargs.get("timeout")
        if isinstance(given, tuple):
            kwargs["timeout"] = tuple(
                self.limit if t is None else min(t, self.limit) for t in given
            )
        else:
            kwargs["timeout"] = self.limit if given is None else min(float(given), self.limit)
        return super().request(*args, **kwargs)
