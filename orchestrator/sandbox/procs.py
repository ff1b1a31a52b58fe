"""Process helpers for the sandbox: who PostgreSQL runs as, running its programs, and finding,
signalling and waiting for its processes through ``/proc``.

PostgreSQL's child processes (backends, checkpointer, walsender, ...) each call ``setsid()``, so
the postmaster's process group holds only the postmaster. Every process of one server shares the
data directory as its working directory, and that is how :func:`server_processes` finds them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import pwd
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import SandboxError

PG_OS_USER = "postgres"


@dataclass(frozen=True)
class RunAs:
    """The OS account PostgreSQL programs run as (``postgres`` when we are root)."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]
    home: str
    switch: bool  # True when we are root and must drop privileges for every PG program

    @classmethod
    def resolve(cls) -> RunAs:
        euid = os.geteuid()
        if euid == 0:
            try:
                pw = pwd.getpwnam(PG_OS_USER)
            except KeyError:
                raise SandboxError(
                    "running as root, but there is no `postgres` OS user to run PostgreSQL as "
                    "(PostgreSQL refuses to run as root); install the `postgresql` package or "
                    "run the sandbox as an unprivileged user"
                ) from None
            switch = True
        else:
            pw = pwd.getpwuid(euid)
            switch = False
        groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem}
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, frozenset(groups), pw.pw_dir, switch)

    @property
    def popen_user(self) -> int | None:
        return self.uid if self.switch else None

    @property
    def popen_group(self) -> int | None:
        return self.gid if self.switch else None

    @property
    def popen_extra_groups(self) -> list[int] | None:
        return [] if self.switch else None

    def chown(self, path: Path) -> None:
        if self.switch:
            os.chown(path, self.uid, self.gid)

    def can_traverse(self, path: Path) -> bool:
        """Whether this user may search ``path`` (owner/group/other bits; ACLs ignored)."""
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid in self.groups:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)


def pg_env(bindir: Path, run_as: RunAs) -> dict[str, str]:
    """A clean environment for PostgreSQL programs: no PG* variables leak in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PATH=f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        LC_ALL="C",
        LANG="C",
        HOME=run_as.home,
        USER=run_as.name,
        LOGNAME=run_as.name,
    )
    return env


def write_private(path: Path, text: str, mode: int = 0o600, owner: RunAs | None = None) -> None:
    """Write ``path`` atomically with ``mode`` (and ``owner``, when switching users)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), mode)
        fh.write(text)
    if owner is not None:
        owner.chown(tmp)
    tmp.replace(path)


def make_dir(path: Path, mode: int, owner: RunAs | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        owner.chown(path)
    path.chmod(mode)


def reap_in_background(proc: subprocess.Popen[bytes]) -> None:
    """Wait for ``proc`` in a daemon thread: a long-lived caller never keeps a zombie, and
    ``Popen.__del__`` never warns about a child that outlives the object."""
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()


def tail(path: Path, lines: int = 12) -> str:
    """The last lines of a log file, joined with `` | `` for a one-line error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    last = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return f"last lines of {path}: " + " | ".join(last) if last else f"{path} is empty"


# --- /proc ---------------------------------------------------------------------------------


def proc_state(pid: int) -> str | None:
    """The one-letter state from ``/proc/<pid>/stat`` (``R``, ``S``, ``T``, ``Z``...), or None."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    parts = data.rsplit(")", 1)
    return parts[1].split()[0] if len(parts) == 2 and parts[1].split() else None


def _link(pid: int, name: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/{name}")
    except OSError:
        return None


def _matches(pid: int, target: str) -> bool:
    if _link(pid, "cwd") != target:
        return False
    exe = _link(pid, "exe")
    if exe is None or not os.path.basename(exe).startswith("postgres"):
        return False
    return proc_state(pid) not in (None, "Z", "X")


def is_server_process(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a live (non-zombie) ``postgres`` process working in ``data_dir``."""
    return pid > 0 and _matches(pid, os.path.realpath(data_dir))


def server_processes(data_dir: Path) -> list[int]:
    """Every live ``postgres`` process working in ``data_dir``: one server's processes."""
    target = os.path.realpath(data_dir)
    return [
        int(e.name)
        for e in os.scandir("/proc")
        if e.name.isdigit() and _matches(int(e.name), target)
    ]


def read_pidfile(data_dir: Path) -> list[str]:
    """Lines of ``postmaster.pid`` (empty if absent or unreadable)."""
    try:
        return (data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def _to_pid(text: str) -> int:
    # postmaster.pid holds -PID when a single-user backend wrote it
    digits = text.strip().lstrip("-")
    return int(digits) if digits.isdigit() else 0


def postmaster_pid(data_dir: Path) -> int | None:
    """PID of the live postmaster of ``data_dir``, from line 1 of ``postmaster.pid``."""
    lines = read_pidfile(data_dir)
    pid = _to_pid(lines[0]) if lines else 0
    return pid if is_server_process(pid, data_dir) else None


def is_stopped(pid: int) -> bool:
    return proc_state(pid) in ("T", "t")


def signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_gone(pids: Sequence[int], data_dir: Path, timeout: float) -> list[int]:
    """Wait until none of ``pids`` is a live server process; return those still alive."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while True:
        alive = [p for p in alive if is_server_process(p, data_dir)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def kill_all(data_dir: Path, timeout: float = 5.0) -> None:
    """SIGCONT then SIGKILL every process of ``data_dir`` and wait for them to go."""
    for _ in range(3):
        pids = server_processes(data_dir)
        if not pids:
            return
        for pid in pids:
            signal_pid(pid, signal.SIGKILL)
            signal_pid(pid, signal.SIGCONT)
        wait_gone(pids, data_dir, timeout)
    left = server_processes(data_dir)
    if left:
        raise SandboxError(f"processes {left} of {data_dir} survived SIGKILL")


# --- ports ---------------------------------------------------------------------------------


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP listener already holds ``host:port`` (or the wildcard address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


@contextlib.contextmanager
def file_lock(path: Path, timeout: float, what: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, waited for at most ``timeout`` seconds."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SandboxError(
                        f"{what} is busy: another sandbox command holds {path}"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def clear_stale_locks(data_dir: Path, socket_lock: Path) -> None:
    """Remove ``postmaster.pid`` and the socket lock file if the PID in them is not a live
    server of ``data_dir`` (after a SIGKILL they stay behind; a zombie PID would block startup)."""
    if (data_dir / "postmaster.pid").exists() and postmaster_pid(data_dir) is None:
        (data_dir / "postmaster.pid").unlink(missing_ok=True)
    try:
        first = socket_lock.read_text(encoding="utf-8").splitlines()[:1]
    except (OSError, UnicodeDecodeError):
        return
    if not first or not is_server_process(_to_pid(first[0]), data_dir):
        socket_lock.unlink(missing_ok=True)
