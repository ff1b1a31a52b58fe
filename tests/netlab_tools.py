"""Helpers that run *inside* the lab's network namespaces (see :mod:`netlab`); the test process
in the root namespace reaches the lab only through them and through files.

``python netlab_tools.py gate HOST PORT -- ARGV...``
    Run ``ARGV`` (exec in place) only if ``HOST`` can be reached over the network from here: a
    TCP connection to ``HOST:PORT`` that succeeds or is refused (the host answers, its server
    may be down) passes; a timeout or an unreachable network fails with exit 75. The lab's
    ``rejoin_command`` goes through it: the sandbox's commands act on the node's files, which
    any namespace can touch, so without the gate a partitioned leader could "reach" a node it
    cannot reach (a real rejoin needs the network: ssh, an agent's API).

``python netlab_tools.py wait-http URL [--contains TEXT] [--timeout S]``
    Poll ``URL`` until it answers 200 (with ``TEXT`` in the body); exit 1 on timeout.

``python netlab_tools.py etcd-leader URL...``
    Print the client URL of the member that is etcd's raft leader (asked through
    ``/v3/maintenance/status`` of each member in turn); exit 1 when none answers.

``python netlab_tools.py sample CONFIG.json``
    The sampler, run in the observer namespace until SIGTERM. JSON lines, appended and flushed
    one by one to the config's ``out`` file, every wall-clock time in seconds:

    * ``{"k": "db", "node", "t0", "t1", "up", "rec", "write", "err"}`` every ``period`` per node:
      through the node's **unix socket** (a client local to the node, so an isolated primary
      is still observed), ``SELECT pg_is_in_recovery()`` then ``INSERT`` into
      ``helios_lab.probe`` in a transaction; ``write`` is true when the commit returned, i.e. the
      node took a write at some instant in ``[t0, t1]``.
    * ``{"k": "net", "node", "t", "reach"}`` every ``period`` per node: a TCP connection from the
      observer to the node's address: ``ok``, ``refused`` (host up, server down) or ``timeout``
      / ``unreachable`` (partitioned).
    * ``{"k": "orch", "inst", "t", "ok", "leader", "epoch", "primary", "reason"}`` every
      ``2 * period`` per orchestrator: its ``/v1/status``.
    * ``{"k": "etcd", "name", "t", "healthy"}`` every ``5 * period`` per etcd member.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

UNREACHABLE = 75


def reach(host: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "ok"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "unreachable"
        return f"error:{exc.errno}"


def cmd_gate(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        sys.stderr.write("gate: no command\n")
        return 2
    how = reach(args.host, args.port, args.timeout)
    if how not in ("ok", "refused"):
        sys.stderr.write(f"gate: {args.host}:{args.port} cannot be reached from here ({how})\n")
        return UNREACHABLE
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 127  # not reached


def fetch(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def cmd_wait_http(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status, body = fetch(args.url, 1.0)
            if status == 200 and (args.contains is None or args.contains in body):
                return 0
            last = f"{status} {body[:200]}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    sys.stderr.write(f"wait-http: {args.url} not ready within {args.timeout}s ({last})\n")
    return 1


def cmd_etcd_leader(args: argparse.Namespace) -> int:
    found: dict[str, str] = {}
    leader = None
    for url in args.urls:
        req = urllib.request.Request(f"{url}/v3/maintenance/status", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=1.0) as resp:
                doc = json.loads(resp.read())
        except (OSError, ValueError):
            continue
        found[str(doc.get("header", {}).get("member_id"))] = url
        leader = str(doc.get("leader"))
    if leader is None or leader not in found:
        sys.stderr.write(f"etcd-leader: no answer naming a member among {args.urls}\n")
        return 1
    print(found[leader])
    return 0


# --- the sampler ------------------------------------------------------------------------------


class Sampler:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.period = float(cfg.get("period", 0.1))
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._out = open(cfg["out"], "a", encoding="utf-8")  # noqa: SIM115 - closed in run()

    def emit(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def _every(self, period: float, work: Any) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            try:
                work()
            except Exception as exc:  # a sampler thread must never die silently
                self.emit({"k": "sampler-error", "t": time.time(), "err": repr(exc)[:300]})
            next_at = max(next_at + period, time.monotonic())
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def db_loop(self, node: dict[str, Any]) -> None:
        import psycopg

        conn: Any = None

        def once() -> None:
            nonlocal conn
            rec: dict[str, Any] = {"k": "db", "node": node["name"], "t0": time.time()}
            try:
                if conn is None:
                    conn = psycopg.connect(
                        host=node["socket_dir"],
                        port=node["port"],
                        user="postgres",
                        dbname="postgres",
                        connect_timeout=2,
                        autocommit=True,
                        options="-c statement_timeout=1000 -c lock_timeout=500",
                    )
                rec["up"] = True
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                rec["rec"] = bool(row[0]) if row else None
                if rec["rec"] is False:
                    conn.execute("CREATE SCHEMA IF NOT EXISTS helios_lab")
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS helios_lab.probe"
                        " (id bigserial PRIMARY KEY, node text, at double precision)"
                    )
                try:
                    with conn.transaction():
                        conn.execute(
                            "INSERT INTO helios_lab.probe (node, at) VALUES (%s, %s)",
                            (node["name"], time.time()),
                        )
                    rec["write"] = True
                except psycopg.Error as exc:
                    rec["write"] = False
                    rec["err"] = str(exc).strip().splitlines()[0][:160] if str(exc) else "error"
                    if conn.closed or conn.broken:
                        conn = None
            except (psycopg.Error, OSError) as exc:
                rec.setdefault("up", False)
                rec["write"] = False
                rec["err"] = (str(exc).strip().splitlines() or ["error"])[0][:160]
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
            rec["t1"] = time.time()
            self.emit(rec)

        self._every(self.period, once)

    def net_loop(self, node: dict[str, Any]) -> None:
        def once() -> None:
            t = time.time()
            how = reach(node["host"], node["port"], 0.3)
            self.emit({"k": "net", "node": node["name"], "t": t, "reach": how})

        self._every(self.period, once)

    def orch_loop(self, orch: dict[str, Any]) -> None:
        def once() -> None:
            rec: dict[str, Any] = {"k": "orch", "inst": orch["instance"], "t": time.time()}
            try:
                status, body = fetch(orch["url"] + "/v1/status", 0.5)
                doc = json.loads(body) if status == 200 else {}
                lead = doc.get("leadership", {})
                rec.update(
                    ok=status == 200,
                    leader=bool(lead.get("leader")),
                    epoch=lead.get("epoch"),
                    primary=(doc.get("primary") or {}).get("node"),
                    reason=doc.get("reason"),
                )
            except (OSError, ValueError) as exc:
                rec.update(ok=False, err=str(exc)[:120])
            rec["t1"] = time.time()
            self.emit(rec)

        self._every(2 * self.period, once)

    def etcd_loop(self, member: dict[str, Any]) -> None:
        def once() -> None:
            t = time.time()
            try:
                status, body = fetch(member["url"] + "/health", 0.5)
                healthy = status == 200 and '"true"' in body
            except OSError:
                healthy = False
            self.emit({"k": "etcd", "name": member["name"], "t": t, "healthy": healthy})

        self._every(5 * self.period, once)

    def run(self) -> None:
        threads = []
        for node in self.cfg.get("nodes", []):
            threads.append(threading.Thread(target=self.db_loop, args=(node,), daemon=True))
            threads.append(threading.Thread(target=self.net_loop, args=(node,), daemon=True))
        for orch in self.cfg.get("orchestrators", []):
            threads.append(threading.Thread(target=self.orch_loop, args=(orch,), daemon=True))
        for member in self.cfg.get("etcd", []):
            threads.append(threading.Thread(target=self.etcd_loop, args=(member,), daemon=True))
        self.emit({"k": "sampler-start", "t": time.time(), "pid": os.getpid()})
        for th in threads:
            th.start()
        try:
            self.stop.wait()
        finally:
            for th in threads:
                th.join(timeout=3)
            self.emit({"k": "sampler-stop", "t": time.time()})
            self._out.close()


def cmd_sample(args: argparse.Namespace) -> int:
    with open(args.config, encoding="utf-8") as fh:
        cfg = json.load(fh)
    sampler = Sampler(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sampler.stop.set())
    sampler.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netlab_tools")
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gate")
    g.add_argument("host")
    g.add_argument("port", type=int)
    g.add_argument("--timeout", type=float, default=1.0)
    g.add_argument("argv", nargs=argparse.REMAINDER)
    g.set_defaults(func=cmd_gate)
    w = sub.add_parser("wait-http")
    w.add_argument("url")
    w.add_argument("--contains")
    w.add_argument("--timeout", type=float, default=30.0)
    w.set_defaults(func=cmd_wait_http)
    e = sub.add_parser("etcd-leader")
    e.add_argument("urls", nargs="+")
    e.set_defaults(func=cmd_etcd_leader)
    s = sub.add_parser("sample")
    s.add_argument("config")
    s.set_defaults(func=cmd_sample)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
