"""Secrets hygiene, end to end: no token, API key, webhook URL or DSN password ever reaches what
an operator or a scraper can see.

The daemon runs as ``orchestrator run`` (a subprocess, at debug level, its stdout and stderr
captured as an operator would see them) on a fresh sandbox whose configuration carries every kind
of secret by ``file:`` reference. Its DNS providers sit behind fault proxies and its notification
channels on a receiver, both *adversarial*: their error answers echo the request back (path,
``Authorization`` header, body), i.e. the very secrets the orchestrator sent; Slack also answers
a few times with a body that does not decode. The primary is killed; the automatic failover runs
into those faults, completes, and the incident closes with its reports written. Then CLI
commands run against failing channels and providers. Everything the daemon and the CLI wrote
under the state dir, every captured stream and every HTTP body the daemon served (every GET
route its server declares) is scanned for every secret value of the loaded configuration (found
by walking the pydantic model, so a new secret field is covered without touching this test),
also URL-encoded, JSON-escaped, HTML-escaped and base64-encoded, and for any run of
:data:`FRAGMENT` characters of one (a secret cut in two by a shortened message). A failure names
the secret's config field and where it leaked, never the secret.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.sax.saxutils
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import httpx
import pytest
import yaml
from pydantic import BaseModel, SecretStr

import orchestrator
from orchestrator.config import Config, load_config
from orchestrator.incidents import Incident, IncidentStore
from orchestrator.sandbox.standins._http import Request, Response
from orchestrator.sandbox.standins.r53proxy import Route53FaultProxy
from orchestrator.sandbox.standins.receiver import NotifyReceiver

pytestmark = pytest.mark.sandbox

ECHO = "ECHOED-REQUEST"
"""Marks a provider's error answer that echoes the request: proves those answers were seen."""
MIN_SECRET = 8
FRAGMENT = 10
"""A run of this many characters of a secret is a leak too (a secret cut by a shortened
message)."""
PACKAGE = Path(orchestrator.__file__).parent


# --- adversarial providers -------------------------------------------------------------------


def echo_of(req: Request) -> str:
    """The request as an adversarial provider quotes it back in an error: its target (where a
    webhook's credential lives) and ``Authorization`` header over and over, so that wherever the
    orchestrator shortens the message, it cuts through a credential; then the body."""
    auth = req.headers.get("authorization", "")
    creds = " ".join([f"{req.target} {auth}"] * 12)
    body = req.body.decode("utf-8", "replace")[:400]
    return f"{ECHO} {req.method} {creds} body={body}"


class EchoingReceiver(NotifyReceiver):
    """The notification receiver, whose every error answer quotes the request."""

    def __init__(self, statuspage_key: str, webhook_token: str) -> None:
        super().__init__(statuspage_key, webhook_token=webhook_token)
        self._req = threading.local()
        self.garbled: dict[str, int] = {}
        """Path prefix -> how many more answers are HTTP 200 with a body that does not decode."""

    def handle(self, req: Request) -> Response | None:
        self._req.current = req
        with self._lock:
            prefix = next(
                (p for p, n in self.garbled.items() if n > 0 and req.path.startswith(p)), None
            )
            if prefix is not None:
                self.garbled[prefix] -= 1
        if prefix is not None:
            return Response(200, b"not gzip at all", {"Content-Encoding": "gzip"})
        return super().handle(req)

    def error(self, status: int, reason: str, message: str) -> Response:
        echo = echo_of(self._req.current)
        resp = super().error(status, reason, f"{message}: {echo}")
        if isinstance(resp.body, bytes):  # Slack's plain-text codes
            resp.body += f" {echo}".encode()
        return resp


class EchoingProxy(Route53FaultProxy):
    """A fault-injecting forwarder whose faults quote the request: in Route53's XML error shape
    (``cloudflare=False``) or in Cloudflare's JSON envelope."""

    def __init__(self, upstream: str, cloudflare: bool) -> None:
        super().__init__(upstream, timeout=10.0)
        self._cloudflare = cloudflare
        self._req = threading.local()

    def handle(self, req: Request) -> Response | None:
        self._req.current = req
        return super().handle(req)

    def error(self, status: int, reason: str, message: str) -> Response:
        echo = f"{message}: {echo_of(self._req.current)}"
        if not self._cloudflare:
            return super().error(status, reason, xml.sax.saxutils.escape(echo))
        code = 10000 if status in (401, 403) else 1000
        body = {
            "success": False,
            "errors": [{"code": code, "message": echo}],
            "messages": [],
            "result": None,
        }
        return Response(status, body)


# --- the secrets of a configuration ----------------------------------------------------------


def secret_fields(model: BaseModel) -> dict[str, SecretStr]:
    """Every SecretStr anywhere in ``model``, by field path (``regions[0].nodes[0].password``).
    Values stay wrapped, so that no traceback or assertion message can show one."""

    def walk(value: Any, where: str) -> Iterator[tuple[str, SecretStr]]:
        if isinstance(value, SecretStr):
            yield where, value
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                yield from walk(getattr(value, name), f"{where}.{name}" if where else name)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                yield from walk(item, f"{where}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{where}[{key!r}]")

    return dict(walk(model, ""))


def needles(secret: SecretStr) -> dict[str, SecretStr]:
    """What to look for, by form: the value and its encodings; for a URL, also its secret path,
    query and long path segments (a webhook's credential lives there); and every run of
    FRAGMENT characters of a secret (or of a URL's long segments), since a shortened message
    may cut a secret in two."""
    value = secret.get_secret_value()
    pieces = {"value": value}
    parts = urlsplit(value)
    is_url = parts.scheme in ("http", "https") and bool(parts.netloc)
    if is_url:
        pieces["url path"] = parts.path
        if parts.query:
            pieces["url query"] = parts.query
        for i, seg in enumerate(s for s in parts.path.split("/") if len(s) >= MIN_SECRET):
            pieces[f"url path segment {i}"] = seg
    forms: dict[str, str] = {}
    for what, piece in pieces.items():
        if not piece.strip("/"):
            continue
        json_escaped = json.dumps(piece)[1:-1]
        for form, text in {
            "": piece,
            ", URL-encoded": quote(piece, safe=""),
            ", URL-encoded (path)": quote(piece),
            ", form-encoded": quote_plus(piece),
            ", JSON-escaped": json_escaped,
            ", JSON-escaped (slashes)": json_escaped.replace("/", "\\/"),
            ", HTML-escaped": html.escape(piece),
            ", base64": base64.b64encode(piece.encode()).decode(),
        }.items():
            forms.setdefault(text, what + form)
    # Runs of FRAGMENT characters of what is random through and through (not a URL's scheme,
    # host or /kind/ prefix).
    random = {w: p for w, p in pieces.items() if w != "url path" and (w == "value") != is_url}
    for what, piece in random.items():
        for i in range(len(piece) - FRAGMENT + 1):
            forms.setdefault(piece[i : i + FRAGMENT], f"{what}, characters {i}-{i + FRAGMENT}")
    return {form: SecretStr(text) for text, form in forms.items()}


@dataclass
class Corpus:
    """Everything scanned: ``(source name, bytes)``."""

    items: list[tuple[str, bytes]] = field(default_factory=list, repr=False)

    def add(self, source: str, data: str | bytes) -> None:
        self.items.append((source, data.encode() if isinstance(data, str) else data))

    def add_tree(self, root: Path) -> list[Path]:
        files = sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            self.add(f"file {p.relative_to(root)}", p.read_bytes())
        return files

    def manifest(self) -> str:
        """What was scanned (sources and sizes), for the record: ``corpus.txt`` in tmp."""
        return "".join(f"{len(data):>9} {source}\n" for source, data in self.items)

    def any_line(self, prefix: str, *words: str) -> bool:
        """Whether a line of a source starting with ``prefix`` holds every one of ``words``."""
        lines = self.text(prefix).splitlines()
        return any(all(w in line for w in words) for line in lines)

    def text(self, prefix: str) -> str:
        return "\n".join(
            d.decode("utf-8", "replace") for s, d in self.items if s.startswith(prefix)
        )

    def leaks(self, secret_values: dict[str, SecretStr]) -> list[str]:
        """One line per (secret field, source) with a leak: where first, in which forms; never
        the secret itself."""
        found: dict[tuple[str, str], tuple[int, list[str]]] = {}
        for where, value in secret_values.items():
            for form, text in needles(value).items():
                pattern = text.get_secret_value().encode()
                for source, data in self.items:
                    at = data.find(pattern)
                    if at >= 0:
                        line = data.count(b"\n", 0, at) + 1
                        first, forms = found.setdefault((where, source), (line, []))
                        found[where, source] = (min(first, line), [*forms, form])
        return [
            f"{where} leaked into {source}, line {line} (as: {'; '.join(forms[:3])}"
            + (f"; and {len(forms) - 3} more forms)" if len(forms) > 3 else ")")
            for (where, source), (line, forms) in sorted(found.items())
        ]


# --- the configuration -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def write_secret(directory: Path, name: str, value: str) -> str:
    path = directory / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return f"file:{path}"


@dataclass
class Setup:
    cfg_path: Path
    cfg: Config
    port: int
    receiver: EchoingReceiver
    route53: EchoingProxy
    cloudflare: EchoingProxy
    api_token: str | None


def hygiene_config(sb: Any, tmp: Path, stack: contextlib.ExitStack) -> Setup:
    """The sandbox's generated config with fast ticks, automatic failover, a state dir in
    ``tmp``, DNS through echoing fault proxies, and every channel on an echoing receiver; every
    secret a ``file:`` reference (random, so that finding one is never a coincidence). The
    stand-ins are stopped when ``stack`` closes."""
    data = yaml.safe_load(Path(sb.config_path()).read_text())
    sec = tmp / "secrets"
    sec.mkdir()
    data["probes"].update(
        {"interval": 0.5, "timeout": 0.3, "failure_threshold": 3, "recovery_threshold": 3}
    )
    port = free_port()
    data["listen"]["port"] = port
    data["state_dir"] = str(tmp / "state")
    data.setdefault("failover", {})["automatic"] = True

    providers = {p["kind"]: p for p in data["dns"]["providers"]}
    route53 = EchoingProxy(providers["route53"]["endpoint_url"], cloudflare=False)
    cloudflare = EchoingProxy(providers["cloudflare"]["base_url"].split("/client/v4")[0], True)
    for standin in (route53, cloudflare):
        standin.start()
        stack.callback(standin.stop)
    providers["route53"]["endpoint_url"] = route53.endpoint_url
    # The sandbox's fake AWS keys ("testing") are too common a word to scan for.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    key_id = "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))
    providers["route53"]["access_key_id"] = write_secret(sec, "aws-key-id", key_id)
    providers["route53"]["secret_access_key"] = write_secret(
        sec, "aws-secret", secrets.token_urlsafe(30)
    )
    providers["cloudflare"]["base_url"] = f"{cloudflare.root_url}/client/v4"
    # Cloudflare fails for good below: the switch needs only the primary supplier (Route53).
    data["dns"]["require"] = "primary"
    data["dns"]["reconcile_interval"] = "2s"

    sp_key, wh_token = secrets.token_hex(16), secrets.token_urlsafe(24)
    receiver = EchoingReceiver(statuspage_key=sp_key, webhook_token=wh_token)
    receiver.start()
    stack.callback(receiver.stop)
    quick = {"timeout": "2s", "retry": {"attempts": 2, "initial_delay": "100ms"}}
    hook = secrets.token_urlsafe(18)
    data["notifications"] = {
        "monitoring_period": "2s",
        "channels": [
            {
                "name": "slack",
                "kind": "slack",
                "webhook_url": write_secret(
                    sec, "slack.url", receiver.slack_url(f"T0HYG/B0HYG/{hook}")
                ),
                "backup": "discord",
                **quick,
            },
            {
                "name": "discord",
                "kind": "discord",
                "webhook_url": write_secret(
                    sec, "discord.url", receiver.discord_url(f"4242/{secrets.token_urlsafe(30)}")
                ),
                **quick,
            },
            {
                "name": "pagerduty",
                "kind": "pagerduty",
                "routing_key": write_secret(sec, "pd.key", secrets.token_hex(16)),
                "url": receiver.pagerduty_url,
                **quick,
            },
            {
                "name": "statuspage",
                "kind": "statuspage",
                "api_key": write_secret(sec, "sp.key", sp_key),
                "page_id": "hygiene-page",
                "base_url": receiver.statuspage_base,
                **quick,
            },
            {
                "name": "execs",
                "kind": "webhook",
                "url": receiver.webhook_url("execs"),
                "token": write_secret(sec, "webhook.token", wh_token),
                **quick,
            },
        ],
        "audiences": [
            {"name": "bcp-team", "channels": ["slack", "pagerduty"]},
            {"name": "engineering", "channels": ["slack"], "update_interval": "1h"},
            {"name": "executives", "channels": ["execs"]},
            {"name": "customers", "channels": ["statuspage"], "template": "customer"},
        ],
    }
    api_token = None
    if "api" in Config.model_fields:  # the control API's bearer tokens, where it has them
        api_token = secrets.token_hex(24)
        data["api"] = {
            "tokens": [
                {
                    "name": "hygiene",
                    "token": write_secret(sec, "api.token", api_token),
                    "role": "operator",
                }
            ]
        }
    path = tmp / "hygiene.yaml"
    path.write_text(yaml.safe_dump(data))
    return Setup(path, load_config(path), port, receiver, route53, cloudflare, api_token)


# --- the daemon, the CLI, the HTTP endpoints -------------------------------------------------


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
        "HELIOS_WRONG_TOKEN": "not-the-token-" + "x" * 20,
    }


def run_cli(corpus: Corpus, cfg_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "orchestrator", *args, "--config", str(cfg_path)]
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=child_env(), timeout=60, check=False
    )
    name = "orchestrator " + " ".join(args)
    corpus.add(f"stdout of `{name}`", proc.stdout)
    corpus.add(f"stderr of `{name}`", proc.stderr)
    with cfg_path.with_name("cli.log").open("a") as log:  # for the record
        log.write(f"$ {name}  (exit {proc.returncode})\n{proc.stdout}{proc.stderr}\n")
    return proc


def get_paths(ids: dict[str, str]) -> list[str]:
    """Every GET route the daemon's server declares (read from its source, so new endpoints are
    scraped too); a ``{placeholder}`` is filled from ``ids`` by the path segment before it
    (``/v1/incidents/{id}`` with ``ids["incidents"]``), or the route is skipped."""
    sources = [PACKAGE / "observability" / "server.py", *sorted((PACKAGE / "api").rglob("*.py"))]
    pattern = re.compile(r"""(?:add_get|\.get)\(\s*["'](/[^"']*)["']""")
    paths = {"/metrics", "/healthz", "/readyz", "/v1/status"}
    for src in sources:
        if src.is_file():
            paths.update(pattern.findall(src.read_text()))
    filled = []
    for p in sorted(paths):
        segments = p.split("/")
        for i, seg in enumerate(segments):
            if seg.startswith("{"):
                segments[i] = ids.get(segments[i - 1], "")
        if all(segments[1:]):
            filled.append("/".join(segments))
    return filled


def scrape(corpus: Corpus, setup: Setup, phase: str, **ids: str) -> int:
    """GET every route (see :func:`get_paths`); returns how many answered 200."""
    ok = 0
    headers = {"Authorization": f"Bearer {setup.api_token}"} if setup.api_token else {}
    with httpx.Client(base_url=f"http://127.0.0.1:{setup.port}", timeout=5) as client:
        for path in get_paths(ids):
            try:
                resp = client.get(path, headers=headers if path.startswith("/v1") else {})
            except httpx.HTTPError as exc:
                corpus.add(f"GET {path} ({phase}) error", f"{type(exc).__name__}: {exc}")
                continue
            ok += resp.status_code == 200
            corpus.add(f"GET {path} ({phase}, HTTP {resp.status_code})", resp.content)
    return ok


def wait_incident(cfg: Config, timeout: float) -> Incident:
    store = IncidentStore(cfg.state_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [i for i in store.all() if i.when("resolved") is not None]
        if done:
            return done[0]
        time.sleep(0.25)
    found = [(i.id, i.status, [e["event"] for e in i.timeline]) for i in store.all()]
    raise AssertionError(f"no incident resolved within {timeout}s: {found}")


def wait_all_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    reason = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the daemon exited early ({proc.returncode})"
        try:
            resp = httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=2)
            reason = resp.json().get("reason") if resp.status_code == 200 else resp.status_code
        except (httpx.HTTPError, ValueError) as exc:
            reason = type(exc).__name__
        if reason == "ALL_HEALTHY":
            return
        time.sleep(0.2)
    raise AssertionError(f"the daemon saw no ALL_HEALTHY tick within {timeout}s (last: {reason})")


def inject_daemon_faults(setup: Setup) -> None:
    """Faults the failover meets and survives: Slack down for good (Discord takes over),
    PagerDuty and Statuspage each refuse once, two Route53 writes fail, Cloudflare rejects
    every call (400, its message quoting the request)."""
    faults = setup.receiver.faults
    faults.inject(status=500, count=None, path_contains="/slack/")
    setup.receiver.garbled["/slack/"] = 4
    faults.inject(status=429, count=1, path_contains="/pagerduty/")
    faults.inject(status=503, count=1, methods={"POST"}, path_contains="/statuspage/")
    setup.route53.faults.inject(status=503, count=2, methods={"POST"})
    setup.cloudflare.faults.inject(status=400, count=None)


def inject_cli_faults(setup: Setup) -> None:
    """Every channel fails the communication test, each in its own way."""
    faults = setup.receiver.faults
    faults.clear()
    faults.inject(status=403, count=None, path_contains="/slack/")
    faults.inject(status=404, count=None, path_contains="/discord/")
    faults.inject(status=400, count=None, path_contains="/pagerduty/")
    faults.inject(status=401, count=None, path_contains="/statuspage/")
    faults.inject(status=500, count=None, path_contains="/webhook/")


# --- the test --------------------------------------------------------------------------------

DAEMON_CLI = (  # while the daemon runs, every channel failing (see inject_cli_faults)
    ("status",),
    ("status", "--output", "json"),
    ("notify", "--test"),
    ("notify", "--test", "--output", "json"),
    ("drill",),  # refused (a region is down): a drill record with its reasons, and reports
    ("failover", "--dry-run"),
    # Through the control API (the config's operator token): dry runs and a real pause/resume,
    # and a request with a wrong token (its refusal is logged).
    ("failover", "--dry-run", "--daemon"),
    ("switchover", "--to", "eu", "--dry-run", "--daemon"),
    ("pause", "--daemon", "--reason", "hygiene"),
    ("resume", "--daemon"),
    ("drill", "--dry-run", "--daemon"),
    ("ack", "--daemon", "--token", "env:HELIOS_WRONG_TOKEN"),
)


def offline_cli(incident_id: str, drill_ids: list[str]) -> list[tuple[str, ...]]:
    """Commands run after the daemon stopped."""
    commands: list[tuple[str, ...]] = [
        ("incidents",),
        ("incidents", "--output", "json"),
        ("incidents", incident_id),
        ("incidents", incident_id, "--output", "json"),
        ("report", "--list"),
        ("dns", "status"),
        ("config", "check"),
    ]
    for report_id in (incident_id, *drill_ids):
        commands += [("report", report_id, "--format", f) for f in ("md", "json", "html")]
    return commands


def run_daemon_through_a_failover(
    sb: Any, setup: Setup, corpus: Corpus, out: Path, err: Path
) -> tuple[int, Incident, int]:
    """Start ``orchestrator run``, kill the primary, wait until the incident is resolved, run
    the CLI against the live daemon, scrape its endpoints all along; stop it with SIGTERM.
    Returns (exit code, the incident, how many endpoints answered 200 once resolved)."""
    state = Path(setup.cfg.state_dir)
    argv = [sys.executable, "-m", "orchestrator", "run", "--config", str(setup.cfg_path)]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [*argv, "--log-level", "debug"], stdout=stdout, stderr=stderr, env=child_env()
        )
        try:
            wait_all_healthy(setup.port, proc, 30)
            scrape(corpus, setup, "healthy")
            sb.kill("us-east")
            for i in range(6):  # during detection and failover
                time.sleep(0.5)
                scrape(corpus, setup, f"failover {i}")
            inc = wait_incident(setup.cfg, 60)
            answered = scrape(corpus, setup, "resolved", incidents=inc.id)
            inject_cli_faults(setup)
            for args in DAEMON_CLI:
                run_cli(corpus, setup.cfg_path, *args)
            ids = {"incidents": inc.id}
            for drill in sorted((state / "drills").glob("*.json")):
                ids["drills"] = drill.stem
            scrape(corpus, setup, "after the CLI", **ids)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(10)
    return code, inc, answered


def test_no_secret_reaches_logs_metrics_reports_or_errors(
    fresh_sandbox: Any, tmp_path: Path
) -> None:
    out, err = tmp_path / "daemon.stdout", tmp_path / "daemon.stderr"
    corpus = Corpus()
    with contextlib.ExitStack() as stack:
        setup = hygiene_config(fresh_sandbox, tmp_path, stack)
        state = Path(setup.cfg.state_dir)
        secret_values = secret_fields(setup.cfg)
        inject_daemon_faults(setup)
        code, inc, answered = run_daemon_through_a_failover(fresh_sandbox, setup, corpus, out, err)
        drill_ids = [p.stem for p in sorted((state / "drills").glob("*.json"))]
        for args in offline_cli(inc.id, drill_ids):
            run_cli(corpus, setup.cfg_path, *args)
    corpus.add("daemon stdout", out.read_bytes())
    corpus.add("daemon stderr", err.read_bytes())
    files = corpus.add_tree(state)
    (tmp_path / "corpus.txt").write_text(corpus.manifest())

    # Leaks first: a leak is a failure whatever else went wrong.
    leaks = corpus.leaks(secret_values)
    if leaks:
        pytest.fail("secrets leaked:\n" + "\n".join(leaks), pytrace=False)

    # The scan is only worth something if it covered the secrets and a meaningful corpus.
    # (Booleans only: pytest must never print a scanned text in an assertion message.)
    kinds = {where.rsplit(".", 1)[-1] for where in secret_values}
    expected = {"password", "secret_access_key", "access_key_id", "api_token", "webhook_url"}
    expected |= {"routing_key", "api_key", "token"}
    assert expected <= kinds, f"secret fields found: {sorted(secret_values)}"
    short = [w for w, v in secret_values.items() if len(v.get_secret_value()) < MIN_SECRET]
    assert not short, f"secrets too short to scan for: {short}"
    assert code == 0, f"the daemon exited {code}"
    assert inc.status == "failed_over", inc.status
    names = sorted(str(p.relative_to(state)) for p in files)
    assert any(n.startswith("journal") for n in names), names
    assert f"incidents/{inc.id}.json" in names, names
    for ext in ("md", "json", "html"):
        assert f"reports/{inc.id}.{ext}" in names, names
    assert drill_ids, "the CLI drill left no record"
    log_lines = len(corpus.text("daemon std").splitlines())
    assert log_lines > 50, f"the daemon logged almost nothing ({log_lines} lines)"
    assert answered >= 3, f"only {answered} of the daemon's endpoints answered 200"
    metrics_ok = "helios_" in corpus.text("GET /metrics")
    assert metrics_ok, "no helios metrics scraped"
    # The adversarial answers reached the logs, the records and the CLI's output.
    for where, words in (
        ("daemon std", ("NOTIFY_FAILED", ECHO)),
        ("daemon std", ("DNS_PROVIDER_DEGRADED", "cloudflare", ECHO)),
        ("stdout of `orchestrator notify --test`", ("statuspage", ECHO)),
        ("stdout of `orchestrator notify --test`", ("execs", ECHO)),
        ("file incidents/", (ECHO,)),
    ):
        echoed = corpus.any_line(where, *words)
        assert echoed, f"no line with {words} in {where}..."
