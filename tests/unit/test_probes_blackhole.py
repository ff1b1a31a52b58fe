"""Probes against real misbehaving listeners on 127.0.0.1: refused, silent, black hole, dropped.

The elapsed-time bounds are the point: a probe never blocks longer than its timeout (plus
0.3 s of slack), whatever the target does.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from orchestrator.errors import OperationTimeout, TransientError
from orchestrator.providers.db_postgres import HeartbeatWriter
from probes import ErrorClass, HttpProbe, Kind, Observation, PostgresProbe, Probe, TcpProbe

TIMEOUT = 0.5
BOUND = TIMEOUT + 0.3
FAST = 0.3
PASSWORD = "never-in-messages-7f3a"


class Listener:
    """A TCP listener on 127.0.0.1 served by threads, in one of a few misbehaving modes.

    ``silent``: accept and never speak. ``drop``: accept, then close (FIN). ``reset``: accept,
    then abort (RST). ``http``: answer one request with ``status``. ``pg-mute``: complete a
    PostgreSQL startup (trust auth), then never answer a query nor a cancel request, like a
    frozen server.
    """

    def __init__(self, mode: str, port: int = 0, status: int = 200) -> None:
        self.mode = mode
        self.status = status
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "drop":
                conn.close()
            elif self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            else:
                self._held.append(conn)
                if self.mode != "silent":
                    t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                    self._threads.append(t)
                    t.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(2.0)
        with contextlib.suppress(OSError):
            if self.mode == "http":
                self._serve_http(conn)
            else:
                self._serve_pg(conn)

    def _serve_http(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        body = b"ok" if self.status < 400 else b"unavailable"
        head = f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        conn.sendall(head.encode() + b"\r\n" + body)
        conn.close()

    def _serve_pg(self, conn: socket.socket) -> None:
        while True:  # SSLRequest / GSSENCRequest: refuse; CancelRequest: hold; startup: accept
            (length,) = struct.unpack("!i", _recv_exactly(conn, 4))
            payload = _recv_exactly(conn, length - 4)
            (code,) = struct.unpack("!i", payload[:4])
            if code in (80877103, 80877104):
                conn.sendall(b"N")
                continue
            if code == 80877102:
                return  # a cancel request: never act on it, never close (frozen server)
            break
        params = {"server_version": "15.0", "client_encoding": "UTF8", "DateStyle": "ISO"}
        out = _pg_msg(b"R", struct.pack("!i", 0))
        for k, v in params.items():
            out += _pg_msg(b"S", k.encode() + b"\0" + v.encode() + b"\0")
        out += _pg_msg(b"K", struct.pack("!ii", 4242, 1234)) + _pg_msg(b"Z", b"I")
        conn.sendall(out)
        # From here on: read whatever comes (queries) and never answer.
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                if not conn.recv(4096):
                    return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self._held:
            c.close()
        for t in self._threads:
            t.join(timeout=3)


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return buf


def _pg_msg(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!i", len(body) + 4) + body


@pytest.fixture
def listen() -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def start(mode: str, port: int = 0, status: int = 200) -> Listener:
        lst = Listener(mode, port, status)
        started.append(lst)
        return lst

    yield start
    for lst in started:
        lst.close()


@pytest.fixture
def refused_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose accept queue is full: further SYNs are dropped and connects hang."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port: int = srv.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    check = socket.socket()
    check.setblocking(False)
    check.connect_ex(("127.0.0.1", port))
    _, writable, _ = select.select([], [check], [], 0.3)
    fillers.append(check)
    try:
        assert not writable, "the accept queue did not fill: no SYN-drop black hole here"
        yield port
    finally:
        for c in fillers:
            c.close()
        srv.close()


def make_probe(kind: Kind, port: int, timeout: float = TIMEOUT) -> Probe:
    match kind:
        case Kind.TCP:
            return TcpProbe("node", "127.0.0.1", port, timeout)
        case Kind.HTTP:
            return HttpProbe("node", f"http://127.0.0.1:{port}/health", timeout)
        case Kind.POSTGRES:
            dsn = f"host=127.0.0.1 port={port} user=helios dbname=postgres"
            return PostgresProbe("node", dsn, PASSWORD, timeout)


async def observe_twice(probe: Probe) -> list[tuple[Observation, float]]:
    """Two calls in a row on the same probe, each with its wall time."""
    out = []
    for _ in range(2):
        t0 = time.monotonic()
        obs = await probe.observe()
        out.append((obs, time.monotonic() - t0))
    return out


def assert_failed(obs: Observation, kind: Kind, err: ErrorClass) -> None:
    assert not obs.ok
    assert obs.kind is kind
    assert obs.target == "node"
    assert obs.error_class is err, obs.error
    assert obs.error
    assert PASSWORD not in obs.error
    assert obs.database is None


ALL = [Kind.TCP, Kind.HTTP, Kind.POSTGRES]


@pytest.mark.parametrize("kind", ALL)
async def test_refused_port_is_refused_quickly(kind: Kind, refused_port: int) -> None:
    probe = make_probe(kind, refused_port)
    try:
        for obs, elapsed in await observe_twice(probe):
            assert_failed(obs, kind, ErrorClass.REFUSED)
            assert elapsed < FAST
    finally:
        await probe.aclose()


@pytest.mark.parametrize("kind", [Kind.HTTP, Kind.POSTGRES])
async def test_silent_listener_times_out_within_bound(
    kind: Kind, listen: Callable[..., Listener]
) -> None:
    probe = make_probe(kind, listen("silent").port)
    try:
        for obs, elapsed in await observe_twice(probe):
            assert_failed(obs, kind, ErrorClass.TIMEOUT)
            assert TIMEOUT - 0.05 <= elapsed < BOUND
            assert obs.latency < BOUND
    finally:
        await probe.aclose()


async def test_tcp_probe_only_needs_the_handshake(listen: Callable[..., Listener]) -> None:
    probe = make_probe(Kind.TCP, listen("silent").port)
    for obs, elapsed in await observe_twice(probe):
        assert obs.ok and obs.error_class is None
        assert elapsed < FAST


@pytest.mark.parametrize("kind", ALL)
async def test_syn_drop_black_hole_times_out_within_bound(kind: Kind, blackhole: int) -> None:
    probe = make_probe(kind, blackhole)
    try:
        for obs, elapsed in await observe_twice(probe):
            assert_failed(obs, kind, ErrorClass.TIMEOUT)
            assert TIMEOUT - 0.05 <= elapsed < BOUND
    finally:
        await probe.aclose()


@pytest.mark.parametrize("mode", ["drop", "reset"])
@pytest.mark.parametrize("kind", [Kind.HTTP, Kind.POSTGRES])
async def test_dropped_connection_is_reset_quickly(
    kind: Kind, mode: str, listen: Callable[..., Listener]
) -> None:
    probe = make_probe(kind, listen(mode).port)
    try:
        for obs, elapsed in await observe_twice(probe):
            assert_failed(obs, kind, ErrorClass.RESET)
            assert elapsed < FAST
    finally:
        await probe.aclose()


async def test_postgres_probe_against_frozen_server_is_bounded(
    listen: Callable[..., Listener],
) -> None:
    """Startup completes, then the query never gets an answer and neither does the cancel
    request psycopg sends when a query is cancelled: without the probe's own handling, psycopg
    waits 5 s + 5 s for it (10.5 s for a 0.5 s timeout, measured)."""
    probe = make_probe(Kind.POSTGRES, listen("pg-mute").port)
    try:
        for obs, elapsed in await observe_twice(probe):
            assert_failed(obs, Kind.POSTGRES, ErrorClass.TIMEOUT)
            assert TIMEOUT - 0.05 <= elapsed < BOUND
    finally:
        await probe.aclose()


async def test_http_status_and_recovery(listen: Callable[..., Listener]) -> None:
    server = listen("http", status=503)
    probe = make_probe(Kind.HTTP, server.port)
    try:
        for obs, elapsed in await observe_twice(probe):
            assert_failed(obs, Kind.HTTP, ErrorClass.HTTP_STATUS)
            assert obs.http_status == 503
            assert obs.error is not None and "503" in obs.error
            assert elapsed < FAST
        server.status = 200
        for obs, _ in await observe_twice(probe):
            assert obs.ok and obs.error_class is None and obs.http_status == 200
    finally:
        await probe.aclose()
        await probe.aclose()  # idempotent


async def test_tcp_probe_recovers_when_something_listens(
    refused_port: int, listen: Callable[..., Listener]
) -> None:
    probe = make_probe(Kind.TCP, refused_port)
    assert (await probe.observe()).error_class is ErrorClass.REFUSED
    listen("silent", port=refused_port)
    assert (await probe.observe()).ok


async def test_unresolvable_host_is_unreachable() -> None:
    probes: list[Probe] = [
        TcpProbe("node", "no-such-host.invalid", 5432, 2.0),
        HttpProbe("node", "http://no-such-host.invalid/health", 2.0),
        PostgresProbe("node", "host=no-such-host.invalid port=5432", PASSWORD, 2.0),
    ]
    for probe in probes:
        obs = await probe.observe()
        await probe.aclose()
        # A resolver that cannot answer at all would make this a timeout instead.
        assert obs.error_class in {ErrorClass.UNREACHABLE, ErrorClass.TIMEOUT}, obs.error


async def test_caller_cancellation_propagates_promptly(blackhole: int) -> None:
    probe = make_probe(Kind.POSTGRES, blackhole, timeout=5.0)
    task = asyncio.create_task(probe.observe())
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < FAST
    await probe.aclose()


async def test_heartbeat_writer_is_bounded(
    refused_port: int, listen: Callable[..., Listener]
) -> None:
    dsn = "host=127.0.0.1 port={} user=helios dbname=postgres"
    writer = HeartbeatWriter("svc", dsn.format(refused_port), PASSWORD, TIMEOUT)
    t0 = time.monotonic()
    with pytest.raises(TransientError) as refused:
        await writer.write(1.0)
    assert time.monotonic() - t0 < FAST
    assert not isinstance(refused.value, OperationTimeout)
    assert PASSWORD not in str(refused.value)
    await writer.aclose()

    writer = HeartbeatWriter("svc", dsn.format(listen("pg-mute").port), PASSWORD, TIMEOUT)
    for _ in range(2):
        t0 = time.monotonic()
        with pytest.raises(OperationTimeout):
            await writer.write(1.0)
        assert time.monotonic() - t0 < BOUND
    await writer.aclose()
    await writer.aclose()
