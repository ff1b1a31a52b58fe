"""The partition lab: the whole service, one region per network namespace (see
:mod:`netlab`), for ``test_partitions.py``.

Per region, inside its namespace: the sandbox's PostgreSQL node (listening on the namespace's
address; the sandbox runs it through ``ip netns exec``), one etcd member (a 3-member cluster
across the regions), one orchestrator (``orchestrator run``: vantage = its region, its own etcd
member first in its endpoint list, the API on its address) and one node agent
(``orchestrator agent --data-dir``: the nodes have no ``fence_command``, so the agent fences by
stopping PostgreSQL itself and the leader's fence step waits for the agent). In the observer
namespace: the sampler (``netlab_tools.py sample``). The test process, in the root namespace,
reads the sampler's JSON lines, the logs, journals, incidents and agent state files.

Every node's ``rejoin_command`` is the sandbox's ``rejoin`` behind ``netlab_tools.py gate``:
the caller must reach the node over the network (the sandbox acts on files, which any
namespace can touch).

Teardown (also on failure, with SIGINT/SIGTERM ignored): the lab's processes by PID, the
sandbox (fast shutdown), then every process left in the namespaces, the namespaces, the etcd
data and the state directory; whatever survives fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from etcd_cluster import find_etcd
from netlab import OBSERVER, REGIONS, LabProc, NetLab, netlab

from orchestrator.config import load_config
from orchestrator.incidents import IncidentStore
from orchestrator.sandbox import Sandbox, scratch
from orchestrator.sandbox.placement import Placement

T = TypeVar("T")

TOOLS = str(Path(__file__).resolve().parents[1] / "netlab_tools.py")
PY = sys.executable
PG_PORT = 54330
ORCH_PORT = 9187
ETCD_CLIENT, ETCD_PEER = 2379, 2380
SERVICE = "helios-lab"
PREFIX = "/helios-lab/"

# Timing (small, so that the whole file stays within a few minutes on 2 cores).
TTL = 3.0
COORD_TIMEOUT = 1.0
INTERVAL = 0.5
PROBE_TIMEOUT = 0.3
FAILURE_THRESHOLD = 3
FENCE_AFTER = 5.0
AGENT_INTERVAL = 0.5
FENCE_TIMEOUT = 5.0
SAMPLE_PERIOD = 0.1

NODE = {r: f"{r}-1" for r in REGIONS}
KEY_REASONS = frozenset(
    {
        "LEADER_ELECTED",
        "LEADER_LOST",
        "RUN_STARTED",
        "FENCE_ASKED",
        "FAILOVER_DONE",
        "PRIMARY_RECOVERING",
        "VANTAGE_QUORUM_MISSING",
        "QUORUM_LOST",
        "QUORUM_REGAINED",
        "SELF_FENCED",
        "FENCE_REQUESTED",
        "SUPERSEDED",
        "STALE_PRIMARY",
        "REJOINED",
        "REJOIN_FAILED",
        "FENCE_FAILED",
    }
)
"""Log reasons shown in the timeline of a failure."""
INSTANCE = {r: f"orch-{r}" for r in REGIONS}


def wait_for(
    pred: Callable[[], T], timeout: float, what: str, diag: Callable[[], str] | None = None
) -> T:
    """Poll ``pred`` every 0.1 s until truthy; AssertionError with ``diag()`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last!r})" if last else ""
            raise AssertionError(
                f"{what}: not within {timeout:g}s{detail}\n{diag() if diag else ''}"
            )
        time.sleep(0.1)


def iso_to_epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def fmt_t(t: float | None, t0: float) -> str:
    return "-" if t is None else f"{t - t0:+8.2f}"


@dataclass
class Samples:
    """Incremental reader of the sampler's JSON lines."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    _offset: int = 0

    def refresh(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return self.records
        end = data.rfind(b"\n")
        if end < 0:
            return self.records
        for line in data[: end + 1].splitlines():
            with contextlib.suppress(ValueError):
                self.records.append(json.loads(line))
        self._offset += end + 1
        return self.records

    def of(
        self, kind: str, since: float = 0.0, until: float = float("inf")
    ) -> list[dict[str, Any]]:
        key = "t0" if kind == "db" else "t"
        return [
            r for r in self.refresh() if r.get("k") == kind and since <= r.get(key, 0.0) <= until
        ]


@dataclass
class Lab:
    net: NetLab
    sb: Sandbox
    root: Path
    etcd_root: Path
    configs: dict[str, Path] = field(default_factory=dict)
    etcd: dict[str, LabProc] = field(default_factory=dict)
    orch: dict[str, LabProc] = field(default_factory=dict)
    agents: dict[str, LabProc] = field(default_factory=dict)
    sampler: LabProc | None = None
    samples: Samples = field(default_factory=lambda: Samples(Path("/nonexistent")))
    started_at: float = field(default_factory=time.time)

    # --- addresses ---------------------------------------------------------------------------

    def etcd_url(self, region: str) -> str:
        return f"http://{self.net.addr(region)}:{ETCD_CLIENT}"

    def orch_url(self, region: str) -> str:
        return f"http://{self.net.addr(region)}:{ORCH_PORT}"

    def state_dir(self, region: str) -> Path:
        return self.root / f"orch-{region}"

    def agent_dir(self, region: str) -> Path:
        return self.root / f"agent-{region}"

    # --- starting the parts --------------------------------------------------------------------

    def start_etcd(self, region: str) -> LabProc:
        a = self.net.addr(region)
        initial = ",".join(f"m-{r}=http://{self.net.addr(r)}:{ETCD_PEER}" for r in REGIONS)
        argv = [
            find_etcd(),
            "--name", f"m-{region}",
            "--data-dir", str(self.etcd_root / region),
            "--listen-client-urls", f"http://{a}:{ETCD_CLIENT}",
            "--advertise-client-urls", f"http://{a}:{ETCD_CLIENT}",
            "--listen-peer-urls", f"http://{a}:{ETCD_PEER}",
            "--initial-advertise-peer-urls", f"http://{a}:{ETCD_PEER}",
            "--initial-cluster", initial,
            "--initial-cluster-token", f"hxlab-{self.net.suffix}",
            "--initial-cluster-state", "new",
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
            # etcd 3.5+ does this by default: a member that comes back from a partition does
            # not force a new raft election (which would cost the orchestrators a lease).
            "--pre-vote",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        proc = self.net.popen(region, f"etcd-{region}", argv)
        self.etcd[region] = proc
        return proc

    def wait_etcd(self, regions: tuple[str, ...] = REGIONS, timeout: float = 30.0) -> None:
        for region in regions:
            url = f"{self.etcd_url(region)}/health"
            argv = [PY, TOOLS, "wait-http", url, "--contains", '"true"', "--timeout", str(timeout)]
            out = self.net.run(OBSERVER, argv, timeout=timeout + 10)
            assert out.returncode == 0, f"etcd {region}: {out.stderr}\n{self.etcd[region].tail()}"

    def etcd_leader(self) -> str:
        """The region whose etcd member is the raft leader."""
        urls = [self.etcd_url(r) for r in REGIONS]
        out = self.net.run(OBSERVER, [PY, TOOLS, "etcd-leader", *urls], timeout=15)
        assert out.returncode == 0, out.stderr
        return next(r for r in REGIONS if self.etcd_url(r) == out.stdout.strip())

    def write_configs(self) -> None:
        base = yaml.safe_load(self.sb.config_path().read_text())
        for region in REGIONS:
            doc = json.loads(json.dumps(base))
            for reg in doc["regions"]:
                for node in reg["nodes"]:
                    node.pop("fence_command", None)  # the node agents fence
                    host = self.net.addr(reg["name"])
                    node["rejoin_command"] = [PY, TOOLS, "gate", host, str(PG_PORT), "--"] + node[
                        "rejoin_command"
                    ]
            doc["probes"].update(
                interval=INTERVAL,
                timeout=PROBE_TIMEOUT,
                failure_threshold=FAILURE_THRESHOLD,
                recovery_threshold=3,
            )
            doc["listen"] = {"address": self.net.addr(region), "port": ORCH_PORT}
            doc["state_dir"] = str(self.state_dir(region))
            doc.setdefault("failover", {})["automatic"] = True
            doc["notifications"] = {"channels": []}
            own = self.etcd_url(region)
            doc["coordination"] = {
                "endpoints": [own] + [self.etcd_url(r) for r in REGIONS if r != region],
                "prefix": PREFIX,
                "ttl": f"{TTL:g}s",
                "timeout": f"{COORD_TIMEOUT:g}s",
                "instance_id": INSTANCE[region],
                "vantage": region,
                "vantage_quorum": 2,
            }
            doc["agent"] = {
                "enabled": True,
                "fence_after": f"{FENCE_AFTER:g}s",
                "interval": f"{AGENT_INTERVAL * 1000:.0f}ms",
                "fence_timeout": f"{FENCE_TIMEOUT:g}s",
                "rejoin_timeout": "60s",
            }
            path = self.root / f"orchestrator-{region}.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            load_config(path)
            self.configs[region] = path

    def start_sampler(self) -> None:
        out = self.root / "samples.jsonl"
        cfg = {
            "period": SAMPLE_PERIOD,
            "out": str(out),
            "nodes": [
                {
                    "name": NODE[r],
                    "region": r,
                    "host": self.net.addr(r),
                    "port": PG_PORT,
                    "socket_dir": str(self.sb.state_dir / "run" / r),
                }
                for r in REGIONS
            ],
            "orchestrators": [{"instance": INSTANCE[r], "url": self.orch_url(r)} for r in REGIONS],
            "etcd": [{"name": f"m-{r}", "url": self.etcd_url(r)} for r in REGIONS],
        }
        path = self.root / "sampler.json"
        path.write_text(json.dumps(cfg, indent=2))
        self.samples = Samples(out)
        self.sampler = self.net.popen(OBSERVER, "sampler", [PY, TOOLS, "sample", str(path)])

    def start_orchestrator(self, region: str) -> LabProc:
        argv = [PY, "-m", "orchestrator", "run", "--config", str(self.configs[region])]
        proc = self.net.popen(region, INSTANCE[region], argv)
        self.orch[region] = proc
        return proc

    def start_agent(self, region: str) -> LabProc:
        argv = [PY, "-m", "orchestrator.cli_agent", "--config", str(self.configs[region])]
        argv += ["--node", NODE[region], "--state-dir", str(self.agent_dir(region))]
        argv += ["--data-dir", str(self.sb.data_dir(region))]
        proc = self.net.popen(region, f"agent-{region}", argv)
        self.agents[region] = proc
        return proc

    def make_leader(self, region: str) -> None:
        """Have ``region``'s orchestrator lead: the others stop (SIGTERM: they resign) until
        it does, then start again."""
        if self.leaders() == [INSTANCE[region]]:
            return
        others = [r for r in REGIONS if r != region]
        for r in others:
            self.orch[r].stop(timeout=15)
        self.net.note(f"stopped {', '.join(INSTANCE[r] for r in others)} to hand over")
        wait_for(
            lambda: self.leaders() == [INSTANCE[region]],
            TTL + 10,
            f"{INSTANCE[region]} leading",
            lambda: self.diagnostics(time.time() - 15),
        )
        for r in others:
            self.start_orchestrator(r)
        self.wait_baseline(timeout=30)

    # --- what the lab says ---------------------------------------------------------------------

    def latest(self, kind: str, key: str, within: float = 1.0) -> dict[str, dict[str, Any]]:
        """The newest record per ``key`` (node, inst, name) of the last ``within`` seconds."""
        since = time.time() - within
        tkey = "t0" if kind == "db" else "t"
        found: dict[str, dict[str, Any]] = {}
        for r in reversed(self.samples.refresh()):  # appended in about time order
            if r.get("t", r.get("t0", 0.0)) < since - 5:
                break
            if r.get("k") == kind and r.get(tkey, 0.0) >= since and r[key] not in found:
                found[r[key]] = r
        return found

    def leaders(self, within: float = 0.8) -> list[str]:
        return sorted(i for i, r in self.latest("orch", "inst", within).items() if r.get("leader"))

    def roles(self, within: float = 0.6) -> dict[str, str]:
        """node -> "primary" (took a write) / "replica" (in recovery) / "down" / "?"."""
        out = {}
        for node, r in self.latest("db", "node", within).items():
            if r.get("write") and r.get("rec") is False:
                out[node] = "primary"
            elif r.get("rec") is True:
                out[node] = "replica"
            elif not r.get("up"):
                out[node] = "down"
            else:
                out[node] = "?"
        return out

    def log(self, proc: LabProc) -> list[dict[str, Any]]:
        out = []
        try:
            text = proc.log.read_text(errors="replace")
        except OSError:
            return out
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    out.append(doc)
        return out

    def log_events(self, proc: LabProc, reason: str, since: float = 0.0) -> list[dict[str, Any]]:
        found = []
        for doc in self.log(proc):
            if doc.get("reason") != reason or "timestamp" not in doc:
                continue
            t = iso_to_epoch(str(doc["timestamp"]))
            if t >= since:
                found.append({**doc, "t": t})
        return found

    def agent_record(self, region: str) -> dict[str, Any]:
        try:
            return dict(json.loads((self.agent_dir(region) / f"{NODE[region]}.json").read_text()))
        except (OSError, ValueError):
            return {}

    def incidents(self) -> dict[str, list[Any]]:
        return {r: IncidentStore(str(self.state_dir(r))).all() for r in REGIONS}

    def failovers(self, since: float = 0.0) -> list[tuple[str, Any]]:
        """(region of the orchestrator, incident) for every incident with a new primary."""
        return [
            (r, inc)
            for r, incs in self.incidents().items()
            for inc in incs
            if inc.new_primary is not None and (inc.when("promoted") or inc.opened_at) >= since
        ]

    def journal(self, region: str) -> list[dict[str, Any]]:
        path = self.state_dir(region) / "journal.jsonl"
        out = []
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    # --- health ------------------------------------------------------------------------------

    def baseline(self, primary: str | None = None) -> str | None:
        """Why the lab is not at rest (None: it is): one writable primary (``primary`` if
        given), the other two replicas, every orchestrator answering and agreeing on it,
        exactly one leader, every etcd member healthy, every process running."""
        dead = [
            p.name
            for p in [*self.etcd.values(), *self.orch.values(), *self.agents.values()]
            if not p.running()
        ]
        if self.sampler is None or not self.sampler.running():
            dead.append("sampler")
        if dead:
            return f"not running: {dead}"
        roles = self.roles()
        primaries = [n for n, role in roles.items() if role == "primary"]
        if len(roles) != 3 or len(primaries) != 1 or list(roles.values()).count("replica") != 2:
            return f"roles {roles}"
        if primary is not None and primaries != [primary]:
            return f"primary is {primaries}, not {primary}"
        orch = self.latest("orch", "inst")
        if len(orch) != 3 or not all(r.get("ok") for r in orch.values()):
            return f"orchestrators {orch}"
        if {r.get("primary") for r in orch.values()} != set(primaries):
            return f"orchestrators see primary {[r.get('primary') for r in orch.values()]}"
        if len(self.leaders()) != 1:
            return f"leaders {self.leaders()}"
        etcd = self.latest("etcd", "name", within=1.5)
        if len(etcd) != 3 or not all(r.get("healthy") for r in etcd.values()):
            return f"etcd {etcd}"
        for region in REGIONS:
            decisions = [
                d["reason"]
                for d in self.log(self.agents[region])
                if str(d.get("reason", "")).startswith("AGENT_")
            ]
            want = "AGENT_PRIMARY_CONFIRMED" if NODE[region] in primaries else "AGENT_REPLICA_OK"
            if not decisions or decisions[-1] != want:
                return f"agent {region}: last decision {decisions[-1:]} (want {want})"
        return None

    def wait_baseline(self, timeout: float = 45.0, primary: str | None = None) -> None:
        wait_for(
            lambda: self.baseline(primary) is None,
            timeout,
            "the lab at rest",
            lambda: f"{self.baseline(primary)}\n{self.diagnostics(time.time() - 10)}",
        )

    # --- diagnostics ---------------------------------------------------------------------------

    def window(self, since: float, until: float | None = None, step: float = 0.5) -> str:
        """The samples of ``[since, until]`` as a table: one row per ``step`` seconds, per node
        the role it showed (P = took a write, R = in recovery, D = down/unreachable by socket,
        ? = up, neither), its network reachability from the observer, and the leader."""
        until = until if until is not None else time.time()
        db = self.samples.of("db", since, until)
        net = self.samples.of("net", since, until)
        orch = self.samples.of("orch", since, until)
        t0 = since
        lines = [f"samples from {datetime.fromtimestamp(since).isoformat()} (t=0)"]
        lines.append("     t  " + "  ".join(f"{NODE[r]:>14}" for r in REGIONS) + "  leader(s)")
        t = since
        while t < until:
            cells = []
            for r in REGIONS:
                recs = [x for x in db if x["node"] == NODE[r] and t <= x["t0"] < t + step]
                roles = "".join(
                    sorted(
                        {
                            "P"
                            if x.get("write")
                            else "R"
                            if x.get("rec")
                            else "D"
                            if not x.get("up")
                            else "?"
                            for x in recs
                        }
                    )
                )
                reach = {
                    x["reach"][:4] for x in net if x["node"] == NODE[r] and t <= x["t"] < t + step
                }
                cells.append(f"{roles or '-':>5}/{','.join(sorted(reach)) or '-':<8}")
            leads = sorted({x["inst"] for x in orch if x.get("leader") and t <= x["t"] < t + step})
            lines.append(f"{t - t0:6.1f}  " + "  ".join(cells) + f"  {','.join(leads) or '-'}")
            t += step
        events = [f"{fmt_t(te, t0)} {what}" for te, what in self.net.events if te >= since - 60]
        return "\n".join([*lines, "lab events:", *events])

    def timeline(self, since: float, until: float | None = None) -> str:
        """The key events of every log and journal, and the lab's own, in time order."""
        until = until if until is not None else time.time()
        events = [(t, "lab", what) for t, what in self.net.events]
        for procs in (self.orch, self.agents):
            for p in procs.values():
                for doc in self.log(p):
                    if doc.get("reason") in KEY_REASONS and "timestamp" in doc:
                        what = f"{doc['reason']}: {str(doc.get('event', ''))[:110]}"
                        events.append((iso_to_epoch(str(doc["timestamp"])), p.name, what))
        for r in REGIONS:
            for rec in self.journal(r):
                if rec.get("kind") in ("run_started", "step_started", "run_finished"):
                    what = f"journal {rec['kind']} {rec.get('step') or rec.get('run')}"
                    events.append((float(rec["at"]), INSTANCE[r], what))
        lines = [f"timeline (t=0 at {datetime.fromtimestamp(since).isoformat()}):"]
        for t, who, what in sorted(events):
            if since - 1 <= t <= until:
                lines.append(f"{t - since:+8.2f} {who:<14} {what}")
        return "\n".join(lines)

    def diagnostics(self, since: float, until: float | None = None) -> str:
        parts = [self.window(since, until), self.timeline(since, until)]
        for p in [*self.orch.values(), *self.agents.values(), *self.etcd.values()]:
            tail = p.tail(10, skip='"cycle":')  # not the orchestrators' one line per tick
            parts.append(f"--- {p.name} (pid {p.pid}, running {p.running()}):\n{tail}")
        if self.sampler is not None:
            parts.append(f"--- sampler:\n{self.sampler.tail(5)}")
        for r in REGIONS:
            log = self.sb.state_dir / "logs" / f"{r}.log"
            with contextlib.suppress(OSError):
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-6:])
                parts.append(f"--- postgres {r}:\n{tail}")
        return "\n".join(parts)


def _stop_all(lab: Lab) -> None:
    """The lab's own processes by PID: sampler and orchestrators (SIGTERM, 10 s), agents and
    etcd members (SIGKILL)."""
    procs = [*lab.orch.values()]
    if lab.sampler is not None:
        procs.append(lab.sampler)
    for p in procs:
        p.signal(signal.SIGTERM)
    for p in procs:
        p.stop(timeout=10)
    for p in [*lab.agents.values(), *lab.etcd.values()]:
        p.kill()


@contextlib.contextmanager
def partition_lab(start: bool = True) -> Iterator[Lab]:
    """The lab, built and at rest (see the module docstring); torn down on exit."""
    root = Path(tempfile.mkdtemp(prefix="hxlab-", dir="/tmp"))
    root.chmod(0o755)  # the postgres OS user must traverse it
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    etcd_root = Path(tempfile.mkdtemp(prefix="hxlab-etcd-", dir=shm))
    errors: list[str] = []
    try:
        with netlab(root / "net") as net:
            placement = Placement.of(
                [net.addr(r) for r in REGIONS], [net.ns(r) for r in REGIONS], [net.network]
            )
            sb = Sandbox(
                root / "sb",
                base_port=PG_PORT,
                service=SERVICE,
                interval=INTERVAL,
                timeout=PROBE_TIMEOUT,
                placement=placement,
            )
            lab = Lab(net, sb, root, etcd_root)
            try:
                if start:
                    sb.up()
                    for region in REGIONS:
                        lab.start_etcd(region)
                    lab.wait_etcd()
                    lab.write_configs()
                    lab.start_sampler()
                    lab.start_orchestrator("us-east")  # first up: it leads
                    wait_for(lambda: lab.leaders() == [INSTANCE["us-east"]], 30, "a leader",
                             lambda: lab.diagnostics(lab.started_at))  # fmt: skip
                    for region in ("us-west", "eu"):
                        lab.start_orchestrator(region)
                    for region in REGIONS:
                        lab.start_agent(region)
                    lab.wait_baseline(timeout=60, primary=NODE["us-east"])
                yield lab
            finally:
                previous = {
                    s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)
                }
                try:
                    _stop_all(lab)
                    try:
                        sb.destroy()
                    except Exception as exc:
                        errors.append(f"sandbox destroy: {exc!r}")
                finally:
                    for s, handler in previous.items():
                        signal.signal(s, handler)
    finally:
        left = scratch.processes_under(root) + scratch.processes_under(etcd_root)
        for pid, _cmd in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(etcd_root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        if left:
            errors.append(f"processes left after the teardown: {left}")
    if errors:
        raise AssertionError("; ".join(errors))
