"""A small network lab for partition tests: one network namespace per region, an observer
namespace, and a switch namespace holding the Linux bridge that joins them::

    [us-east] eth0 ──veth── p-use ┐
    [us-west] eth0 ──veth── p-usw ├── br0  [switch]
    [eu]      eth0 ──veth── p-eu  │
    [observer] eth0 ─veth── p-obs ┘

Every member gets ``10.231.<n>.<k>/24`` on its ``eth0`` (regions ``.1 .. .3``, the observer
``.10``) and its own ``lo``; ``<n>`` is picked at random among subnets the root namespace does
not use, and every namespace name (``hxlab-<pid>-<random>-<member>``) carries the creating
process's PID and a random part, so concurrent labs never collide, and a lab whose creator died
without its teardown (SIGKILL) is swept by the next one (:func:`sweep_orphans`).
Nothing is created in the root namespace: both ends of every veth pair are created inside the
lab's namespaces.

* :meth:`NetLab.isolate` / :meth:`NetLab.heal` cut a region's link at the switch (its switch
  port goes down; the region sees no carrier, its packets to the others are dropped, local
  traffic inside the region keeps working): a full partition of the region from the others and
  from the observer. The observer is never partitioned.
* :meth:`NetLab.popen` / :meth:`NetLab.run` run a program inside a namespace through
  ``ip netns exec`` (optionally as another user through ``setpriv``); both exec in place, so
  the PID of the started process is the program's own.
* :meth:`NetLab.close` kills every process in every lab namespace (``ip netns pids``, SIGKILL,
  waited for), reaps the processes it started, and deletes the namespaces (which deletes their
  links and the bridge). It runs with SIGINT/SIGTERM ignored and raises :class:`LabError` if
  anything survives. :func:`cleanup_leftovers` does the same for any lab namespace this process
  created and did not delete (the session-end check in ``tests/integration/conftest.py``).

Needs root and iproute2 (``deploy/scripts/install-test-tools.sh``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

NS_PREFIX = "hxlab-"
REGIONS = ("us-east", "us-west", "eu")
OBSERVER = "observer"
SWITCH = "switch"
SHORT = {"us-east": "use", "us-west": "usw", "eu": "eu", OBSERVER: "obs", SWITCH: "sw"}
HOST_OCTET = {"us-east": 1, "us-west": 2, "eu": 3, OBSERVER: 10}
BRIDGE = "br0"

_created: set[str] = set()
"""Namespaces this process created and has not deleted yet."""


class LabError(RuntimeError):
    """The lab could not be built, or not torn down completely."""


def lab_unavailable() -> str | None:
    """Why no lab can be built here (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} not found (deploy/scripts/install-test-tools.sh installs it)"
    return None


def _ip(*args: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _used_subnets() -> set[int]:
    """Third octets of 10.231.x.0/24 networks the root namespace already uses."""
    out = _ip("-4", "-o", "addr", "show", check=False).stdout
    out += _ip("-4", "route", "show", check=False).stdout
    used = set()
    for word in out.split():
        with contextlib.suppress(ValueError):
            net = ipaddress.IPv4Network(word, strict=False)
            if net.overlaps(ipaddress.IPv4Network("10.231.0.0/16")):
                if net.prefixlen <= 16:
                    return set(range(256))
                used.add(int(str(net.network_address).split(".")[2]))
    return used


def namespace_pids(ns: str) -> list[int]:
    proc = _ip("netns", "pids", ns, check=False)
    return [int(x) for x in proc.stdout.split() if x.isdigit()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _kill_namespaces(names: Sequence[str], timeout: float = 10.0) -> list[int]:
    """SIGKILL every process in ``names`` (SIGCONT first, for stopped ones) until none is
    left or ``timeout``; the PIDs still alive then."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for ns in names for p in namespace_pids(ns) if _alive(p)]
        if not pids or time.monotonic() >= deadline:
            return pids
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _delete_namespaces(names: Sequence[str]) -> list[str]:
    """Delete ``names`` (those that exist); the ones still listed afterwards."""
    existing = set(list_namespaces())
    for ns in names:
        if ns in existing:
            _ip("netns", "del", ns, check=False)
        _created.discard(ns)
    left = set(list_namespaces())
    return [ns for ns in names if ns in left]


def list_namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def sweep_orphans() -> list[str]:
    """Kill the processes of, and delete, lab namespaces whose creating process is gone (a
    test run killed before its teardown); the names swept."""
    orphans = []
    for ns in list_namespaces():
        parts = ns.split("-")
        ours = ns.startswith(NS_PREFIX) and len(parts) >= 4 and parts[1].isdigit()
        if ours and not _alive(int(parts[1])):
            orphans.append(ns)
    if orphans:
        _kill_namespaces(orphans)
        _delete_namespaces(orphans)
    return orphans


def cleanup_leftovers() -> list[str]:
    """Kill the processes of, and delete, every lab namespace this process created and did
    not delete; the names it found (empty: nothing was left)."""
    names = sorted(ns for ns in _created if ns in set(list_namespaces()))
    if names:
        _kill_namespaces(names)
        _delete_namespaces(names)
    _created.clear()
    return names


@dataclass
class LabProc:
    """A process started in a lab namespace, with its log file."""

    name: str
    ns: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL by PID and reap."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.poll()

    def tail(self, lines: int = 15, skip: str | None = None) -> str:
        """The last ``lines`` lines of the log (without those containing ``skip``)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        kept = [ln for ln in text.rstrip().splitlines() if skip is None or skip not in ln]
        return "\n".join(kept[-lines:])


@dataclass
class NetLab:
    """See the module docstring. Use as a context manager."""

    workdir: Path
    regions: tuple[str, ...] = REGIONS
    suffix: str = field(default_factory=lambda: f"{os.getpid()}-{secrets.token_hex(2)}")
    octet: int = 0
    procs: list[LabProc] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    isolated: set[str] = field(default_factory=set)

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.regions, OBSERVER)

    def ns(self, member: str) -> str:
        """The namespace name of a region, the observer or the switch."""
        return f"{NS_PREFIX}{self.suffix}-{SHORT[member]}"

    def addr(self, member: str) -> str:
        return f"10.231.{self.octet}.{HOST_OCTET[member]}"

    @property
    def network(self) -> str:
        return f"10.231.{self.octet}.0/24"

    def _port(self, member: str) -> str:
        return f"p-{SHORT[member]}"

    def note(self, what: str) -> None:
        self.events.append((time.time(), what))

    # --- building and tearing down -----------------------------------------------------------

    def __enter__(self) -> NetLab:
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> None:
        why = lab_unavailable()
        if why:
            raise LabError(why)
        swept = sweep_orphans()
        if swept:
            self.note(f"swept namespaces of a dead lab: {swept}")
        free = sorted(set(range(1, 255)) - _used_subnets())
        if not free:
            raise LabError("no free 10.231.x.0/24 subnet")
        self.octet = secrets.choice(free)
        self.workdir.mkdir(parents=True, exist_ok=True)
        for member in (SWITCH, *self.members):
            ns = self.ns(member)
            _ip("netns", "add", ns)
            _created.add(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        sw = self.ns(SWITCH)
        _ip("-n", sw, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", sw, "link", "set", BRIDGE, "up")
        for member in self.members:
            ns, port = self.ns(member), self._port(member)
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", sw)
            _ip("-n", sw, "link", "set", port, "master", BRIDGE)
            _ip("-n", sw, "link", "set", port, "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(member)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        self.note(f"lab {self.suffix} up on {self.network}")

    def close(self) -> None:
        """Kill everything in the lab's namespaces and delete them (see the module docstring)."""
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            names = [self.ns(m) for m in (*self.members, SWITCH)]
            for p in self.procs:
                p.kill(timeout=5)
            survivors = _kill_namespaces(names)
            for p in self.procs:  # reap (they are gone by now)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.proc.wait(timeout=5)
            left = _delete_namespaces(names)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if survivors or left:
            raise LabError(f"lab teardown left processes {survivors} / namespaces {left}")

    # --- partitions --------------------------------------------------------------------------

    def isolate(self, region: str) -> None:
        """Cut ``region`` off from everything else (its switch port goes down)."""
        _ip("-n", self.ns(SWITCH), "link", "set", self._port(region), "down")
        self.isolated.add(region)
        self.note(f"isolated {region}")

    def heal(self, region: str) -> None:
        _ip("-n", self.ns(SWITCH), "link", "set", self._port(region), "up")
        self.isolated.discard(region)
        self.note(f"healed {region}")

    # --- running programs --------------------------------------------------------------------

    def argv(self, member: str, argv: Sequence[str], user: str | None = None) -> list[str]:
        prefix = ["ip", "netns", "exec", self.ns(member)]
        if user is not None:
            pw = pwd.getpwnam(user)
            prefix += ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}"]
            prefix += ["--init-groups", "--"]
        return [*prefix, *argv]

    def popen(
        self,
        member: str,
        name: str,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> LabProc:
        """Start ``argv`` in ``member``'s namespace, output to ``<workdir>/logs/<name>.log``."""
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        out: IO[bytes]
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                self.argv(member, argv, user),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )
        lp = LabProc(name, self.ns(member), proc, log_path)
        self.procs.append(lp)
        self.note(f"started {name} (pid {proc.pid}) in {member}")
        return lp

    def run(
        self, member: str, argv: Sequence[str], *, timeout: float = 30.0, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``member``'s namespace to completion (output captured)."""
        return subprocess.run(
            self.argv(member, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kw,
        )

    def pids(self) -> dict[str, list[int]]:
        return {m: namespace_pids(self.ns(m)) for m in (*self.members, SWITCH)}


@contextlib.contextmanager
def netlab(workdir: Path, regions: tuple[str, ...] = REGIONS) -> Iterator[NetLab]:
    with NetLab(workdir, regions) as lab:
        yield lab
