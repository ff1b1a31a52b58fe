"""Drill smoke checks over HTTP against a real local server: the expected status passes, any
other status, a timeout or a refused connection fails with the cause named, never raises."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from orchestrator.config_bcp import HttpSmokeCheck, SqlSmokeCheck
from orchestrator.drillload import smoke_check
from orchestrator.errors import HeliosError


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def down(_: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/down", down)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def no_target() -> tuple[str, str | None]:
    raise HeliosError("the service name does not resolve")


def http(url: str, **kw: object) -> HttpSmokeCheck:
    return HttpSmokeCheck.model_validate({"name": "api", "kind": "http", "url": url, **kw})


async def test_expected_status_passes(server: str) -> None:
    r = await smoke_check(http(f"{server}/ok"), no_target)
    assert r["ok"] is True and r["detail"] == "HTTP 200" and r["kind"] == "http"
    assert r["latency_ms"] >= 0


async def test_other_status_fails(server: str) -> None:
    r = await smoke_check(http(f"{server}/down"), no_target)
    assert r["ok"] is False and r["detail"] == "HTTP 503 (expected 200)"
    r = await smoke_check(http(f"{server}/down", expect_status=503), no_target)
    assert r["ok"] is True


async def test_timeout_fails_within_its_bound(server: str) -> None:
    r = await smoke_check(http(f"{server}/slow", timeout=0.3), no_target)
    assert r["ok"] is False and "Timeout" in r["detail"]
    assert r["latency_ms"] < 1500


async def test_refused_connection_fails() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    r = await smoke_check(http(f"http://127.0.0.1:{port}/"), no_target)
    assert r["ok"] is False and "ConnectError" in r["detail"]


async def test_sql_check_without_a_service_fails_with_the_cause() -> None:
    check = SqlSmokeCheck(name="orders", kind="sql", query="SELECT 1", expect="1")
    r = await smoke_check(check, no_target)
    assert r["ok"] is False and "does not resolve" in r["detail"]
