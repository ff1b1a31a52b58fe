"""The sd_notify client: no-op outside systemd, datagrams to a path or an abstract socket,
WATCHDOG_PID, and watchdog pings that stop when ticks stall."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orchestrator.loop import DaemonState
from orchestrator.model import Topology
from orchestrator.observability.sdnotify import SystemdNotifier, watchdog_pings


@contextlib.contextmanager
def listener(name: str) -> Iterator[socket.socket]:
    """A non-blocking AF_UNIX datagram socket bound to ``name`` ('@x': abstract namespace)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind("\0" + name[1:] if name.startswith("@") else name)
    with sock:
        yield sock


def drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.fixture
def sock_path() -> Iterator[str]:
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sd-") as d:
        yield str(Path(d) / "notify")


def test_without_notify_socket_everything_is_a_no_op() -> None:
    sd = SystemdNotifier.from_env({"WATCHDOG_USEC": "2000000"})
    assert not sd.enabled
    assert sd.watchdog_period is None
    assert not sd.ready("x")
    assert not sd.judged("x")
    assert not sd.status("x")
    assert not sd.watchdog()
    assert not sd.stopping()
    sd.close()


def test_notifications_reach_a_path_socket(sock_path: str) -> None:
    with (
        listener(sock_path) as rx,
        contextlib.closing(
            SystemdNotifier.from_env({"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "3000000"})
        ) as sd,
    ):
        assert sd.watchdog_period == 1.5
        assert sd.judged("All regions healthy.")
        assert not sd.judged("All regions  healthy.\n")  # same sentence once normalised
        assert sd.judged("us-east is DOWN\nfailing over")
        assert sd.watchdog()
        assert sd.stopping("stopping")
        assert drain(rx) == [
            "READY=1\nSTATUS=All regions healthy.",
            "STATUS=us-east is DOWN failing over",
            "WATCHDOG=1",
            "STOPPING=1\nSTATUS=stopping",
        ]


def test_notifications_reach_an_abstract_socket() -> None:
    name = f"@helios-sd-test-{uuid.uuid4().hex}"
    with (
        listener(name) as rx,
        contextlib.closing(SystemdNotifier.from_env({"NOTIFY_SOCKET": name})) as sd,
    ):
        assert sd.watchdog_period is None
        assert sd.ready("up")
        assert drain(rx) == ["READY=1\nSTATUS=up"]


def test_watchdog_pid_must_be_ours(sock_path: str) -> None:
    env = {"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "2000000"}
    other = SystemdNotifier.from_env({**env, "WATCHDOG_PID": str(os.getpid() + 1)})
    ours = SystemdNotifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())})
    invalid = SystemdNotifier.from_env({**env, "WATCHDOG_USEC": "soon"})
    for sd in (other, ours, invalid):
        sd.close()
    assert other.watchdog_period is None
    assert ours.watchdog_period == 1.0
    assert invalid.watchdog_period is None


def test_send_errors_are_logged_once_and_never_raised(sock_path: str) -> None:
    # Nobody listens on the socket: every send fails (ENOENT).
    with (
        capture_logs() as logs,
        contextlib.closing(SystemdNotifier.from_env({"NOTIFY_SOCKET": sock_path})) as sd,
    ):
        assert sd.enabled
        assert not sd.ready("x")
        assert not sd.watchdog()
        assert not sd.stopping()
    failures = [e for e in logs if e.get("reason") == "SD_NOTIFY_FAILED"]
    # One warning; the rest at debug level (filtered out if another test set the level to info).
    assert [e["log_level"] for e in failures if e["log_level"] != "debug"] == ["warning"]


def state(interval: float = 0.05) -> DaemonState:
    topo = Topology(service="s", regions=("a",), nodes=(), rpo=1.0, rto=1.0)
    return DaemonState(topo=topo, priorities={"a": 1}, interval=interval)


async def test_watchdog_pings_stop_while_ticks_stall_and_resume(sock_path: str) -> None:
    st = state()
    st.last_cycle_monotonic = time.monotonic() - 60  # the loop is stuck
    stop = asyncio.Event()
    with (
        listener(sock_path) as rx,
        contextlib.closing(
            SystemdNotifier.from_env({"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "100000"})
        ) as sd,
    ):
        assert sd.watchdog_period == 0.05
        task = asyncio.create_task(watchdog_pings(sd, st.live, stop))
        await asyncio.sleep(0.3)
        assert drain(rx) == []  # no tick for 60 s: not a single ping
        st.last_cycle_monotonic = time.monotonic()  # ticks complete again
        await asyncio.sleep(0.3)
        pings = drain(rx)
        assert set(pings) == {"WATCHDOG=1"}
        assert 3 <= len(pings) <= 8
        stop.set()
        await asyncio.wait_for(task, 1)
        await asyncio.sleep(0.1)
        assert drain(rx) == []  # nothing after stop


async def test_failing_ticks_withhold_pings(sock_path: str) -> None:
    st = state()
    st.last_cycle_monotonic = time.monotonic()
    st.consecutive_errors = 3
    stop = asyncio.Event()
    with (
        listener(sock_path) as rx,
        contextlib.closing(
            SystemdNotifier.from_env({"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "100000"})
        ) as sd,
    ):
        task = asyncio.create_task(watchdog_pings(sd, st.live, stop))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, 1)
        assert drain(rx) == []


async def test_no_watchdog_means_no_task_work() -> None:
    sd = SystemdNotifier.from_env({})
    await asyncio.wait_for(watchdog_pings(sd, state().live, asyncio.Event()), 1)
