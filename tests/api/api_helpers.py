"""A real daemon process for the control-API tests: three regions whose nodes refuse
connections (loopback ports nothing listens on), so every answer is real but nothing can move."""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    url: str
    operator: str
    viewer: str
    state_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}


def write_config(tmp: Path, port: int, tokens: list[dict[str, str]] | None, **api: object) -> Path:
    secrets_dir = tmp / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    regions = []
    for i, name in enumerate(("us-east", "us-west", "eu"), start=1):
        regions.append(
            {
                "name": name,
                "priority": i,
                "nodes": [
                    {
                        "name": f"{name}-1",
                        "dsn": f"host=127.0.0.1 port={free_port()} dbname=app user=helios",
                        "dns_target": f"127.0.0.{i}",
                    }
                ],
            }
        )
    doc: dict[str, object] = {
        "service": "helios-db",
        "regions": regions,
        "probes": {"interval": "300ms", "timeout": "200ms", "heartbeat": False},
        "listen": {"address": "127.0.0.1", "port": port},
        "state_dir": str(tmp / "state"),
    }
    api_doc: dict[str, object] = dict(api)
    if tokens is not None:
        entries = []
        for t in tokens:
            path = secrets_dir / f"{t['name']}.token"
            path.write_text(t["value"] + "\n")
            path.chmod(0o600)
            entries.append({"name": t["name"], "token": f"file:{path}", "role": t["role"]})
        api_doc["tokens"] = entries
    doc["api"] = api_doc
    path = tmp / "helios.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def start_daemon(tmp: Path, tokens: list[dict[str, str]] | None, **api: object) -> Daemon:
    port = free_port()
    cfg = write_config(tmp, port, tokens, **api)
    log = tmp / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "run", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError(f"daemon not ready: {log.read_text()}")
    op = next((t["value"] for t in tokens or [] if t["role"] == "operator"), "")
    viewer = next((t["value"] for t in tokens or [] if t["role"] == "viewer"), "")
    return Daemon(url, op, viewer, tmp / "state", proc, log)


def stop_daemon(d: Daemon) -> int:
    d.proc.send_signal(signal.SIGTERM)
    try:
        return d.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait()
        raise AssertionError("daemon did not stop within 15 s of SIGTERM") from None


def tokens() -> list[dict[str, str]]:
    return [
        {"name": "oncall", "value": secrets.token_hex(24), "role": "operator"},
        {"name": "grafana", "value": secrets.token_hex(24), "role": "viewer"},
    ]
