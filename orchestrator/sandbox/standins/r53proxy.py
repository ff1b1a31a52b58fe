"""A fault-injecting reverse proxy in front of moto's Route53, for supplier-outage drills.

moto has no fault switches, so tests and the sandbox point the Route53 adapter at this proxy:
requests pass through to moto unchanged unless a fault from :attr:`faults` matches, in which case
the proxy answers in Route53's own XML error shape (``Throttling`` for 429/400 throttles,
``ServiceUnavailable``/``InternalFailure`` for 5xx, ``AccessDenied`` for 403 ...), delays, hangs
or sends a malformed body — see :class:`~orchestrator.sandbox.standins.faults.FaultPlan`.
"""

from __future__ import annotations

import http.client
import uuid
from urllib.parse import urlsplit

from orchestrator.sandbox.standins._http import JsonStandIn, Request, Response

_CODES = {
    400: ("Sender", "InvalidInput"),
    401: ("Sender", "InvalidClientTokenId"),
    403: ("Sender", "AccessDenied"),
    404: ("Sender", "NoSuchHostedZone"),
    429: ("Sender", "Throttling"),
    500: ("Receiver", "InternalFailure"),
    502: ("Receiver", "ServiceUnavailable"),
    503: ("Receiver", "ServiceUnavailable"),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


class Route53FaultProxy(JsonStandIn):
    """Forwards to ``upstream`` (moto's endpoint URL); faults answer like Route53 would."""

    def __init__(
        self, upstream: str, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0
    ) -> None:
        super().__init__(host, port)
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream {upstream!r} must be http://HOST:PORT")
        self._upstream = (parts.hostname, parts.port)
        self._timeout = timeout

    @property
    def endpoint_url(self) -> str:
        return self.root_url

    def dispatch(self, req: Request) -> Response:
        conn = http.client.HTTPConnection(*self._upstream, timeout=self._timeout)
        try:
            headers = {k: v for k, v in req.headers.items() if k not in {"host", "connection"}}
            conn.request(req.method, req.target, body=req.body or None, headers=headers)
            up = conn.getresponse()
            body = up.read()
            out = {k: v for k, v in up.getheaders() if k.lower() not in _HOP_BY_HOP}
            return Response(up.status, body, out)
        finally:
            conn.close()

    def error(self, status: int, reason: str, message: str) -> Response:
        kind, code = _CODES.get(status, ("Receiver" if status >= 500 else "Sender", reason))
        body = (
            '<?xml version="1.0"?>\n'
            '<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
            f"<Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        ).encode()
        return Response(status, body, {"Content-Type": "text/xml"})
