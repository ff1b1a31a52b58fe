"""The CLI's client of a running daemon's control API (``--daemon``).

Guarantees: the token is read from ``--token`` (``env:NAME`` or ``file:PATH``), else from
``$HELIOS_API_TOKEN``, else the config's first operator token, and it is never printed; every
call has a timeout; an answer the daemon refused becomes the CLI error with the daemon's own
message and the matching exit code (2 bad request or token, 4 refused by a rail or busy, 1
otherwise); polling a run or drill gives up after a deadline with a clear message (the run goes
on in the daemon).
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from orchestrator.config import Config
from orchestrator.config_types import resolve_secret
from orchestrator.errors import Busy, HeliosError, UnsafePlan, UsageError

TOKEN_ENV = "HELIOS_API_TOKEN"  # noqa: S105 (the variable's name, not a token)


def daemon_url(cfg: Config, given: str | None) -> str:
    """``given``, or the config's listen address (a wildcard bind is reached on loopback)."""
    if given:
        if not given.startswith(("http://", "https://")):
            raise UsageError(f"--daemon {given!r}: give a URL such as http://127.0.0.1:9187")
        return given.rstrip("/")
    host = cfg.listen.address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{cfg.listen.port}"


def api_token(cfg: Config, ref: str | None) -> str | None:
    """The bearer token to present (None: none configured anywhere)."""
    if ref:
        try:
            return resolve_secret(ref).get_secret_value()
        except ValueError as exc:
            raise UsageError(f"--token: {exc}") from None
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    for t in cfg.api.tokens:
        if t.role == "operator":
            return t.token.get_secret_value()
    return None


class DaemonClient:
    """Synchronous (the CLI has nothing else to do while it waits)."""

    def __init__(self, base: str, token: str | None, timeout: float = 30.0) -> None:
        self.base = base
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self._call("GET", path, params=params or None)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, json=body)

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TimeoutException:
            raise HeliosError(f"the daemon at {self.base} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise HeliosError(f"no daemon answered at {self.base}: {exc}") from None
        try:
            doc = resp.json()
        except ValueError:
            raise HeliosError(
                f"{self.base}{path} answered HTTP {resp.status_code} without JSON"
            ) from None
        if resp.status_code < 400 and isinstance(doc, dict):
            return doc
        raise _error(resp.status_code, doc)

    def wait(self, path: str, done: Any, deadline_s: float, every: float = 0.5) -> dict[str, Any]:
        """GET ``path`` until ``done(doc)``; HeliosError after ``deadline_s`` seconds."""
        end = time.monotonic() + deadline_s
        while True:
            doc = self.get(path)
            if done(doc):
                return doc
            if time.monotonic() > end:
                raise HeliosError(
                    f"still running after {deadline_s:g}s; it goes on in the daemon "
                    f"(follow it with GET {self.base}{path})"
                )
            time.sleep(every)


def _error(status: int, doc: Any) -> HeliosError:
    err = doc.get("error", {}) if isinstance(doc, dict) else {}
    message = str(err.get("message") or f"HTTP {status}")
    code = str(err.get("code") or "")
    if status in (401, 403):
        return UsageError(f"the daemon refused the request ({status}): {message}")
    if status in (400, 404, 413, 422):
        return UsageError(f"the daemon refused the request: {message}")
    if status == 409:
        return Busy(message) if code == "BUSY" else UnsafePlan(message)
    return HeliosError(f"the daemon could not do it ({status} {code}): {message}")


def add_daemon_arguments(parser: Any) -> None:
    """``--daemon [URL]`` and ``--token REF`` for a mutating command."""
    parser.add_argument(
        "--daemon",
        nargs="?",
        const="",
        metavar="URL",
        help="ask the running daemon through its control API (default URL: the config's "
        "listen address) instead of acting from this process",
    )
    parser.add_argument(
        "--token",
        metavar="REF",
        help=f"with --daemon: the API token as env:NAME or file:PATH (default: ${TOKEN_ENV}, "
        "else the config's first operator token)",
    )


def client_for(cfg: Config, args: Any) -> DaemonClient:
    return DaemonClient(daemon_url(cfg, args.daemon), api_token(cfg, args.token))


def require_daemon_when_coordinated(cfg: Config, args: Any) -> None:
    """With several instances (``coordination``), only the leader acts: a mutating command
    run from the CLI's own process is refused (UsageError) unless it is a dry run."""
    if cfg.coordination is not None and args.daemon is None and not args.dry_run:
        raise UsageError(
            "coordination is configured, so only the leader acts: run this through the "
            "leader's control API with --daemon URL (or --dry-run to see the plan from here)"
        )
