"""Route53 through moto's server mode, on loopback, with a lookup for the authoritative server.

Moto keeps its state in module-global backends, shared by every moto server of the process. So
that each ``MotoRoute53`` starts empty like the other stand-ins, :meth:`MotoRoute53.start`
resets that state: do not run two at once in one process.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from typing import Any

from orchestrator.sandbox.standins._http import port_is_free

FAKE_KEY = "testing"
REGION = "us-east-1"


class MotoRoute53:
    """``moto.server.ThreadedMotoServer`` on ``host:port`` (0 picks a free port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._server: Any = None
        self._port: int | None = None
        self._client: Any = None
        self._client_lock = threading.Lock()

    def start(self) -> None:
        """Start serving, with no zones; raises OSError if the port is taken."""
        if self._server is not None:
            return
        # ThreadedMotoServer binds inside its thread and would wait forever on a busy port.
        if self._requested_port and not port_is_free(self._requested_port, self.host):
            raise OSError(f"port {self._requested_port} on {self.host} is already in use")
        from moto.server import ThreadedMotoServer

        quiet_werkzeug()

        server = ThreadedMotoServer(ip_address=self.host, port=self._requested_port, verbose=False)
        server.start()
        self._server = server
        self._port = int(server.get_host_and_port()[1])
        self.reset()  # moto's state outlives earlier servers of this process

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        server, self._server = self._server, None
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
        if server is not None:
            server.stop()
            inner = getattr(server, "_server", None)  # ThreadedMotoServer never closes it
            if inner is not None:
                inner.server_close()

    def __enter__(self) -> MotoRoute53:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None or self._server is None:
            raise RuntimeError("MotoRoute53 is not started")
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        """Forget every zone and record of every moto service in this process
        (``POST /moto-api/reset``)."""
        url = f"{self.endpoint_url}/moto-api/reset"
        req = urllib.request.Request(url, method="POST")  # noqa: S310 - our loopback URL
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            resp.read()

    def client(self) -> Any:
        """A boto3 Route53 client for this server (fake credentials, us-east-1); cached."""
        with self._client_lock:
            if self._client is None:
                self._client = make_client(self.endpoint_url)
            return self._client

    def lookup(self, name: str, rtype: str) -> tuple[int, list[str]] | None:
        """(ttl, values) of ``name``/``rtype`` in any hosted zone, read through the API."""
        fq = name.strip().lower().rstrip(".") + "."
        rtype = rtype.upper()
        client = self.client()
        ttl: int | None = None
        values: set[str] = set()
        for zone in client.list_hosted_zones(MaxItems="100")["HostedZones"]:
            if not (fq == zone["Name"] or fq.endswith("." + zone["Name"])):
                continue
            page = client.list_resource_record_sets(
                HostedZoneId=zone["Id"], StartRecordName=fq, StartRecordType=rtype, MaxItems="100"
            )
            for rrset in page["ResourceRecordSets"]:
                if rrset["Name"].lower() != fq or rrset["Type"] != rtype:
                    continue
                records = rrset.get("ResourceRecords") or []
                values.update(r["Value"] for r in records)
                if records and "TTL" in rrset:
                    ttl = int(rrset["TTL"]) if ttl is None else min(ttl, int(rrset["TTL"]))
        if not values:
            return None
        return (ttl if ttl is not None else 300), sorted(values)


def quiet_werkzeug() -> None:
    """Moto's server logs every request through werkzeug's logger (which adds its own stderr
    handler at INFO) even with ``verbose=False``; raise that logger to WARNING unless the
    application configured it."""
    logger = logging.getLogger("werkzeug")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def make_client(
    endpoint_url: str, timeout: float = 5.0, key_id: str = FAKE_KEY, secret: str = FAKE_KEY
) -> Any:
    """A boto3 Route53 client for a local endpoint, with explicit (fake) credentials: nothing
    is read from the environment or ``~/.aws``."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=REGION
    )
    config = Config(
        connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 2}
    )
    return session.client("route53", endpoint_url=endpoint_url, config=config)
