"""Typed, validated configuration.

Guarantees:

* :func:`load_config` either returns a fully validated :class:`Config` or raises
  :class:`~orchestrator.errors.ConfigError` listing **every** problem found, each with the dotted
  field path (``regions[1].nodes[0].dsn``) and, for YAML syntax errors, the line and column.
* Unknown keys are errors, duplicate YAML keys are errors.
* Secrets are only accepted by reference (``env:NAME`` or ``file:PATH``); they are resolved at load
  time into :class:`pydantic.SecretStr`, so a missing variable or unreadable file is reported as
  a config error, and the value never appears in ``repr``, logs or the JSON Schema.
* Durations accept ``300s``, ``5m``, ``1h``, ``800ms`` or a number of seconds.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.config_agent import AgentSettings
from orchestrator.config_api import ApiSettings
from orchestrator.config_bcp import DrillSettings, Levels, NotificationSettings
from orchestrator.config_coord import CoordinationSettings
from orchestrator.config_types import (
    Duration,
    IpAddress,
    Name,
    SecretRef,
    check_url,
    parse_duration,
)
from orchestrator.errors import ConfigError

__all__ = ["Duration", "IpAddress", "Name", "SecretRef", "parse_duration"]


def _check_dsn(dsn: str) -> str:
    try:
        parts = conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg raises ProgrammingError with a libpq message
        raise ValueError(f"not a valid libpq connection string: {exc}") from None
    if "password" in parts:
        raise ValueError(
            "the DSN must not contain a password; use the node's `password: env:NAME` "
            "or `password: file:PATH`"
        )
    if not parts.get("host") and not parts.get("hostaddr"):
        raise ValueError("the DSN must name a host (host=... or hostaddr=...)")
    return dsn


def _check_target(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    host = value.rstrip(".")
    label = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
    if re.fullmatch(rf"{label}(\.{label})*", host):
        return value
    raise ValueError(f"{value!r} is neither an IP address nor a host name")


# --- cross-field checks ---------------------------------------------------------------------
# Shared by the model validators and by the raw-data pass that reports them even when other
# fields failed (pydantic skips model validators once a field is invalid).


def _timing_problem(interval: float, timeout: float) -> str | None:
    if timeout >= interval:
        return (
            f"timeout ({timeout:g}s) must be shorter than interval ({interval:g}s) "
            "so a tick never overruns"
        )
    return None


def _uniqueness_problems(
    regions: list[tuple[object, object, list[object]]],
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seen_regions: dict[object, int] = {}
    seen_prio: dict[object, object] = {}
    seen_nodes: dict[object, str] = {}
    for i, (name, priority, nodes) in enumerate(regions):
        if name in seen_regions:
            problems.append((f"regions[{i}].name", f"region name {name!r} is used twice"))
        seen_regions.setdefault(name, i)
        if priority in seen_prio:
            problems.append(
                (
                    f"regions[{i}].priority",
                    f"priority {priority} is already used by region {seen_prio[priority]!r}",
                )
            )
        seen_prio.setdefault(priority, name)
        for j, node in enumerate(nodes):
            if node in seen_nodes:
                problems.append(
                    (f"regions[{i}].nodes[{j}].name", f"node name {node!r} is used twice")
                )
            seen_nodes.setdefault(node, f"regions[{i}].nodes[{j}]")
    return problems


def _raw_cross_field_problems(data: dict[Any, Any]) -> list[str]:
    """Best-effort cross-field checks on unvalidated data (each value may be malformed)."""
    out: list[str] = []
    regions = data.get("regions")
    if isinstance(regions, list):
        rows: list[tuple[object, object, list[object]]] = []
        for r in regions:
            if not isinstance(r, dict):
                continue
            raw_nodes = r.get("nodes")
            nodes: list[Any] = raw_nodes if isinstance(raw_nodes, list) else []
            names = [n.get("name") for n in nodes if isinstance(n, dict) and "name" in n]
            rows.append((r.get("name"), r.get("priority"), names))
        out += [f"{path}: {msg}" for path, msg in _uniqueness_problems(rows) if msg]
    probes = data.get("probes")
    if isinstance(probes, dict):
        try:
            interval = parse_duration(probes.get("interval", 1.0))
            timeout = parse_duration(probes.get("timeout", 0.8))
        except ValueError:
            return out
        problem = _timing_problem(interval, timeout)
        if problem:
            out.append(f"probes: {problem}")
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Objectives(_Strict):
    """Recovery objectives from the business continuity plan."""

    rto: Duration = Field(300.0, gt=0, description="Recovery time objective.")
    rpo: Duration = Field(60.0, gt=0, description="Recovery point objective (max data loss).")


class Node(_Strict):
    """One database node."""

    name: Name
    driver: Literal["postgres"] = "postgres"
    dsn: Annotated[str, AfterValidator(_check_dsn)] = Field(
        description="libpq connection string without a password, e.g. 'host=db1 port=5432 "
        "dbname=postgres user=helios'."
    )
    password: SecretRef | None = Field(None, description="Password reference for the DSN user.")
    health_url: Annotated[str, AfterValidator(check_url)] | None = Field(
        None, description="Optional HTTP health endpoint probed beside SQL."
    )
    dns_target: Annotated[str, AfterValidator(_check_target)] | None = Field(
        None, description="The address (A/AAAA) or host name (CNAME) clients should use."
    )
    fence_command: list[str] | None = Field(
        None,
        min_length=1,
        description="Optional argv (no shell) that fences this node for good: it must stop it "
        "and keep it from coming back as a primary (e.g. power it off, block it at the network, "
        "or stop it and leave standby.signal). Needed to fence an unreachable node. Each item "
        "is formatted with str.format_map: {node}, {region}, {upstream_node}, "
        "{upstream_region}, {upstream_host}, {upstream_port}; write {{ and }} for braces.",
    )
    rejoin_command: list[str] | None = Field(
        None,
        min_length=1,
        description="Optional argv (no shell) that turns this stopped node into a standby of "
        "{upstream_node} (e.g. pg_rewind, standby.signal, primary_conninfo, start). Formatted "
        "like fence_command.",
    )


class Region(_Strict):
    """A region and its nodes. Lower ``priority`` is preferred for the primary."""

    name: Name
    priority: int = Field(ge=1, description="Preference order for the primary (1 = first).")
    nodes: list[Node] = Field(min_length=1)


class ProbeSettings(_Strict):
    """How often and how patiently nodes are probed, and the hysteresis thresholds."""

    interval: Duration = Field(1.0, gt=0, description="Time between ticks.")
    timeout: Duration = Field(0.8, gt=0, description="Budget of one probe; below the interval.")
    failure_threshold: int = Field(
        3, ge=1, description="Consecutive failed ticks before a node is DOWN."
    )
    recovery_threshold: int = Field(
        3, ge=1, description="Consecutive good ticks before a DOWN node is HEALTHY again."
    )
    flap_window: int = Field(
        10, ge=2, description="Ticks looked at to detect flapping (repeated up/down changes)."
    )
    flap_changes: int = Field(
        4, ge=2, description="Up/down changes within the window that mark a node as flapping."
    )
    heartbeat: bool = Field(
        True, description="Write the heartbeat row on the primary every tick (lag in seconds)."
    )

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> ProbeSettings:
        problem = _timing_problem(self.interval, self.timeout)
        if problem:
            raise ValueError(problem)
        return self


class RetryPolicy(_Strict):
    """How a provider call is retried on transient errors (tenacity, exponential backoff)."""

    attempts: int = Field(4, ge=1, le=20, description="Total attempts, the first included.")
    initial_delay: Duration = Field(0.5, ge=0, description="Delay before the first retry.")
    max_delay: Duration = Field(10.0, gt=0, description="Upper bound of any single delay.")


class _DnsProviderBase(_Strict):
    name: Name = Field(description="Unique provider name, used in metrics, logs and the CLI.")
    primary: bool = Field(False, description="The primary supplier (for `require: primary`).")
    timeout: Duration = Field(10.0, gt=0, description="Deadline of one API call.")
    retry: RetryPolicy = RetryPolicy()
    propagation_timeout: Duration = Field(
        120.0, gt=0, description="How long to wait for the provider to report a change live."
    )
    poll_interval: Duration = Field(2.0, gt=0, description="Delay between change-status polls.")


class Route53Provider(_DnsProviderBase):
    """Amazon Route53 through boto3."""

    kind: Literal["route53"]
    zone_id: str = Field(min_length=1, description="Hosted zone id (Z...).")
    region: str = Field("us-east-1", description="AWS region for the API client.")
    endpoint_url: Annotated[str, AfterValidator(check_url)] | None = Field(
        None, description="Override the API endpoint (tests, sandbox)."
    )
    access_key_id: SecretRef | None = Field(
        None, description="Access key reference; default AWS credential chain when absent."
    )
    secret_access_key: SecretRef | None = None


class CloudflareProvider(_DnsProviderBase):
    """Cloudflare through the official SDK."""

    kind: Literal["cloudflare"]
    zone_id: str = Field(min_length=1, description="Cloudflare zone id.")
    api_token: SecretRef = Field(description="API token reference (Zone.DNS edit permission).")
    base_url: Annotated[str, AfterValidator(check_url)] | None = Field(
        None, description="Override the API base URL, including /client/v4 (tests, sandbox)."
    )


class GcloudProvider(_DnsProviderBase):
    """Google Cloud DNS through google-cloud-dns."""

    kind: Literal["gcloud"]
    project: str = Field(min_length=1, description="GCP project id.")
    managed_zone: str = Field(min_length=1, description="Managed zone name (not its DNS name).")
    api_endpoint: Annotated[str, AfterValidator(check_url)] | None = Field(
        None, description="Override the API endpoint (tests, sandbox)."
    )
    credentials: SecretRef | None = Field(
        None, description="Service-account JSON key reference; required unless anonymous."
    )
    anonymous: bool = Field(False, description="Send no credentials (local stand-ins only).")

    @model_validator(mode="after")
    def _credentials(self) -> GcloudProvider:
        if self.credentials is None and not self.anonymous:
            raise ValueError("credentials: a service-account key reference is required")
        return self


DnsProviderConfig = Annotated[
    Route53Provider | CloudflareProvider | GcloudProvider, Field(discriminator="kind")
]


def _check_fqdn(value: str) -> str:
    host = value.rstrip(".")
    if not host or not _check_target(host) or "." not in host:
        raise ValueError(f"{value!r} is not a fully qualified domain name")
    return host.lower() + "."


class OwnedRecord(_Strict):
    """A record the orchestrator owns and points at the primary region."""

    name: Annotated[str, AfterValidator(_check_fqdn)] = Field(
        description="Fully qualified name, e.g. db.example.com."
    )
    type: Literal["A", "AAAA", "CNAME"] = "A"
    ttl: int = Field(60, ge=1, le=86400, description="TTL in seconds.")


class Nameserver(_Strict):
    """An authoritative name server to query after a switch (verification)."""

    provider: Name = Field(description="The provider whose zone this server answers for.")
    address: IpAddress = Field(description="IP address of the server.")
    port: int = Field(53, ge=1, le=65535)


class DnsSettings(_Strict):
    """DNS switching: which records follow the primary, on which providers."""

    records: list[OwnedRecord] = Field(min_length=1)
    providers: list[DnsProviderConfig] = Field(min_length=1)
    require: Literal["all", "any", "primary"] = Field(
        "all", description="Which providers must succeed for a switch to count as done."
    )
    max_changes: int = Field(
        1, ge=1, description="Most records one switch may change without --force."
    )
    switch_timeout: Duration = Field(
        180.0, gt=0, description="Budget of a whole switch on one provider, retries included."
    )
    reconcile_interval: Duration = Field(
        30.0,
        gt=0,
        description="How often the daemon re-checks providers against the desired state.",
    )
    nameservers: list[Nameserver] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> DnsSettings:
        problems = []
        names = [p.name for p in self.providers]
        for i, n in enumerate(names):
            if n in names[:i]:
                problems.append(f"dns.providers[{i}].name: provider name {n!r} is used twice")
        primaries = [p.name for p in self.providers if p.primary]
        if self.require == "primary" and len(primaries) != 1:
            problems.append(
                f"dns.require: 'primary' needs exactly one provider with primary: true "
                f"(found {len(primaries)})"
            )
        for i, ns in enumerate(self.nameservers):
            if ns.provider not in names:
                problems.append(f"dns.nameservers[{i}].provider: no provider named {ns.provider!r}")
        keys = [(r.name, r.type) for r in self.records]
        for i, k in enumerate(keys):
            if k in keys[:i]:
                problems.append(f"dns.records[{i}]: {k[0]} {k[1]} is listed twice")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class VerifySettings(_Strict):
    """How a failover proves the service works: a write through the service name."""

    dsn: str = Field(
        description="libpq connection string WITHOUT host: the host is the address the service "
        "record resolves to (e.g. 'port=5432 dbname=postgres user=helios')."
    )
    password: SecretRef | None = None
    record: Annotated[str, AfterValidator(_check_fqdn)] | None = Field(
        None, description="The service record to resolve (default: the first dns record)."
    )

    @field_validator("dsn")
    @classmethod
    def _no_host(cls, v: str) -> str:
        try:
            parts = conninfo_to_dict(v)
        except Exception as exc:
            raise ValueError(f"not a valid libpq connection string: {exc}") from None
        if "host" in parts or "hostaddr" in parts:
            raise ValueError("leave host out: it is resolved from the service name")
        if "password" in parts:
            raise ValueError("the DSN must not contain a password; use password: env:NAME")
        return v


class FailoverSettings(_Strict):
    """Automatic failover behaviour."""

    automatic: bool = Field(True, description="Fail over without a human when the primary is lost.")
    cooldown: Duration = Field(
        3600.0, ge=0, description="No second automatic failover within this time (unless acked)."
    )
    exclude: list[str] = Field(
        default_factory=list, description="Nodes never promoted automatically."
    )
    runbooks_dir: str | None = Field(
        None, description="Directory of runbooks (default: the runbooks shipped with the project)."
    )
    verify: VerifySettings | None = None


class Listen(_Strict):
    """Where the metrics / health / API HTTP server listens."""

    address: IpAddress = Field("127.0.0.1", description="Bind address; loopback by default.")
    port: int = Field(9187, ge=0, le=65535, description="TCP port (0 picks a free port).")


class Config(_Strict):
    """The whole orchestrator configuration."""

    service: Name = Field(description="Service name; used in metrics, logs and DNS.")
    objectives: Objectives = Objectives()
    regions: list[Region] = Field(min_length=1)
    probes: ProbeSettings = ProbeSettings()
    listen: Listen = Listen()
    state_dir: str = Field(
        "/var/lib/helios-orchestrator", description="Where the daemon keeps its state."
    )
    dns: DnsSettings | None = Field(None, description="DNS switching (optional).")
    failover: FailoverSettings = FailoverSettings()
    levels: Levels = Field(Levels(), description="BCP activation levels.")
    notifications: NotificationSettings = Field(
        NotificationSettings(), description="Notification channels, audiences, templates."
    )
    drill: DrillSettings = Field(DrillSettings(), description="The monthly DR drill.")
    api: ApiSettings = Field(ApiSettings(), description="The control API's bearer tokens.")
    coordination: CoordinationSettings | None = Field(
        None,
        description="Leader election and shared observations between orchestrator instances "
        "(one per region). Without it this instance is the only one, and always the leader.",
    )
    agent: AgentSettings = Field(AgentSettings(), description="The node agents' timing.")

    @model_validator(mode="after")
    def _unique(self) -> Config:
        problems = _uniqueness_problems(
            [(r.name, r.priority, [n.name for n in r.nodes]) for r in self.regions]
        )
        problems += _dns_target_problems(self)
        problems += _bcp_problems(self)
        node_names = {n.name for r in self.regions for n in r.nodes}
        for i, name in enumerate(self.failover.exclude):
            if name not in node_names:
                problems.append((f"failover.exclude[{i}]", f"no node named {name!r}"))
        if problems:
            raise ValueError("; ".join(f"{path}: {msg}" for path, msg in problems))
        return self

    def ordered_regions(self) -> list[Region]:
        """Regions by preference (priority ascending)."""
        return sorted(self.regions, key=lambda r: r.priority)

    def region_of(self, node_name: str) -> str:
        for r in self.regions:
            for n in r.nodes:
                if n.name == node_name:
                    return r.name
        raise KeyError(node_name)

    def all_nodes(self) -> list[tuple[Region, Node]]:
        return [(r, n) for r in self.ordered_regions() for n in r.nodes]


def _bcp_problems(cfg: Config) -> list[tuple[str, str]]:
    """Levels name existing audiences; the drill target is a region."""
    out = []
    audiences = {a.name for a in cfg.notifications.audiences}
    for key in ("none", "level1", "level2", "level3", "level4"):
        policy = getattr(cfg.levels, key)
        for j, name in enumerate(policy.notify):
            # The defaults name the plan's audiences; only a configured audience list is held
            # to them, so a config without notifications stays valid.
            if audiences and name not in audiences:
                out.append((f"levels.{key}.notify[{j}]", f"no audience named {name!r}"))
    regions = {r.name for r in cfg.regions}
    if cfg.drill.to is not None and cfg.drill.to not in regions:
        out.append(("drill.to", f"no region named {cfg.drill.to!r}"))
    return out


def _dns_target_problems(cfg: Config) -> list[tuple[str, str]]:
    """With DNS switching on, every node needs a dns_target that fits every owned record type."""
    if cfg.dns is None:
        return []
    out = []
    for i, region in enumerate(cfg.regions):
        for j, node in enumerate(region.nodes):
            path = f"regions[{i}].nodes[{j}].dns_target"
            if node.dns_target is None:
                out.append((path, "required when dns is configured"))
                continue
            for rec in cfg.dns.records:
                problem = _target_fits(node.dns_target, rec.type)
                if problem:
                    out.append((path, f"{problem} (record {rec.name} is {rec.type})"))
    return out


def _target_fits(target: str, rtype: str) -> str | None:
    try:
        ip = ipaddress.ip_address(target)
    except ValueError:
        ip = None
    if rtype == "A" and (ip is None or ip.version != 4):
        return f"{target!r} is not an IPv4 address"
    if rtype == "AAAA" and (ip is None or ip.version != 6):
        return f"{target!r} is not an IPv6 address"
    if rtype == "CNAME" and ip is not None:
        return f"{target!r} is an address, a CNAME needs a host name"
    return None


# --- loading -------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
        seen[key] = True
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node))


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``('regions', 1, 'nodes', 0, 'dsn')`` -> ``regions[1].nodes[0].dsn``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "constrained-")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def validation_messages(exc: ValidationError) -> list[str]:
    """One ``path: message`` line per pydantic error."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = format_loc(tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if not err["loc"] and re.match(r"^[a-z_]+[\[.:]", msg):
            # Config-level checks already name their field paths, one per problem.
            lines.extend(msg.split("; "))
        else:
            lines.append(f"{loc}: {msg}")
    return lines


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate already-parsed YAML/JSON data."""
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of settings"])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = validation_messages(exc)
        for extra in _raw_cross_field_problems(data):
            if extra not in problems and not any(extra in p for p in problems):
                problems.append(extra)
        raise ConfigError(source, problems) from None


def read_yaml(path: str | os.PathLike[str], error: type[ConfigError] = ConfigError) -> Any:
    """Read a YAML file with duplicate keys refused; every problem raises ``error`` (a
    ConfigError subclass) naming the file, and the line and column for syntax errors."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(str(p), [f"cannot read file: {exc.strerror or exc}"]) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise error(str(p), [f"YAML syntax error at {where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise error(str(p), [f"YAML error: {exc}"]) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file. Raises :class:`ConfigError` on any problem."""
    return parse_config(read_yaml(path), str(path))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "helios-orchestrator configuration"
    return schema
