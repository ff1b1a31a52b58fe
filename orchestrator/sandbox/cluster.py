"""The local three-region sandbox: a PostgreSQL primary (``us-east``) and two streaming
replicas (``us-west``, ``eu``) on loopback addresses, all under one state directory::

    <state>/data/<region>            data directories (PostgreSQL user, 0700)
    <state>/run/<region>             each server's unix socket (PostgreSQL user, 0700)
    <state>/logs/<region>.log        server output, plus initdb / pg_basebackup output
    <state>/secrets/helios.password  the helios role's password (invoking user, 0600)
    <state>/sandbox.json             ports, PIDs, OS user, DNS zone ids
    <state>/orchestrator.yaml        a generated orchestrator configuration
    <state>/dns.json, logs/dns.log   the DNS stack (see :mod:`orchestrator.sandbox.dns`)

Network layout: one service port for the whole sandbox, one loopback address per region.
Every postmaster listens on ``<its address>:<service port>`` and nowhere else::

    us-east  127.0.0.1:<base_port>    us-west  127.0.0.2:<base_port>    eu  127.0.0.3:<base_port>

so each region's address doubles as its ``dns_target``: whatever ``db.helios.test.`` resolves
to, ``<answer>:<base_port>`` is that region's server, and a client that resolves the name (see
:meth:`Sandbox.resolve_service`, :meth:`Sandbox.service_dsn`) reaches the primary the DNS
record points at. Probes, replication and pg_rewind use each region's own address
(:meth:`Sandbox.host`, :meth:`Sandbox.port`, :meth:`Sandbox.dsn`). The other ports keep their
offsets from ``base_port``: the daemon's metrics at +3 (by convention of the callers), the DNS
stack at +10..+15; +1 and +2 are no longer used. (PostgreSQL has one ``port`` per server, so a
common service port needs distinct addresses; Linux routes all of 127.0.0.0/8 to ``lo`` and
connections to 127.0.0.2/.3 leave from 127.0.0.1, which ``pg_hba.conf`` admits.)

A :class:`~orchestrator.sandbox.placement.Placement` given at creation (recorded in
``sandbox.json``) puts the regions elsewhere: other addresses, and optionally one network
namespace per region (the partition tests), in which case the servers, ``pg_basebackup`` and
``pg_rewind`` run through ``ip netns exec`` and ``up`` runs no DNS stack (its loopback
listeners would be out of the namespaces' reach).

When run as root, every PostgreSQL program runs as the ``postgres`` OS user. Postmasters are
started directly (``postgres -D``) as session leaders, so their PIDs are the real ones.

Fencing and rejoining (what the generated configuration's ``fence_command`` and
``rejoin_command`` run): :meth:`Sandbox.fence` SIGKILLs a region's whole server (hung or not)
and leaves ``standby.signal`` in its data directory, so that no later start brings it back as a
primary; :meth:`Sandbox.rejoin` rewinds a stopped region with ``pg_rewind`` from an upstream
region and starts it as a standby streaming from there through its replication slot.

Beside PostgreSQL, ``up`` runs the DNS stack (Route53 on moto, Cloudflare and Google Cloud DNS
stand-ins, one authoritative name server per provider, and a notification receiver for the
generated Slack/Discord/PagerDuty/Statuspage/webhook channels) as the invoking user on ports
``base_port + 10 .. + 15`` and ``base_port + 4``, and seeds ``db.helios.test. A 60`` to the
primary's address in all three providers; the generated configuration switches that record on
all three.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from orchestrator.config import load_config
from orchestrator.errors import ConfigError, SandboxError
from orchestrator.sandbox import procs
from orchestrator.sandbox.dns import RECORD, SandboxDns, dns_ports, query_a
from orchestrator.sandbox.pgbin import PgTools
from orchestrator.sandbox.placement import LOOPBACK_ADDRESSES, Placement

log = logging.getLogger(__name__)

DEFAULT_BASE_PORT = 55431
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
TOOL_TIMEOUT = 180.0
LOCK_TIMEOUT = 300.0
REWIND_TIMEOUT = 120.0
STREAM_TIMEOUT = 60.0
RESOLVE_TIMEOUT = 2.0
SERVICE_ADDRESSES = LOOPBACK_ADDRESSES
"""Each region's loopback address (in ``Sandbox.REGIONS`` order), also its ``dns_target``
(the default placement)."""


@dataclass(frozen=True)
class RegionStatus:
    region: str
    port: int
    pid: int | None
    state: str  # "running" | "stopped" | "hung" | "missing"
    role: str  # "primary" | "replica" (from standby.signal) | "unknown" when missing
    data_dir: Path
    host: str = ""  # the region's loopback address (port: the sandbox's service port)
    fenced: bool = False  # fenced by `sandbox fence` and not rejoined since


@dataclass(frozen=True)
class SandboxStatus:
    state_dir: Path
    config_path: Path
    regions: tuple[RegionStatus, ...]
    dns: str = "stopped"  # the DNS stack: "running" | "stopped" | "hung"


def _duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms}ms" if ms % 1000 else f"{ms // 1000}s"


class Sandbox:
    """See the module docstring. Every method is safe to repeat."""

    REGIONS = ("us-east", "us-west", "eu")

    def __init__(
        self,
        state_dir: Path,
        base_port: int | None = None,
        service: str = "helios-sandbox",
        metrics_port: int = 9187,
        interval: float = 1.0,
        timeout: float = 0.8,
        failure_threshold: int = 3,
        recovery_threshold: int = 3,
        placement: Placement | None = None,
    ) -> None:
        """``base_port=None`` means: the port recorded in ``sandbox.json``, else 55431;
        ``placement=None``: the one recorded there, else loopback addresses, no namespaces."""
        self.state_dir = Path(state_dir).expanduser().absolute()
        if base_port is not None:
            self._check_ports(base_port)
        if not 0 <= metrics_port <= 65535:
            raise SandboxError(f"metrics port {metrics_port} is not a TCP port")
        if not 0 < timeout < interval:
            raise SandboxError(
                f"probe timeout ({timeout:g}s) must be positive and below the interval "
                f"({interval:g}s)"
            )
        if failure_threshold < 1 or recovery_threshold < 1:
            raise SandboxError("failure and recovery thresholds must be at least 1")
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", service):
            raise SandboxError(f"service name {service!r}: use lower-case letters, digits, dashes")
        self._requested_port = base_port
        self._requested_placement = placement
        self.service = service
        self.metrics_port = metrics_port
        self.interval = interval
        self.timeout = timeout
        self.failure_threshold = failure_threshold
        self.recovery_threshold = recovery_threshold

    # --- paths and small accessors --------------------------------------------------------

    def _region(self, region: str) -> str:
        if region not in self.REGIONS:
            raise SandboxError(
                f"unknown region {region!r}; valid regions: {', '.join(self.REGIONS)}"
            )
        return region

    def data_dir(self, region: str) -> Path:
        return self.state_dir / "data" / self._region(region)

    def _log_path(self, region: str) -> Path:
        return self.state_dir / "logs" / f"{region}.log"

    @property
    def _run_dir(self) -> Path:
        return self.state_dir / "run"

    def _socket_dir(self, region: str) -> Path:
        """Per region: the servers share the port number, so they cannot share a socket dir."""
        return self._run_dir / self._region(region)

    @property
    def _secret_path(self) -> Path:
        return self.state_dir / "secrets" / "helios.password"

    @property
    def _meta_path(self) -> Path:
        return self.state_dir / "sandbox.json"

    def config_path(self) -> Path:
        return self.state_dir / "orchestrator.yaml"

    def _meta(self) -> dict[str, Any]:
        try:
            data = json.loads(self._meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def base_port(self) -> int:
        recorded = self._meta().get("base_port")
        if isinstance(recorded, int):
            return recorded
        return self._requested_port if self._requested_port is not None else DEFAULT_BASE_PORT

    @property
    def placement(self) -> Placement:
        """Where the regions live: as recorded in ``sandbox.json``, else as requested."""
        recorded = Placement.from_json(self._meta().get("placement"))
        return recorded or self._requested_placement or Placement()

    def _netns(self, region: str) -> str | None:
        return self.placement.netns[self.REGIONS.index(self._region(region))]

    def _tools(self, region: str, tools: PgTools) -> PgTools:
        """``tools`` running in ``region``'s network namespace (if it has one)."""
        return tools.in_netns(self._netns(region))

    @property
    def service_port(self) -> int:
        """The one TCP port every region listens on (each on its own address): ``base_port``."""
        return self.base_port

    def port(self, region: str) -> int:
        """The region's PostgreSQL port: the service port, the same for every region."""
        self._region(region)
        return self.service_port

    def host(self, region: str) -> str:
        """The region's own address (loopback by default): PostgreSQL listens on
        ``host:port`` only."""
        return self.placement.hosts[self.REGIONS.index(self._region(region))]

    def dsn(self, region: str, dbname: str = "postgres") -> str:
        return make_conninfo(
            "",
            host=self.host(region),
            port=self.port(region),
            dbname=dbname,
            user="helios",
            connect_timeout=2,
        )

    def resolve_service(self) -> str:
        """Ask the sandbox's Route53 authoritative name server (from the generated config's
        ``dns.nameservers``) for ``db.helios.test. A``; the one address it serves. libpq cannot
        resolve the stand-in zone itself, hence this. Bounded (about 2 s); SandboxError when the
        DNS stack does not answer or serves no single address."""
        try:
            cfg = load_config(self.config_path())
        except ConfigError as exc:
            raise SandboxError(f"no usable sandbox config ({exc}); run `sandbox up`") from None
        nameservers = cfg.dns.nameservers if cfg.dns else []
        servers = [ns for ns in nameservers if ns.provider == "route53"]
        if not servers:
            raise SandboxError(f"{self.config_path()} names no route53 name server")
        values = query_a(servers[0].address, servers[0].port, RECORD, RESOLVE_TIMEOUT)
        if len(values) != 1:
            raise SandboxError(f"{RECORD} A: expected one address, the name server gave {values}")
        return values[0]

    def service_dsn(self, dbname: str = "postgres") -> str:
        """A DSN to the service: the address ``db.helios.test.`` resolves to now (see
        :meth:`resolve_service`) on the service port, as the ``helios`` user."""
        return make_conninfo(
            "",
            host=self.resolve_service(),
            port=self.service_port,
            dbname=dbname,
            user="helios",
            connect_timeout=2,
        )

    def password(self) -> str:
        try:
            return self._secret_path.read_text(encoding="utf-8").strip()
        except OSError:
            raise SandboxError(
                f"no helios password at {self._secret_path}; run `orchestrator sandbox up` first"
            ) from None

    def postmaster_pid(self, region: str) -> int | None:
        return procs.postmaster_pid(self.data_dir(region))

    def dns_target(self, region: str) -> str:
        """The address the owned DNS record points at while ``region`` is primary: the
        region's own address, on which its server listens on the service port."""
        return self.host(region)

    def slot_name(self, region: str) -> str:
        """The physical replication slot ``region`` streams through on its upstream."""
        return self._region(region).replace("-", "_")

    @property
    def _dns(self) -> SandboxDns:
        return SandboxDns(self.state_dir, self.base_port)

    def _upstream_conninfo(self, region: str, upstream: str) -> str:
        """``primary_conninfo`` for ``region`` streaming from ``upstream`` (trust auth)."""
        return make_conninfo(
            "",
            host=self.host(upstream),
            port=self.port(upstream),
            user="replicator",
            application_name=region,
        )

    def _fenced(self) -> list[str]:
        fenced = self._meta().get("fenced")
        return [r for r in self.REGIONS if isinstance(fenced, list) and r in fenced]

    def _set_fenced(self, region: str, fenced: bool) -> None:
        meta = self._meta()
        if not meta:
            return
        now = set(self._fenced()) | {region} if fenced else set(self._fenced()) - {region}
        meta["fenced"] = [r for r in self.REGIONS if r in now]
        procs.write_private(self._meta_path, json.dumps(meta, indent=2) + "\n", 0o644)

    def _exists(self, region: str) -> bool:
        return (self.data_dir(region) / "PG_VERSION").is_file()

    def _is_replica(self, region: str) -> bool:
        return (self.data_dir(region) / "standby.signal").exists()

    # --- status ---------------------------------------------------------------------------

    def status(self) -> SandboxStatus:
        regions = tuple(
            RegionStatus(
                region=r,
                port=self.port(r),
                pid=self.postmaster_pid(r),
                state=self._state(r),
                role=("replica" if self._is_replica(r) else "primary")
                if self._exists(r)
                else "unknown",
                data_dir=self.data_dir(r),
                host=self.host(r),
                fenced=r in self._fenced(),
            )
            for r in self.REGIONS
        )
        return SandboxStatus(self.state_dir, self.config_path(), regions, self._dns.state())

    def _state(self, region: str) -> str:
        if not self._exists(region):
            return "missing"
        pid = self.postmaster_pid(region)
        if pid is None:
            return "stopped"
        return "hung" if procs.is_stopped(pid) else "running"

    # --- environment checks ---------------------------------------------------------------

    @staticmethod
    def _check_ports(base_port: int) -> None:
        # base+1 and base+2 (the old per-region ports) stay in the block: never near 5432.
        ports = [*range(base_port, base_port + 3), *dns_ports(base_port)]
        if base_port < 1024 or max(ports) > 65535:
            raise SandboxError(
                f"base port {base_port}: the sandbox's ports (base+0..2, base being the "
                "PostgreSQL service port) and the DNS stack's (base+4, base+10..15) must lie in "
                "1024-65535"
            )
        if 5432 in ports:
            raise SandboxError(f"base port {base_port} would use port 5432; pick another")

    def _check_traversable(self, run_as: procs.RunAs) -> None:
        """The PostgreSQL user must be able to walk down to the data and socket dirs."""
        for path in [self.state_dir, *self.state_dir.parents]:
            if path.exists() and not run_as.can_traverse(path):
                raise SandboxError(
                    f"the PostgreSQL OS user {run_as.name!r} cannot enter {path} (needed to "
                    f"reach {self.state_dir}); choose a different --state-dir, e.g. under /tmp"
                )

    def _check_port_free(self, region: str) -> None:
        """A region that is not running must find its address and port free (not checked for
        a region in a network namespace: its address is not bindable from here)."""
        if self._netns(region) is not None:
            return
        port, host = self.port(region), self.host(region)
        if self._state(region) in ("missing", "stopped") and procs.port_in_use(port, host):
            raise SandboxError(
                f"port {port} on {host} (for region {region}) is already in use by another "
                "process; stop it, or choose another base port or state dir"
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        """Serialise mutating commands; yields False (no lock) if the state dir is absent."""
        if not self.state_dir.is_dir():
            yield False
            return
        with procs.file_lock(self.state_dir / ".lock", LOCK_TIMEOUT, f"sandbox {self.state_dir}"):
            yield True

    # --- files ----------------------------------------------------------------------------

    def _save_meta(self, tools: PgTools, **extra: Any) -> None:
        meta = self._meta()
        meta.update(
            version=1,
            base_port=self.base_port,
            ports={r: self.port(r) for r in self.REGIONS},
            hosts={r: self.host(r) for r in self.REGIONS},
            placement=self.placement.to_json(),
            pids={r: self.postmaster_pid(r) for r in self.REGIONS},
            user=tools.run_as.name,
            uid=tools.run_as.uid,
            bindir=str(tools.bin.bindir),
            **extra,
        )
        procs.write_private(self._meta_path, json.dumps(meta, indent=2) + "\n", 0o644)

    def _ensure_password(self) -> bool:
        """Create the secrets file if needed; True if a new password was generated."""
        if self._secret_path.is_file() and self._secret_path.read_text(encoding="utf-8").strip():
            return False
        procs.write_private(self._secret_path, secrets.token_urlsafe(24) + "\n")
        return True

    def _write_orchestrator_config(self, dns: dict[str, Any] | None = None) -> None:
        regions = [
            {
                "name": region,
                "priority": i + 1,
                "nodes": [
                    {
                        "name": f"{region}-1",
                        "driver": "postgres",
                        "dsn": self.dsn(region),
                        "password": f"file:{self._secret_path}",
                        "dns_target": self.dns_target(region),
                        "fence_command": self._command("fence", region),
                        "rejoin_command": self._command(
                            "rejoin", region, "--upstream", "{upstream_region}"
                        ),
                    }
                ],
            }
            for i, region in enumerate(self.REGIONS)
        ]
        doc = {
            "service": self.service,
            "objectives": {"rto": "300s", "rpo": "60s"},
            "regions": regions,
            "probes": {
                "interval": _duration(self.interval),
                "timeout": _duration(self.timeout),
                "failure_threshold": self.failure_threshold,
                "recovery_threshold": self.recovery_threshold,
            },
            "listen": {"address": "127.0.0.1", "port": self.metrics_port},
            "state_dir": str(self.state_dir / "orchestrator"),
            # A failover drill fails the primary as a crash would: SIGKILL of its postmaster.
            "drill": {
                "kind": "switchover",
                "failback": True,
                "failure_command": self._command("kill", "{region}"),
                "write_load": {"rate": 20},
                "smoke_checks": [
                    {
                        "name": "catalog-readable",
                        "kind": "sql",
                        "query": "SELECT count(*) >= 0 FROM pg_catalog.pg_class",
                        "expect": "true",
                    }
                ],
                "settle": "60s",
                "max_duration": "15m",
            },
        }
        if dns is not None:
            doc["dns"] = dns
            info = self._dns.info()
            if info is not None and "notify" in info:
                doc["notifications"] = self._dns.notifications_section(info)
            # A failover proves itself with a write through the service name: resolve
            # db.helios.test through the sandbox's name servers, connect to <address>:S.
            doc["failover"] = {
                "verify": {
                    "dsn": f"port={self.service_port} dbname=postgres user=helios "
                    "connect_timeout=2",
                    "password": f"file:{self._secret_path}",
                }
            }
        text = "# Generated by `orchestrator sandbox up`; rewritten on every `up`.\n"
        text += yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
        procs.write_private(self.config_path(), text, 0o644)
        try:
            load_config(self.config_path())
        except ConfigError as exc:
            raise SandboxError(f"generated config is invalid: {exc}") from None

    def _command(self, action: str, region: str, *template: str) -> list[str]:
        """``python -m orchestrator sandbox ACTION REGION ... --state-dir DIR`` as an argv
        template: the literal parts have their braces doubled (the driver runs
        ``str.format_map`` on every item), ``template`` items are kept as they are."""

        def lit(text: str) -> str:
            return text.replace("{", "{{").replace("}", "}}")

        argv = [lit(sys.executable), "-m", "orchestrator", "sandbox", action, region]
        return [*argv, *template, "--state-dir", lit(str(self.state_dir))]

    # --- SQL over the unix socket ---------------------------------------------------------

    def _admin(self, region: str) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=str(self._socket_dir(region)),
            port=self.port(region),
            user="postgres",
            dbname="postgres",
            connect_timeout=5,
            autocommit=True,
        )

    def _bootstrap_roles(self, region: str) -> None:
        with self._admin(region) as conn:
            for role, attrs in (("helios", "LOGIN SUPERUSER"), ("replicator", "LOGIN REPLICATION")):
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if exists.fetchone() is None:
                    conn.execute(sql.SQL("CREATE ROLE {} " + attrs).format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("ALTER ROLE helios WITH LOGIN SUPERUSER PASSWORD {}").format(
                    sql.Literal(self.password())
                )
            )

    # --- creating data directories --------------------------------------------------------

    def _staging(self, region: str, tools: PgTools) -> Path:
        tmp = self.data_dir(region).with_name(f"{region}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        procs.make_dir(tmp, 0o700, tools.run_as)
        return tmp

    def _configure(self, region: str, data_dir: Path, tools: PgTools) -> None:
        procs.make_dir(self._socket_dir(region), 0o700, tools.run_as)
        tools.configure(
            data_dir,
            region,
            self.host(region),
            self.port(region),
            self._socket_dir(region),
            self.placement.networks,
        )

    def _init_primary(self, region: str, tools: PgTools) -> None:
        log.info("initdb %s", region)
        tmp = self._staging(region, tools)
        tools.initdb(tmp, self._log_path(region), TOOL_TIMEOUT)
        self._configure(region, tmp, tools)
        self._install(tmp, region)

    def _install(self, staged: Path, region: str) -> None:
        target = self.data_dir(region)
        if target.exists():
            try:
                target.rmdir()  # only an empty leftover directory may be replaced
            except OSError:
                raise SandboxError(
                    f"{target} exists but is not a PostgreSQL data directory; remove it"
                ) from None
        staged.rename(target)

    def _clone(self, regions: list[str], source: str, tools: PgTools) -> None:
        """pg_basebackup ``regions`` from ``source`` in parallel, through staging dirs."""
        slots = {r: self.slot_name(r) for r in regions}
        upstream = {r: self._upstream_conninfo(r, source) for r in regions}
        with self._admin(source) as conn:  # a slot left by an interrupted clone blocks -C
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = ANY(%s) AND NOT active",
                (list(slots.values()),),
            )
        running: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        try:
            for r in regions:
                log.info("pg_basebackup %s from %s", r, source)
                tmp = self._staging(r, tools)
                proc = self._tools(r, tools).basebackup(
                    upstream[r], tmp, slots[r], self._log_path(r)
                )
                running.append((r, tmp, proc))
            deadline = time.monotonic() + TOOL_TIMEOUT
            for r, _tmp, proc in running:
                left = max(1.0, deadline - time.monotonic())
                tools.finish(proc, f"pg_basebackup for {r}", self._log_path(r), left)
        finally:
            for _r, _tmp, proc in running:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
        for r, tmp, _proc in running:
            self._configure(r, tmp, tools)
            tools.set_upstream(tmp, upstream[r], slots[r])
            self._install(tmp, r)

    # --- starting and stopping ------------------------------------------------------------

    def _resume(self, region: str) -> None:
        data_dir = self.data_dir(region)
        pids = procs.server_processes(data_dir)
        pid = procs.postmaster_pid(data_dir)
        for p in sorted(pids, key=lambda p: p == pid):  # the postmaster last
            procs.signal_pid(p, signal.SIGCONT)

    def _spawn(self, region: str, tools: PgTools) -> subprocess.Popen[bytes] | None:
        """Start a region unless it runs already (resuming it if hung)."""
        data_dir = self.data_dir(region)
        if not self._exists(region):
            raise SandboxError(
                f"region {region} has no data directory in {self.state_dir}; "
                "run `orchestrator sandbox up`"
            )
        if procs.postmaster_pid(data_dir) is not None:
            self._resume(region)
            return None
        procs.kill_all(data_dir)  # leftovers of a killed postmaster still hold shared memory
        port = self.port(region)
        self._check_port_free(region)
        self._configure(region, data_dir, tools)
        procs.clear_stale_locks(data_dir, self._socket_dir(region) / f".s.PGSQL.{port}.lock")
        log.info("starting %s on %s:%d", region, self.host(region), port)
        return self._tools(region, tools).postmaster(data_dir, self._log_path(region))

    def _wait_ready(self, region: str, proc: subprocess.Popen[bytes]) -> None:
        data_dir = self.data_dir(region)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            lines = procs.read_pidfile(data_dir)
            if (
                len(lines) >= 8
                and lines[0].strip() == str(proc.pid)
                and (lines[7].strip() == "ready")
            ):
                return
            if proc.poll() is not None:
                raise SandboxError(
                    f"PostgreSQL for {region} exited during startup (exit {proc.returncode}); "
                    f"{procs.tail(self._log_path(region))}"
                )
            if time.monotonic() >= deadline:
                raise SandboxError(
                    f"PostgreSQL for {region} was not ready within {READY_TIMEOUT:g}s; "
                    f"{procs.tail(self._log_path(region))}"
                )
            time.sleep(0.05)

    def _start(self, regions: list[str], tools: PgTools) -> None:
        """Start ``regions``: primaries first, then replicas, each group in parallel."""
        for group in (
            [r for r in regions if not self._is_replica(r)],
            [r for r in regions if self._is_replica(r)],
        ):
            started = [(r, self._spawn(r, tools)) for r in group]
            for region, proc in started:
                if proc is not None:
                    self._wait_ready(region, proc)

    def _stop(self, regions: list[str], timeout: float = STOP_TIMEOUT) -> None:
        """Fast shutdown of ``regions`` together; SIGKILL what is left after ``timeout``."""
        pids: dict[str, int] = {}
        for region in regions:
            pid = self.postmaster_pid(region)
            if pid is not None:
                self._resume(region)
                procs.signal_pid(pid, signal.SIGINT)
                pids[region] = pid
        deadline = time.monotonic() + timeout
        for region, pid in pids.items():
            left = procs.wait_gone([pid], self.data_dir(region), deadline - time.monotonic())
            if left:
                log.warning("%s did not stop within %gs; killing it", region, timeout)
        for region in regions:
            if self.data_dir(region).is_dir():
                procs.kill_all(self.data_dir(region))

    def _running_primary(self, purpose: str) -> str:
        primaries = [r for r in self.REGIONS if self._exists(r) and not self._is_replica(r)]
        running = [r for r in primaries if self._state(r) == "running"]
        if len(running) != 1:
            raise SandboxError(
                f"cannot {purpose}: need exactly one running primary, found "
                f"{', '.join(running) or 'none'} "
                f"(primaries on disk: {', '.join(primaries) or 'none'})"
            )
        return running[0]

    # --- public commands ------------------------------------------------------------------

    def up(self) -> SandboxStatus:
        """Create what is missing, start what is stopped, resume what is hung."""
        tools = PgTools.resolve()
        self._check_traversable(tools.run_as)
        placed = Placement.from_json(self._meta().get("placement"))
        if placed and self._requested_placement not in (None, placed):
            raise SandboxError(
                f"{self.state_dir} was created with another placement ({placed.to_json()}); "
                "use another --state-dir, or `sandbox down --purge` first"
            )
        self.placement.check_usable()
        with_dns = not self.placement.uses_netns
        recorded = self._meta().get("base_port")
        if recorded is not None and self._requested_port not in (None, recorded):
            raise SandboxError(
                f"{self.state_dir} was created with base port {recorded}; use that port, or "
                "another --state-dir, or `sandbox down --purge` first"
            )
        self._check_ports(self.base_port)
        socket_path = self._socket_dir("us-west") / f".s.PGSQL.{self.base_port}"  # the longest
        if len(str(socket_path)) > 107:
            raise SandboxError(f"state dir path too long for a unix socket: {socket_path}")
        for region in self.REGIONS:
            self._check_port_free(region)
        if with_dns:
            self._dns.check_ports_free()
        procs.make_dir(self.state_dir, 0o755)
        self._check_traversable(tools.run_as)
        with self._locked():
            for name in ("logs", "orchestrator", "data"):
                procs.make_dir(self.state_dir / name, 0o755)
            procs.make_dir(self.state_dir / "secrets", 0o700)
            procs.make_dir(self._run_dir, 0o700, tools.run_as)
            new_password = self._ensure_password()
            self._save_meta(tools)
            self._dns.ensure_secrets()
            # The DNS stack starts in the background while PostgreSQL comes up.
            dns_proc = self._dns.spawn() if with_dns else None
            if not any(self._exists(r) for r in self.REGIONS):
                self._init_primary(self.REGIONS[0], tools)
                self._save_meta(tools, bootstrapped=False)
            self._start([r for r in self.REGIONS if self._exists(r)], tools)
            if new_password or not self._meta().get("bootstrapped"):
                self._bootstrap_roles(self._running_primary("create the sandbox roles"))
                self._save_meta(tools, bootstrapped=True)
            missing = [r for r in self.REGIONS if not self._exists(r)]
            if missing:
                self._clone(missing, self._running_primary(f"create {', '.join(missing)}"), tools)
                self._start(missing, tools)
            dns = self._up_dns(dns_proc) if with_dns else None
            self._write_orchestrator_config(dns)
            self._save_meta(tools)
        return self.status()

    def _up_dns(self, proc: subprocess.Popen[bytes] | None) -> dict[str, Any]:
        """Wait for the DNS stack, seed it (idempotently), record it; the config section."""
        info = self._dns.wait_ready(proc)
        primaries = [r for r in self.REGIONS if self._exists(r) and not self._is_replica(r)]
        target = self.dns_target(primaries[0] if len(primaries) == 1 else self.REGIONS[0])
        zones = self._dns.seed(info, target)
        meta = self._meta()
        meta["dns"] = {
            "pid": info["pid"],
            "ports": dict(zip(("route53", "cloudflare", "gcloud"), self._dns.ports, strict=False)),
            "nameserver_ports": {k: v["port"] for k, v in info["nameservers"].items()},
            "zones": zones,
        }
        procs.write_private(self._meta_path, json.dumps(meta, indent=2) + "\n", 0o644)
        return self._dns.config_section(info, zones)

    def down(self) -> SandboxStatus:
        """Fast shutdown of every region together and of the DNS stack (SIGKILL after a
        bound); removes nothing."""
        with self._locked() as locked:
            if locked:
                self._stop(list(self.REGIONS))
                self._dns.stop()
                self._refresh_meta()
        return self.status()

    def destroy(self) -> None:
        """:meth:`down`, then delete the state directory (only if it looks like a sandbox)."""
        if not self.state_dir.exists():
            return
        with self._locked():
            self._stop(list(self.REGIONS))
            self._dns.stop()
            names = {p.name for p in self.state_dir.iterdir()} - {".lock"}
            if names and "sandbox.json" not in names and "data" not in names:
                raise SandboxError(
                    f"refusing to delete {self.state_dir}: it does not look like a sandbox"
                )
            shutil.rmtree(self.state_dir)

    def kill(self, region: str) -> None:
        """SIGKILL the region's postmaster only (a crash); no-op if it is not running."""
        data_dir = self.data_dir(region)
        with self._locked():
            pid = procs.postmaster_pid(data_dir)
            if pid is None:
                log.info("%s is not running; nothing to kill", region)
                return
            procs.signal_pid(pid, signal.SIGKILL)
            if procs.wait_gone([pid], data_dir, 10.0):
                raise SandboxError(f"postmaster {pid} of {region} survived SIGKILL")
            self._refresh_meta()

    def stop(self, region: str) -> None:
        """Clean fast shutdown of one region; no-op if it is not running."""
        self._region(region)
        with self._locked():
            self._stop([region])
            self._refresh_meta()

    def start(self, region: str) -> None:
        """Start one existing region (after stop or kill); resumes it if hung."""
        self._region(region)
        tools = PgTools.resolve()
        with self._locked():
            self._start([region], tools)
            self._refresh_meta()

    def fence(self, region: str) -> None:
        """Make sure ``region`` serves no writes, now or after any later start.

        Writes ``standby.signal`` into its data directory first (so even a failed kill cannot
        leave a server that would come back as a primary), then SIGCONTs and SIGKILLs every
        process of the server, a hung one included, and records the region as fenced in
        ``sandbox.json``. A later plain ``start`` brings it up as a standby (read-only, on its
        old ``primary_conninfo`` if any); :meth:`rejoin` makes it a streaming replica again.
        Idempotent; fencing a stopped region only writes the signal file.
        """
        data_dir = self.data_dir(region)
        if not self._exists(region):
            raise SandboxError(f"region {region} has no data directory in {self.state_dir}")
        run_as = procs.RunAs.resolve()
        with self._locked():
            procs.write_private(data_dir / "standby.signal", "", 0o600, run_as)
            procs.kill_all(data_dir)
            self._set_fenced(region, True)
            self._refresh_meta()
        log.info("fenced %s", region)

    def rejoin(self, region: str, upstream: str) -> str:
        """Turn ``region`` (stopped, or a running standby) into a standby streaming from the
        running ``upstream``; returns "rewound" or "no rewind required".

        Steps: stop ``region`` if it runs as a standby (fast shutdown; SandboxError if it runs
        as a primary or is hung: fence it first); CHECKPOINT on the upstream (a freshly
        promoted server's control file names its new timeline only after one; pg_rewind reads
        it); create ``region``'s physical slot there if missing; ``pg_rewind`` the data
        directory from the upstream as the ``helios`` superuser (it discards whatever
        ``region`` wrote after the timelines forked, and first runs crash recovery when the
        server was killed; "no rewind required" is fine); write ``standby.signal`` and
        ``primary_conninfo`` (``application_name=<region>``) plus ``primary_slot_name`` into
        ``postgresql.auto.conf``; start it; wait until its WAL receiver streams (bounded by
        ``STREAM_TIMEOUT``). ``standby.signal`` is absent only while pg_rewind runs (its
        single-user crash recovery refuses standby mode), under the sandbox lock, with the
        server down; it is written back even when pg_rewind fails.
        """
        data_dir = self.data_dir(region)
        self._region(upstream)
        if region == upstream:
            raise SandboxError(f"{region} cannot rejoin itself")
        if not self._exists(region):
            raise SandboxError(f"region {region} has no data directory in {self.state_dir}")
        tools = PgTools.resolve()
        with self._locked():
            if self._state(upstream) != "running":
                raise SandboxError(f"cannot rejoin {region}: upstream {upstream} is not running")
            if self.postmaster_pid(region) is not None:
                self._stop_standby(region)
            procs.kill_all(data_dir)  # children of a killed postmaster still hold shared memory
            procs.clear_stale_locks(
                data_dir, self._socket_dir(region) / f".s.PGSQL.{self.port(region)}.lock"
            )
            slot = self.slot_name(region)
            with self._admin(upstream) as conn:
                conn.execute("CHECKPOINT")
                conn.execute(
                    "SELECT pg_create_physical_replication_slot(%(s)s) WHERE NOT EXISTS "
                    "(SELECT 1 FROM pg_replication_slots WHERE slot_name = %(s)s)",
                    {"s": slot},
                )
            signal_file = data_dir / "standby.signal"
            (data_dir / "recovery.signal").unlink(missing_ok=True)
            signal_file.unlink(missing_ok=True)
            try:
                source = make_conninfo(
                    "",
                    host=self.host(upstream),
                    port=self.port(upstream),
                    user="helios",
                    dbname="postgres",
                    connect_timeout=5,
                )
                out = self._tools(region, tools).rewind(
                    data_dir, source, self.password(), self._log_path(region), REWIND_TIMEOUT
                )
            finally:
                tools.write(signal_file, "")
            tools.set_upstream(data_dir, self._upstream_conninfo(region, upstream), slot)
            proc = self._spawn(region, tools)  # rewrites the settings pg_rewind copied over
            if proc is not None:
                self._wait_ready(region, proc)
            self._wait_streaming(region, STREAM_TIMEOUT)
            self._set_fenced(region, False)
            self._refresh_meta()
        outcome = "no rewind required" if "no rewind required" in out else "rewound"
        log.info("rejoined %s to %s (%s)", region, upstream, outcome)
        return outcome

    def _stop_standby(self, region: str) -> None:
        """Stop ``region`` (fast shutdown) if it runs as a standby; refuse if it runs as a
        primary: a primary must be fenced (or stopped) before it rejoins."""
        if self._state(region) == "hung":
            raise SandboxError(f"{region} is hung; fence it before a rejoin")
        try:
            with self._admin(region) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.Error as exc:
            raise SandboxError(f"{region} is running but does not answer ({exc})") from None
        if not (row and row[0]):
            raise SandboxError(f"{region} is running as a primary; fence it before a rejoin")
        log.info("stopping the standby %s for its rejoin", region)
        self._stop([region])

    def _wait_streaming(self, region: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: str = "no answer"
        while True:
            try:
                with self._admin(region) as conn:
                    row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
                last = str(row[0]) if row else "no WAL receiver"
                if last == "streaming":
                    return
            except psycopg.Error as exc:
                last = str(exc).strip()
            if time.monotonic() >= deadline:
                raise SandboxError(
                    f"{region} did not stream within {timeout:g}s ({last}); "
                    f"{procs.tail(self._log_path(region))}"
                )
            time.sleep(0.1)

    def hang(self, region: str) -> None:
        """SIGSTOP the postmaster and every child (each child is its own process group, so
        this signals all of them): a frozen host. Raises if the region is not running."""
        data_dir = self.data_dir(region)
        with self._locked():
            pid = procs.postmaster_pid(data_dir)
            if pid is None:
                raise SandboxError(f"{region} is not running, so it cannot be hung")
            procs.signal_pid(pid, signal.SIGSTOP)  # first, so it forks no new backends
            deadline = time.monotonic() + 5.0
            while True:
                awake = [p for p in procs.server_processes(data_dir) if not procs.is_stopped(p)]
                if not awake:
                    return
                if time.monotonic() >= deadline:
                    raise SandboxError(f"could not stop processes {awake} of {region}")
                for p in awake:
                    procs.signal_pid(p, signal.SIGSTOP)
                time.sleep(0.02)

    def unhang(self, region: str) -> None:
        """SIGCONT every process of the region; no-op if it is not hung."""
        self._region(region)
        with self._locked():
            self._resume(region)

    def _refresh_meta(self) -> None:
        meta = self._meta()
        if meta:
            meta["pids"] = {r: self.postmaster_pid(r) for r in self.REGIONS}
            if isinstance(meta.get("dns"), dict):
                pids = self._dns.pids()
                meta["dns"]["pid"] = pids[0] if pids else None
            procs.write_private(self._meta_path, json.dumps(meta, indent=2) + "\n", 0o644)
