"""Shared fixtures for tests against the real three-region PostgreSQL sandbox.

``sandbox`` is session-scoped: one sandbox (three postmasters) serves every integration test.
Tests that break it (kill, stop, hang) must leave it healthy again: all three regions running,
``us-east`` primary.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orchestrator.errors import SandboxError
from orchestrator.sandbox import Sandbox, find_pg_binaries, scratch

T = TypeVar("T")

# The scratch-sandbox tooling is shared with the benchmark (orchestrator.sandbox.scratch).
processes_under = scratch.processes_under


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
    """A scratch sandbox for tests; missing PostgreSQL binaries fail the test (``make test``
    installs them: a silent skip would hide the whole integration suite)."""
    try:
        find_pg_binaries()
    except SandboxError as exc:
        pytest.fail(f"PostgreSQL server binaries not available: {exc}")
    with scratch.scratch_sandbox(prefix) as sb:
        yield sb


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leftover check for the partition lab: any network namespace a lab of this session
    created and did not delete is cleaned up here (its processes killed, the namespace
    deleted) and fails the session."""
    import sys

    netlab = sys.modules.get("netlab")
    if netlab is None:
        return
    left = netlab.cleanup_leftovers()
    if left:
        sys.stderr.write(f"\nERROR: network namespaces left behind (now deleted): {left}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
