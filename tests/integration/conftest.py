"""Shared fixtures for tests against the real three-region PostgreSQL sandbox.

``sandbox`` is session-scoped: one sandbox (three postmasters) serves every integration test.
Tests that break it (kill, stop, hang) must leave it healthy again: all three regions running,
``us-east`` primary.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orchestrator.errors import SandboxError
from orchestrator.sandbox import Sandbox, find_pg_binaries

T = TypeVar("T")

PORT_SCAN_START = 56400
PORT_SCAN_END = 58400
BLOCK = 16


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def reserve_ports() -> tuple[int, int]:
    """Find a block of 16 free ports from 56400 upward: 3 PostgreSQL, metrics at +3, and the
    DNS stack (Route53, Cloudflare, Google and their name servers) at +10..+15.

    Returns ``(base_port, lock_fd)``. The flock on ``/tmp/helios-sandbox-ports-<base>.lock``
    keeps concurrent test sessions on this machine from picking the same block; close the fd
    to release it.
    """
    for base in range(PORT_SCAN_START, PORT_SCAN_END, BLOCK):
        fd = os.open(f"/tmp/helios-sandbox-ports-{base}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if all(_port_free(p) for p in range(base, base + BLOCK)):
            return base, fd
        os.close(fd)
    raise RuntimeError(f"no {BLOCK} consecutive free ports in {PORT_SCAN_START}-{PORT_SCAN_END}")


def processes_under(state_dir: Path) -> list[tuple[int, str]]:
    """Live processes whose command line or working directory mentions ``state_dir``."""
    found = []
    prefix = str(state_dir)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if stat != "Z" and (prefix in cmd or cwd.startswith(prefix)):
            found.append((pid, cmd.strip()))
    return found


def wait_until(
    predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; exceptions count as "not yet".

    Returns that value; raises AssertionError (with the last exception) after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            desc = what or getattr(predicate, "__name__", "condition")
            raise AssertionError(f"{desc} not met within {timeout:g}s (last error: {last!r})")
        time.sleep(interval)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """``wait_for(predicate, timeout=15.0, interval=0.1, what="")``: see :func:`wait_until`."""
    return wait_until


@pytest.fixture
def leftover_processes() -> Callable[[Path], list[tuple[int, str]]]:
    """``leftover_processes(path)``: see :func:`processes_under`."""
    return processes_under


@contextlib.contextmanager
def sandbox_in_tmp(prefix: str) -> Iterator[Sandbox]:
    """A running sandbox in a fresh 0755 directory under /tmp with its own 16-port block,
    destroyed on exit (also when the test fails); asserts nothing of it is left running."""
    try:
        find_pg_binaries()
    except SandboxError as exc:
        # `make test` installs them; a silent skip would hide the whole integration suite.
        pytest.fail(f"PostgreSQL server binaries not available: {exc}")
    state_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    state_dir.chmod(0o755)  # the postgres OS user must traverse it
    base_port, lock_fd = reserve_ports()
    sb = Sandbox(state_dir, base_port=base_port, metrics_port=base_port + 3)
    try:
        sb.up()
        yield sb
    finally:
        try:
            sb.destroy()
        finally:
            os.close(lock_fd)
            leftovers = processes_under(state_dir)
            for pid, _cmd in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(state_dir, ignore_errors=True)
            assert not leftovers, f"processes left running after destroy(): {leftovers}"


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The shared session sandbox; tests that break it must leave it healthy again."""
    with sandbox_in_tmp("helios-sandbox-") as sb:
        yield sb


@pytest.fixture
def fresh_sandbox() -> Iterator[Sandbox]:
    """A sandbox of its own for one destructive test."""
    with sandbox_in_tmp("helios-fresh-") as sb:
        yield sb
