"""The daemon's HTTP server: ``/metrics``, ``/healthz``, ``/readyz``, ``/v1/status`` and the
control API's routes when given (:mod:`orchestrator.api.routes`).

Guarantees: binds only the configured address (127.0.0.1 by default); every handler answers from
in-memory state without I/O, so a slow database can never make the endpoints hang; ``stop`` is
idempotent and bounded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from typing import Any


class StateView(Protocol):
    """What the server needs to know about the daemon."""

    @property
    def ready(self) -> bool: ...

    def live(self, now_monotonic: float | None = None) -> tuple[bool, str]: ...

    def status_document(self) -> dict[str, Any] | None: ...


class Routes(Protocol):
    """Further routes (the control API), installed on the same server."""

    max_body: int

    def install(self, app: web.Application) -> None: ...

    def middlewares(self) -> list[Any]: ...

    def guard_read(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]: ...


class HttpServer:
    """aiohttp server bound to ``address:port`` (port 0 picks a free one; see ``port``)."""

    def __init__(
        self,
        state: StateView,
        registry: CollectorRegistry,
        address: str,
        port: int,
        routes: Routes | None = None,
    ) -> None:
        self._routes = routes
        self._state = state
        self._registry = registry
        self._address = address
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        extra = self._routes
        app = web.Application(
            client_max_size=extra.max_body if extra else 1024**2,
            middlewares=extra.middlewares() if extra else [],
        )
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/v1/status", extra.guard_read(self._status) if extra else self._status)
        if extra is not None:
            extra.install(app)
        return app

    async def start(self) -> None:
        """Bind and serve. Raises OSError if the address is unavailable."""
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self._address, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self._registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, _: web.Request) -> web.Response:
        ok, why = self._state.live()
        return web.json_response({"ok": ok, "detail": why}, status=200 if ok else 503)

    async def _readyz(self, _: web.Request) -> web.Response:
        ready = self._state.ready
        detail = "ok" if ready else "waiting for the first tick"
        return web.json_response({"ok": ready, "detail": detail}, status=200 if ready else 503)

    async def _status(self, _: web.Request) -> web.Response:
        doc = self._state.status_document()
        if doc is None:
            return web.json_response({"error": "no tick completed yet"}, status=503)
        return web.json_response(doc)
