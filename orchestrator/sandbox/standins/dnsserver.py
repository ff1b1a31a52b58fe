"""A tiny authoritative DNS server over UDP, answering from a lookup function.

``lookup(name, rtype)`` receives a lower-case fully qualified name with a trailing dot and an
upper-case type (``A``, ``AAAA`` or ``CNAME``) and returns ``(ttl, values)`` or None. Every
answer carries the AA flag. For an A/AAAA question whose name holds a CNAME, the answer is the
CNAME followed by what its target resolves to (chased through the same lookup, up to 8 links).
A name with none of A/AAAA/CNAME gives NXDOMAIN; a name with other types only gives NOERROR with
an empty answer. A failing lookup gives SERVFAIL. There is no SOA in negative answers and no TCP.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Lookup = Callable[[str, str], tuple[int, list[str]] | None]

log = logging.getLogger(__name__)

SERVED = ("A", "AAAA", "CNAME")
MAX_CNAME_CHAIN = 8


class AuthoritativeServer:
    """See the module docstring. ``port=0`` picks a free port, read it from :attr:`port`."""

    def __init__(self, lookup: Lookup, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lookup = lookup
        self.host = host
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.queries = 0

    def start(self) -> None:
        """Bind the UDP socket (raises OSError if taken) and serve in a daemon thread."""
        if self._sock is not None:
            return
        if self._stop.is_set():
            raise RuntimeError("AuthoritativeServer was stopped; create a new one")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        sock.settimeout(0.05)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="dns-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> AuthoritativeServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("AuthoritativeServer is not started")
        return int(self._sock.getsockname()[1])

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(wire)
            if reply is not None:
                self.queries += 1
                try:
                    sock.sendto(reply, peer)
                except OSError as exc:
                    log.debug("cannot answer %s: %s", peer, exc)

    def answer(self, wire: bytes) -> bytes | None:
        """The reply to one query in wire format (None: not a DNS query, drop it)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if query.flags & dns.flags.QR:
            return None
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        resp.flags &= ~dns.flags.RA
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            resp.set_rcode(dns.rcode.NOTIMP if len(query.question) == 1 else dns.rcode.FORMERR)
            return resp.to_wire()
        question = query.question[0]
        try:
            self._fill(resp, question.name, dns.rdatatype.to_text(question.rdtype))
            return resp.to_wire()
        except Exception:  # the top of a request: a failing lookup is SERVFAIL, not a crash
            log.exception("cannot answer %s", question.name)
            resp.answer.clear()
            resp.set_rcode(dns.rcode.SERVFAIL)
            return resp.to_wire()

    def _fill(self, resp: dns.message.Message, qname: dns.name.Name, qtype: str) -> None:
        name = qname
        for _ in range(MAX_CNAME_CHAIN):
            text = name.to_text().lower()
            found = self._lookup(text, qtype) if qtype in SERVED else None
            if found is not None:
                resp.answer.append(_rrset(name, qtype, found))
                return
            cname = self._lookup(text, "CNAME") if qtype in ("A", "AAAA") else None
            if cname is None:
                break
            resp.answer.append(_rrset(name, "CNAME", cname))
            name = dns.name.from_text(cname[1][0])
        if not resp.answer and not any(
            self._lookup(qname.to_text().lower(), t) is not None for t in SERVED
        ):
            resp.set_rcode(dns.rcode.NXDOMAIN)


def _rrset(name: dns.name.Name, rtype: str, found: tuple[int, list[str]]) -> dns.rrset.RRset:
    ttl, values = found
    return dns.rrset.from_text_list(
        name, ttl, dns.rdataclass.IN, rtype, list(values), origin=dns.name.root, relativize=False
    )
