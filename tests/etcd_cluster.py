"""Throw-away etcd clusters for tests: 1 or 3 members on free loopback ports, data in a
temporary directory (on /dev/shm when there is one, so fsync latency does not skew lease
timing on a loaded machine).

Every member is started directly (``etcd ...``, its own session), so the PID held is etcd's;
:meth:`EtcdCluster.close` stops each by that PID (SIGTERM, then SIGKILL) and waits for it.
Members can be killed, paused (SIGSTOP), resumed and restarted on their data directory.
The binary is ``$HELIOS_ETCD`` or ``etcd`` on PATH (Debian's ``etcd-server``;
``deploy/scripts/install-test-tools.sh`` installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class EtcdUnavailable(RuntimeError):
    """No etcd binary, or a member did not become healthy."""


def find_etcd() -> str:
    explicit = os.environ.get("HELIOS_ETCD")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit
        raise EtcdUnavailable(f"HELIOS_ETCD={explicit} is not an executable")
    found = shutil.which("etcd")
    if not found:
        raise EtcdUnavailable(
            "no etcd binary: install Debian's etcd-server (deploy/scripts/install-test-tools.sh) "
            "or set HELIOS_ETCD"
        )
    return found


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports free at the time of the call."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    binary: str
    root: Path
    members: list[Member] = field(default_factory=list)
    token: str = "helios-test"
    extra_args: tuple[str, ...] = ()

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def _args(self, m: Member) -> list[str]:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [
            self.binary,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial,
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", "new",
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
            "--logger", "zap",
            "--log-outputs", "stderr",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, index: int) -> None:
        m = self.members[index]
        if m.running:
            return
        log = m.log_path.open("ab")
        try:
            m.proc = subprocess.Popen(
                self._args(m),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        m.paused = False

    def wait_healthy(self, indexes: list[int] | None = None, timeout: float = 30.0) -> None:
        """Block until each member answers /health with true (run it in a thread from async
        code)."""
        deadline = time.monotonic() + timeout
        for i in indexes if indexes is not None else range(len(self.members)):
            m = self.members[i]
            while not _healthy(m.client_url):
                if not m.running:
                    raise EtcdUnavailable(f"etcd {m.name} exited: {self.log_tail(i)}")
                if time.monotonic() > deadline:
                    raise EtcdUnavailable(f"etcd {m.name} not healthy: {self.log_tail(i)}")
                time.sleep(0.1)

    def kill(self, index: int) -> None:
        """SIGKILL the member and reap it."""
        m = self.members[index]
        if m.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                m.proc.kill()
            m.proc.wait(timeout=10)
        m.paused = False

    def pause(self, index: int) -> None:
        """SIGSTOP: the member keeps its sockets but answers nothing (a hang)."""
        m = self.members[index]
        assert m.proc is not None and m.running
        m.proc.send_signal(signal.SIGSTOP)
        m.paused = True

    def resume(self, index: int) -> None:
        m = self.members[index]
        if m.proc is not None and m.paused:
            m.proc.send_signal(signal.SIGCONT)
        m.paused = False

    def restart(self, index: int) -> None:
        """Start a killed member again on its data directory and wait until it is healthy."""
        self.kill(index)
        self.start(index)
        self.wait_healthy([index])

    def log_tail(self, index: int, lines: int = 5) -> str:
        try:
            text = self.members[index].log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def close(self, grace: float = 2.0) -> None:
        """Stop every member by its PID, all together: SIGCONT (if paused) and SIGTERM, then
        SIGKILL for those still running after ``grace`` seconds (a member whose peers are
        gone may wait for them; the data is thrown away anyway)."""
        for m in self.members:
            if m.proc is None or m.proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                m.proc.send_signal(signal.SIGCONT)
                m.proc.terminate()
        deadline = time.monotonic() + grace
        for m in self.members:
            if m.proc is None:
                continue
            try:
                m.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as resp:
            return b'"true"' in resp.read()
    except OSError:
        return False


@contextlib.contextmanager
def etcd_cluster(
    size: int = 1, prefix: str = "helios-etcd-", extra_args: tuple[str, ...] = ()
) -> Iterator[EtcdCluster]:
    """A healthy cluster of ``size`` members (``extra_args`` for every member's command
    line), stopped and removed on exit."""
    binary = find_etcd()
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    ports = free_ports(2 * size)
    cluster = EtcdCluster(binary, root, token=root.name, extra_args=extra_args)
    for i in range(size):
        name = f"m{i}"
        cluster.members.append(
            Member(name, ports[2 * i], ports[2 * i + 1], root / name, root / f"{name}.log")
        )
    try:
        for i in range(size):
            cluster.start(i)
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)
