"""Throw-away sandboxes for tests and benchmarks: a fresh directory under /tmp and a locked
block of free ports, destroyed on exit with nothing left running.

Port blocks are 16 ports on a fixed grid from 56400 (3 PostgreSQL ports from the base, metrics
at +3, the DNS stack at +10..+15), each guarded by an flock on
``/tmp/helios-sandbox-ports-<base>.lock``, so concurrent test sessions and benchmark runs on one
machine never pick overlapping blocks.
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

from orchestrator.errors import SandboxError
from orchestrator.sandbox.cluster import Sandbox
from orchestrator.sandbox.pgbin import find_pg_binaries

PORT_SCAN_START = 56400
PORT_SCAN_END = 58400
PORT_BLOCK = 16


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def reserve_ports(wait: float = 0.0) -> tuple[int, int]:
    """A free, locked block of :data:`PORT_BLOCK` ports: ``(base_port, lock_fd)``; close the fd
    to release it. When every block is taken, scans again for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        for base in range(PORT_SCAN_START, PORT_SCAN_END, PORT_BLOCK):
            lock = f"/tmp/helios-sandbox-ports-{base}.lock"  # noqa: S108 - a shared lock grid
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if all(_port_free(p) for p in range(base, base + PORT_BLOCK)):
                return base, fd
            os.close(fd)
        if time.monotonic() >= deadline:
            raise SandboxError(
                f"no {PORT_BLOCK} consecutive free ports in {PORT_SCAN_START}-{PORT_SCAN_END}"
            )
        time.sleep(1.0)


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


@contextlib.contextmanager
def scratch_sandbox(
    prefix: str, wait_for_ports: float = 0.0, progress: Callable[[str], None] | None = None
) -> Iterator[Sandbox]:
    """A running sandbox in a fresh 0755 directory under /tmp on its own port block.

    On exit (also on failure) it is destroyed, leftovers are killed and the directory removed;
    a process that survived ``destroy()`` raises SandboxError naming it. The teardown ignores
    SIGINT/SIGTERM so a second Ctrl-C cannot leave a half-destroyed sandbox behind.
    """
    say = progress or (lambda _msg: None)
    find_pg_binaries()  # fail early with the install hint
    base_port, lock_fd = reserve_ports(wait_for_ports)  # first: nothing to clean up on failure
    try:
        state_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        state_dir.chmod(0o755)  # the postgres OS user must traverse it
    except BaseException:
        os.close(lock_fd)
        raise
    sb = Sandbox(state_dir, base_port=base_port, metrics_port=base_port + 3)
    leftovers: list[tuple[int, str]] = []
    try:
        say(f"sandbox up in {state_dir} (ports {base_port}-{base_port + PORT_BLOCK - 1})")
        sb.up()
        yield sb
    finally:
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            sb.destroy()
        finally:
            os.close(lock_fd)
            leftovers = processes_under(state_dir)
            for pid, _cmd in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(state_dir, ignore_errors=True)
            for s, handler in previous.items():
                signal.signal(s, handler)
            say("sandbox destroyed")
    if leftovers:
        raise SandboxError(f"processes left running after destroy(): {leftovers}")
