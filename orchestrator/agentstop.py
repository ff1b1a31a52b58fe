"""The node agent's own fence, for a node without ``fence_command``: stop PostgreSQL hard and
keep it from coming back as a primary. Read-only mode is not a fence (a client can still
``BEGIN READ WRITE``, a superuser can undo it), so this stops the server.

What :func:`hard_stop` does, on the agent's host, for the data directory it is given:

1. Writes ``standby.signal`` into the data directory (mode 0600, owned by the directory's
   owner): whatever starts the server next (systemd's ``Restart=``, an operator, a reboot)
   brings it up as a standby, never as a primary. The file goes first, so even a failed kill
   leaves nothing that would restart as a primary.
2. SIGSTOPs the postmaster named by ``postmaster.pid`` (no new backends), then SIGKILLs its
   children (every process whose parent it is, from ``/proc/<pid>/stat``) and the postmaster
   itself, a hung (stopped) one included, and waits until they are gone. SIGKILL, not a fast
   or immediate shutdown: a backend in the middle of a commit must not get to finish it, and a
   frozen postmaster would not act on a shutdown request. ``/proc/<pid>/stat`` is readable
   without ``CAP_SYS_PTRACE``, so root with a small capability set (``CAP_KILL``,
   ``CAP_DAC_OVERRIDE``, ``CAP_CHOWN``) is enough; the PID is trusted only when that process is
   called ``postgres`` (as ``pg_ctl`` trusts the file).

The agent must run as the data directory's owner (``postgres``) or root. Blocking (it polls
``/proc``): the agent runs it in a thread; it returns or raises within ``timeout``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from orchestrator.errors import PermanentError

POLL = 0.05


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(command name, state, parent PID) from ``/proc/<pid>/stat``, or None when gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    head, sep, tail = data.rpartition(")")
    fields = tail.split()
    if not sep or len(fields) < 2 or not fields[1].isdigit():
        return None
    return head.partition("(")[2], fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] not in ("Z", "X")


def postmaster_of(data_dir: Path) -> int | None:
    """The live postmaster named by ``postmaster.pid`` (a process called ``postgres``)."""
    try:
        first = (data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        return None
    digits = first.strip().lstrip("-")  # a single-user backend writes -PID
    if not digits.isdigit():
        return None
    pid = int(digits)
    st = _stat(pid)
    return pid if st is not None and st[0] == "postgres" and st[1] not in ("Z", "X") else None


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[2] == pid and st[1] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def write_standby_signal(data_dir: Path) -> None:
    """Create ``standby.signal`` (0600, owned like the data directory when we are root)."""
    path = data_dir / "standby.signal"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if os.geteuid() == 0:
            st = os.stat(data_dir)
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def hard_stop(data_dir: Path, timeout: float) -> str:
    """Fence the server of ``data_dir`` (see the module docstring); what was done, in words.
    Idempotent: on a stopped server it only (re)writes ``standby.signal``. PermanentError when
    ``data_dir`` is not a PostgreSQL data directory, the file cannot be written, or a process
    survives ``timeout``."""
    if not (data_dir / "PG_VERSION").is_file():
        raise PermanentError(f"{data_dir} is not a PostgreSQL data directory (no PG_VERSION)")
    deadline = time.monotonic() + timeout
    try:
        write_standby_signal(data_dir)
    except OSError as exc:
        raise PermanentError(f"cannot write standby.signal in {data_dir}: {exc}") from None
    postmaster = postmaster_of(data_dir)
    if postmaster is None:
        return f"standby.signal written in {data_dir}; no server was running"
    _signal(postmaster, signal.SIGSTOP)  # no new backends from here on
    doomed = {postmaster, *children_of(postmaster)}
    for pid in doomed:
        _signal(pid, signal.SIGKILL)
    while left := [pid for pid in doomed if _alive(pid)]:
        if time.monotonic() >= deadline:
            raise PermanentError(f"postgres processes {left} of {data_dir} survived SIGKILL")
        time.sleep(POLL)
        for pid in left:
            _signal(pid, signal.SIGKILL)
    return f"standby.signal written in {data_dir}; {len(doomed)} postgres process(es) killed"
