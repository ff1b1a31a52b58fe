"""`orchestrator run` under a (simulated) systemd: READY, STATUS, WATCHDOG and STOPPING on a
local notify socket, and a clean exit on SIGTERM within the unit's TimeoutStopSec."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from daemon_helpers import fast_config

pytestmark = pytest.mark.sandbox

WATCHDOG_USEC = 2_000_000  # pings due every second
STOP_TIMEOUT = 45.0  # the unit's TimeoutStopSec
# Python with PR_SET_MDWE (Linux >= 6.3): no memory may become writable and executable, the
# kernel's own form of the unit's MemoryDenyWriteExecute=yes.
MDWE_LAUNCHER = (
    "import ctypes, runpy, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:\n"
    "    raise SystemExit('PR_SET_MDWE failed')\n"
    "sys.argv[0] = 'orchestrator'\n"
    "runpy.run_module('orchestrator', run_name='__main__')\n"
)


@dataclass
class Notifications:
    """Datagrams received on the notify socket, with their monotonic arrival times."""

    received: list[tuple[float, str]] = field(default_factory=list)

    def assignments(self, key: str) -> list[tuple[float, str]]:
        return [
            (t, line.split("=", 1)[1])
            for t, msg in self.received
            for line in msg.split("\n")
            if line.startswith(f"{key}=")
        ]

    async def until(self, key: str, value: str | None, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, v in self.assignments(key):
                if value is None or v == value:
                    return t
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {key}={value or '*'} within {timeout}s: {self.received}")


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def write_config(sandbox: Any, directory: Path) -> tuple[Path, int]:
    """The fast sandbox config (automatic failover off) on a fixed free port."""
    fast_config(sandbox, automatic=False)
    data = yaml.safe_load(Path(sandbox.config_path()).with_name("fast.yaml").read_text())
    assert data["failover"]["automatic"] is False
    port = free_port()
    data["listen"]["port"] = port
    path = directory / "systemd.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, port


def mdwe_supported() -> bool:
    probe = "import ctypes; raise SystemExit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return subprocess.run([sys.executable, "-c", probe], check=False, timeout=30).returncode == 0


@contextlib.asynccontextmanager
async def daemon_under_systemd(
    cfg_path: Path, notify_socket: str, log_path: Path, launcher: list[str]
) -> AsyncIterator[tuple[subprocess.Popen[bytes], Notifications]]:
    """Bind the notify socket, start `orchestrator run` with NOTIFY_SOCKET and WATCHDOG_USEC,
    collect datagrams without blocking the event loop; kill the daemon by PID if still up."""
    address = "\0" + notify_socket[1:] if notify_socket.startswith("@") else notify_socket
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.setblocking(False)
    rx.bind(address)
    notes = Notifications()
    loop = asyncio.get_running_loop()

    async def collect() -> None:
        while True:
            data = await loop.sock_recv(rx, 4096)
            notes.received.append((time.monotonic(), data.decode()))

    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "NOTIFY_SOCKET": notify_socket,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
    }
    with rx, log_path.open("wb") as log:
        collector = asyncio.create_task(collect())
        proc = subprocess.Popen(
            [*launcher, "run", "--config", str(cfg_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            yield proc, notes
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 10)
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector


async def sigterm_and_wait(
    proc: subprocess.Popen[bytes], notes: Notifications
) -> tuple[float, float]:
    """SIGTERM; STOPPING=1 must arrive and the process exit 0 within TimeoutStopSec. Returns
    (seconds to STOPPING=1, seconds to exit)."""
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    stopping = await notes.until("STOPPING", "1", timeout=STOP_TIMEOUT)
    code = await asyncio.to_thread(proc.wait, STOP_TIMEOUT)
    exited = time.monotonic() - t0
    assert code == 0
    assert exited < STOP_TIMEOUT
    return stopping - t0, exited


def tick_sentences(log_path: Path) -> list[str]:
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line[:1] == "{"]
    return [e["event"] for e in events if "cycle" in e and "reason" in e]


async def test_run_notifies_ready_status_watchdog_and_stopping(
    sandbox: Any, tmp_path: Path
) -> None:
    cfg_path, port = write_config(sandbox, tmp_path)
    log_path = tmp_path / "daemon.log"
    with tempfile.TemporaryDirectory(prefix="sd-") as short:  # AF_UNIX paths: <= 107 bytes
        notify_path = str(Path(short) / "notify")
        async with daemon_under_systemd(
            cfg_path, notify_path, log_path, [sys.executable, "-m", "orchestrator"]
        ) as (proc, notes):
            started = time.monotonic()
            ready = await notes.until("READY", "1", timeout=30)
            # Ready for systemd is ready for the load balancer: /readyz answers 200 right away.
            async with httpx.AsyncClient(timeout=5) as client:
                resp = await client.get(f"http://127.0.0.1:{port}/readyz")
            assert resp.status_code == 200, resp.text
            await asyncio.sleep(4.5)  # ~9 ticks, ~4 watchdog periods
            stop_after, exit_after = await sigterm_and_wait(proc, notes)
    first = notes.received[0]
    ready_msg = next(msg for _, msg in notes.received if "READY=1" in msg)
    pings = [t for t, _ in notes.assignments("WATCHDOG")]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    statuses = [v for _, v in notes.assignments("STATUS")]
    sentences = tick_sentences(log_path)
    print(  # the observed sequence, for the record (pytest -s)
        f"READY after {ready - started:.2f}s ({ready_msg!r}); first datagram {first[1]!r}; "
        f"{len(pings)} pings, gaps {min(gaps):.2f}-{max(gaps):.2f}s; "
        f"{len(statuses)} STATUS for {len(sentences)} ticks; STOPPING {stop_after:.2f}s, "
        f"exit 0 {exit_after:.2f}s after SIGTERM; STATUS sequence {statuses}"
    )
    # READY=1 comes with the first tick's sentence, after the listener and before any STATUS.
    assert ready_msg == f"READY=1\nSTATUS={sentences[0]}"
    assert "READY=1" not in "".join(msg for t, msg in notes.received if t < ready)
    # STATUS= carries tick sentences (sent only on change), then the stopping note.
    assert statuses[0] == sentences[0]
    assert set(statuses[:-1]) <= set(sentences)
    assert all(a != b for a, b in itertools.pairwise(statuses))
    assert statuses[-1].startswith("stopping")
    # WATCHDOG=1 every WATCHDOG_USEC/2 = 1 s (slack for a loaded machine).
    assert len(pings) >= 4
    assert max(gaps) < 1.5, gaps
    assert notes.received[-1][1].startswith("STOPPING=1")
    assert "Traceback" not in log_path.read_text()


async def test_abstract_notify_socket_and_no_writable_executable_memory(
    sandbox: Any, tmp_path: Path
) -> None:
    cfg_path, port = write_config(sandbox, tmp_path)
    launcher = [sys.executable, "-m", "orchestrator"]
    if mdwe_supported():
        launcher = [sys.executable, "-c", MDWE_LAUNCHER]
    name = f"@helios-test-{uuid.uuid4().hex}"
    async with daemon_under_systemd(cfg_path, name, tmp_path / "daemon.log", launcher) as (
        proc,
        notes,
    ):
        await notes.until("READY", "1", timeout=30)
        await notes.until("WATCHDOG", "1", timeout=5)
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        await sigterm_and_wait(proc, notes)
