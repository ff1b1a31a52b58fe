"""Finding the PostgreSQL server binaries, running them, and the files written for them.

Binary search order: ``$HELIOS_PG_BINDIR``, then the highest version under
``/usr/lib/postgresql/*/bin`` (Debian/Ubuntu layout), then the directory of ``initdb`` on
``PATH``. Nothing is ever installed from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import SandboxError
from orchestrator.sandbox import procs
from orchestrator.sandbox.placement import netns_prefix

ENV_BINDIR = "HELIOS_PG_BINDIR"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
REQUIRED = ("initdb", "postgres", "pg_ctl", "pg_basebackup", "pg_rewind")

_INSTALL_HINT = (
    "run `sudo deploy/scripts/install-postgres-debian.sh` (Debian/Ubuntu) or install the "
    "`postgresql` server package, or set HELIOS_PG_BINDIR to the directory holding initdb"
)


@dataclass(frozen=True)
class PgBinaries:
    """Absolute paths of the server programs in one PostgreSQL installation."""

    bindir: Path

    def path(self, program: str) -> str:
        return str(self.bindir / program)

    @property
    def initdb(self) -> str:
        return self.path("initdb")

    @property
    def postgres(self) -> str:
        return self.path("postgres")

    @property
    def pg_basebackup(self) -> str:
        return self.path("pg_basebackup")

    @property
    def pg_ctl(self) -> str:
        return self.path("pg_ctl")

    @property
    def pg_rewind(self) -> str:
        return self.path("pg_rewind")


def _missing(bindir: Path) -> list[str]:
    return [p for p in REQUIRED if not os.access(bindir / p, os.X_OK)]


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); "9.6" -> (9, 6); anything odd sorts first.
    return tuple(int(x) for x in re.findall(r"\d+", path.parent.name)) or (-1,)


def debian_bindirs(root: Path = DEBIAN_ROOT) -> list[Path]:
    """``<root>/*/bin`` directories that hold every required program, highest version first."""
    if not root.is_dir():
        return []
    found = [d for d in root.glob("*/bin") if d.is_dir() and not _missing(d)]
    return sorted(found, key=_version_key, reverse=True)


def find_pg_binaries(environ: dict[str, str] | None = None) -> PgBinaries:
    """Locate the server binaries or raise :class:`SandboxError` saying how to get them."""
    env = dict(os.environ) if environ is None else environ
    explicit = env.get(ENV_BINDIR, "").strip()
    if explicit:
        bindir = Path(explicit).expanduser().absolute()
        missing = _missing(bindir)
        if missing:
            raise SandboxError(
                f"{ENV_BINDIR}={explicit} does not contain the PostgreSQL server programs "
                f"({', '.join(missing)} missing)"
            )
        return PgBinaries(bindir)
    candidates = debian_bindirs()
    if candidates:
        return PgBinaries(candidates[0])
    initdb = shutil.which("initdb", path=env.get("PATH"))
    if initdb:
        bindir = Path(initdb).resolve().parent
        missing = _missing(bindir)
        if not missing:
            return PgBinaries(bindir)
        raise SandboxError(
            f"found {initdb} but {', '.join(missing)} is missing beside it; {_INSTALL_HINT}"
        )
    raise SandboxError(f"PostgreSQL server binaries (initdb, postgres) not found; {_INSTALL_HINT}")


# --- running the programs, and the files they read -------------------------------------------

_Ids = tuple[int | None, int | None, list[int] | None]
"""Popen's ``user``, ``group`` and ``extra_groups``."""

CONF_NAME = "helios-sandbox.conf"
HBA = (
    "# Written by the helios sandbox.\n"
    "local all all trust\n"
    "host replication replicator 127.0.0.0/8 trust\n"
    "host all all 127.0.0.0/8 scram-sha-256\n"
)


def hba(networks: Sequence[str] = ()) -> str:
    """``pg_hba.conf``: :data:`HBA`, plus the same two TCP rules for each of ``networks``."""
    extra = "".join(
        f"host replication replicator {net} trust\nhost all all {net} scram-sha-256\n"
        for net in networks
    )
    return HBA + extra


def quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("'", "''") + "'"


def server_conf(region: str, address: str, port: int, socket_dir: Path) -> str:
    """The sandbox's settings: TCP on ``address:port`` only, unix socket in ``socket_dir``."""
    settings = {
        "listen_addresses": quote(address),
        "port": str(port),
        "unix_socket_directories": quote(str(socket_dir)),
        "unix_socket_permissions": "0700",
        "shared_buffers": "32MB",
        "max_connections": "50",
        "wal_level": "replica",
        "max_wal_senders": "10",
        "max_replication_slots": "10",
        "hot_standby": "on",
        "hot_standby_feedback": "on",
        "wal_log_hints": "on",
        "wal_keep_size": "256MB",
        "wal_receiver_timeout": "5s",
        "wal_sender_timeout": "5s",
        "wal_receiver_status_interval": "1s",
        "wal_retrieve_retry_interval": "1s",
        "fsync": "on",
        "logging_collector": "off",
        "log_line_prefix": quote("%m [%p] %q%u@%d "),
        "cluster_name": quote(region),
    }
    body = "".join(f"{k} = {v}\n" for k, v in settings.items())
    return f"# Written by the helios sandbox on every start; ALTER SYSTEM overrides it.\n{body}"


@dataclass(frozen=True)
class PgTools:
    """The binaries plus the OS user and environment every PostgreSQL program runs with, and
    the network namespace it runs in (None: the caller's; see
    :mod:`orchestrator.sandbox.placement`)."""

    bin: PgBinaries
    run_as: procs.RunAs
    env: dict[str, str]
    netns: str | None = None

    @classmethod
    def resolve(cls) -> PgTools:
        run_as = procs.RunAs.resolve()
        binaries = find_pg_binaries()
        return cls(binaries, run_as, procs.pg_env(binaries.bindir, run_as))

    def in_netns(self, netns: str | None) -> PgTools:
        """The same tools, running their programs in network namespace ``netns``."""
        return dataclasses.replace(self, netns=netns)

    def _launch(self, argv: list[str]) -> tuple[list[str], _Ids]:
        """The argv and the Popen ``user``/``group``/``extra_groups``: in a namespace,
        ``ip netns exec`` runs as the caller (root) and ``setpriv`` switches to the
        PostgreSQL user."""
        ra = self.run_as
        if self.netns is None:
            return argv, (ra.popen_user, ra.popen_group, ra.popen_extra_groups)
        ids = (ra.uid, ra.gid) if ra.switch else (None, None)
        return [*netns_prefix(self.netns, *ids), *argv], (None, None, None)

    def popen(
        self, argv: list[str], log_path: Path, cwd: Path, new_session: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start a program as the PostgreSQL user with its output appended to ``log_path``."""
        with log_path.open("ab") as log:
            if not new_session:
                log.write(f"\n--- {' '.join(argv)}\n".encode())
                log.flush()
            full, (user, group, extra_groups) = self._launch(argv)
            return subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=self.env,
                start_new_session=new_session,
                user=user,
                group=group,
                extra_groups=extra_groups,
            )

    def finish(
        self, proc: subprocess.Popen[bytes], what: str, log_path: Path, timeout: float
    ) -> None:
        """Wait for a program; on a timeout kill it. Raise SandboxError unless it exited 0."""
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise SandboxError(
                f"{what} did not finish within {timeout:g}s; see {log_path}"
            ) from None
        if rc != 0:
            raise SandboxError(f"{what} failed (exit {rc}): {procs.tail(log_path)}")

    def initdb(self, data_dir: Path, log_path: Path, timeout: float) -> None:
        argv = [
            self.bin.initdb,
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        ]
        proc = self.popen(argv, log_path, data_dir.parent)
        self.finish(proc, f"initdb of {data_dir}", log_path, timeout)

    def basebackup(
        self, conninfo: str, data_dir: Path, slot: str, log_path: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``pg_basebackup -R -X stream -C -S slot`` into ``data_dir``; see :meth:`finish`."""
        argv = [
            self.bin.pg_basebackup,
            "-d",
            conninfo,
            "-D",
            str(data_dir),
            "-R",
            "-X",
            "stream",
            "-C",
            "-S",
            slot,
            "--checkpoint=fast",
        ]
        return self.popen(argv, log_path, data_dir.parent)

    def rewind(
        self, data_dir: Path, source: str, password: str, log_path: Path, timeout: float
    ) -> str:
        """``pg_rewind`` ``data_dir`` (stopped) from the running server at conninfo ``source``
        (a superuser); the password goes through ``PGPASSWORD``, never the command line. Runs
        crash recovery first if the target was not shut down cleanly (PostgreSQL 13+). Returns
        pg_rewind's output (also appended to ``log_path``); raises SandboxError on failure."""
        argv = [self.bin.pg_rewind, f"--target-pgdata={data_dir}", f"--source-server={source}"]
        with log_path.open("ab") as log:
            log.write(f"\n--- {' '.join(argv)}\n".encode())
        full, (user, group, extra_groups) = self._launch(argv)
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=data_dir.parent,
            env={**self.env, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"},
            start_new_session=True,  # its single-user postgres child is killed with it
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
        try:
            raw, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise SandboxError(
                f"pg_rewind of {data_dir} did not finish within {timeout:g}s"
            ) from None
        out = raw.decode(errors="replace")
        with log_path.open("a", encoding="utf-8") as log:
            log.write(out)
        if proc.returncode != 0:
            last = " | ".join(ln for ln in out.splitlines()[-8:] if ln.strip())
            raise SandboxError(f"pg_rewind of {data_dir} failed (exit {proc.returncode}): {last}")
        return out

    def postmaster(self, data_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
        """``postgres -D data_dir`` as a session (and process group) leader, reaped in the
        background. Its PID is the postmaster's own."""
        proc = self.popen(
            [self.bin.postgres, "-D", str(data_dir)], log_path, data_dir.parent, new_session=True
        )
        procs.reap_in_background(proc)
        return proc

    def write(self, path: Path, text: str) -> None:
        """A file inside a data directory: mode 0600, owned by the PostgreSQL user."""
        procs.write_private(path, text, 0o600, self.run_as)

    def configure(
        self,
        data_dir: Path,
        region: str,
        address: str,
        port: int,
        socket_dir: Path,
        networks: Sequence[str] = (),
    ) -> None:
        """(Re)write the sandbox settings and pg_hba.conf (admitting ``networks`` besides
        loopback), and include the settings once."""
        self.write(data_dir / CONF_NAME, server_conf(region, address, port, socket_dir))
        self.write(data_dir / "pg_hba.conf", hba(networks))
        main = data_dir / "postgresql.conf"
        include = f"include {quote(CONF_NAME)}"
        if include not in main.read_text(encoding="utf-8").splitlines():
            with main.open("a", encoding="utf-8") as fh:
                fh.write(f"\n{include}\n")

    def set_upstream(self, data_dir: Path, conninfo: str, slot: str) -> None:
        """Replace primary_conninfo/primary_slot_name in postgresql.auto.conf (the one
        ``pg_basebackup -R`` writes lists every libpq default, a passfile included)."""
        auto = data_dir / "postgresql.auto.conf"
        keep = [
            line
            for line in auto.read_text(encoding="utf-8").splitlines()
            if not line.lstrip().startswith(("primary_conninfo", "primary_slot_name"))
        ]
        keep += [f"primary_conninfo = {quote(conninfo)}", f"primary_slot_name = {quote(slot)}"]
        self.write(auto, "\n".join(keep) + "\n")
