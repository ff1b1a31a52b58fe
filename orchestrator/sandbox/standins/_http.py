"""The HTTP plumbing the REST stand-ins share: a threaded server on loopback, JSON requests and
responses, fault injection and the request log.

A subclass of :class:`JsonStandIn` implements :meth:`~JsonStandIn.dispatch` (one request in,
one :class:`Response` out) and :meth:`~JsonStandIn.error` (its provider's error envelope).
Answers are HTTP/1.0 (one request per connection), so no idle keep-alive connection can hold a
handler thread when the stand-in stops.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from orchestrator.sandbox.standins.faults import Fault, FaultPlan

MALFORMED_BODY = b'{"result": [{"id": "truncated'
JOIN_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # the raw request target, query included
    path: str  # decoded path, no query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        """The JSON body (None when empty); raises ValueError when it is not JSON."""
        if not self.body.strip():
            return None
        return json.loads(self.body)


@dataclass(slots=True)
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or raw bytes
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


class _Server(ThreadingHTTPServer):
    """Handler threads are daemons, tracked so that ``server_close`` can join them."""

    daemon_threads = True
    standin: JsonStandIn

    def __init__(self, address: tuple[str, int], standin: JsonStandIn) -> None:
        self.standin = standin
        self._handlers: list[threading.Thread] = []
        self._handlers_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{type(self.standin).__name__}-request",
            daemon=True,
        )
        with self._handlers_lock:
            self._handlers = [h for h in self._handlers if h.is_alive()]
            self._handlers.append(t)
        t.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet for clients that hung up; the default traceback on stderr otherwise."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)

    def join_handlers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._handlers_lock:
            handlers = list(self._handlers)
        for t in handlers:
            t.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    timeout = 10.0  # a client that connects and never sends its request

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the stand-in keeps its own request log."""

    def _serve(self) -> None:
        at = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        split = urlsplit(self.path)
        req = Request(
            method=self.command,
            target=self.path,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        standin = self.server.standin
        resp = standin.handle(req)
        if resp is None:  # dropped: a hung request released by stop()
            standin.faults.record(req.method, req.target, at, 0)
            self.close_connection = True
            return
        data = resp.encode()
        # Logged before answering: a client that got its answer finds its request in the log.
        standin.faults.record(req.method, req.target, at, resp.status)
        try:
            self.send_response(resp.status)
            headers = {"Content-Type": "application/json; charset=utf-8", **resp.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except ConnectionError:  # the client gave up (its timeout) before the answer
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class JsonStandIn:
    """Base class: start/stop a threaded HTTP server on ``host:port`` (0 picks a free port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self.faults = FaultPlan()
        self._lock = threading.RLock()  # guards the stand-in's data
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve in a daemon thread; raises OSError if the port is taken."""
        if self._server is not None:
            return
        if self._stopped:
            raise RuntimeError(f"{type(self).__name__} was stopped; create a new one")
        server = _Server((self.host, self._requested_port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, release hung requests, close the socket, join the threads.

        Idempotent."""
        self._stopped = True
        self.faults.release_all()
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = None
        server.shutdown()
        thread.join(JOIN_TIMEOUT)
        server.server_close()
        server.join_handlers(JOIN_TIMEOUT)

    def __enter__(self) -> JsonStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- request handling -----------------------------------------------------------------

    def handle(self, req: Request) -> Response | None:
        """Apply a matching fault, else dispatch; None means: close without answering."""
        fault = self.faults.take(req.method, req.target)
        resp: Response | None = None
        if fault is not None:
            if fault.delay > 0 and not self.faults.pause(fault.delay):
                return None
            if fault.hang and not self.faults.wait_hung():
                return None
            resp = self.fault_response(fault)
        if resp is None:
            try:
                resp = self.dispatch(req)
            except Exception as exc:  # the top of a request: answer 500, like a real service
                resp = self.error(500, "backendError", f"stand-in failure: {exc!r}")
        if fault is not None and fault.retry_after is not None:
            resp.headers["Retry-After"] = f"{fault.retry_after:g}"
        return resp

    def fault_response(self, fault: Fault) -> Response | None:
        """The answer a fault forces (None: serve the request normally)."""
        if fault.status is not None:
            return self.error(fault.status, _reason(fault.status), _message(fault.status))
        if fault.malformed:
            return Response(200, MALFORMED_BODY)
        return None

    def dispatch(self, req: Request) -> Response:
        raise NotImplementedError

    def error(self, status: int, reason: str, message: str) -> Response:
        raise NotImplementedError


def _reason(status: int) -> str:
    return {
        400: "badRequest",
        401: "authError",
        403: "forbidden",
        404: "notFound",
        409: "conflict",
        412: "conditionNotMet",
        429: "rateLimitExceeded",
    }.get(status, "backendError" if status >= 500 else "error")


def _message(status: int) -> str:
    return {
        401: "Authentication error",
        403: "Forbidden",
        429: "Rate limit exceeded",
        500: "Internal server error",
        502: "Bad gateway",
        503: "Service unavailable",
        504: "Gateway timeout",
    }.get(status, f"injected fault (HTTP {status})")


def port_is_free(port: int, host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> bool:
    """Whether ``host:port`` can be bound now (TCP by default, UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
