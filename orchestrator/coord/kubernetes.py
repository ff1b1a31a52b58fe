"""Kubernetes backend of :class:`~orchestrator.coord.base.Coordinator`: leader election on a
``coordination.k8s.io/v1`` Lease, and the published documents as Leases too, through the API
server's REST API (:mod:`orchestrator.coord.k8s_api`, httpx).

Why no client library: ``kubernetes`` is synchronous; ``kubernetes-asyncio`` is an
OpenAPI-generated aiohttp client without type information (``mypy --strict`` sees ``Any``
everywhere); ``kr8s`` is 0.x with dynamic objects; ``lightkube`` (httpx, typed, async) comes
closest but pins its models package to a Kubernetes minor version, and the parts that matter
here would still be ours: one time budget per call across API server URLs, 404/409 as answers,
401/403 as :class:`CoordinationRejected`. Four REST calls on one resource fit in a module, httpx
is already a dependency, and the etcd backend has the same shape.

Objects (in the configured namespace; ``prefix`` ``/helios/`` and key ``helios-db/leader``
give ``helios.helios-db.leader``: the key's segments joined by dots, or, for a key that does
not map one-to-one onto a DNS-1123 name, a cleaned form plus a hash of the key). Each carries
the labels ``app.kubernetes.io/managed-by=helios-orchestrator``,
``helios-orchestrator/prefix=<prefix, dotted>`` and ``helios-orchestrator/role``
(``election`` or ``document``), and the annotation ``helios-orchestrator/key`` (the exact key,
checked on every read: a name collision is refused, never shared).

Leader election (guarantees beyond the protocol's):

* **Compare-and-set.** Campaign creates the Lease (POST: 409 AlreadyExists = lost) or takes
  over a free or expired one with a PUT carrying the ``resourceVersion`` it read (409 Conflict
  = someone else won). Renew and resign are PUTs with the ``resourceVersion`` and ``uid`` of
  the holder's last write: any other write in between, or a deletion, is a 409 and the holder
  re-reads. Every renewal moves ``renewTime`` forward (by a microsecond at least, whatever
  the wall clock does), so it is always a write that changes the ``resourceVersion``: an
  identical PUT would be stored as nothing, and a watching candidate would miss it. A write
  whose answer was lost is recognised on the next campaign by its
  ``helios-orchestrator/term`` annotation (a random value per acquisition) and adopted; an
  instance restarted under the same identity is not its old self and waits like the others.
* **Epoch = ``spec.leaseTransitions``.** The first holder creates the Lease with 1; every
  acquisition, by anyone (a resigned or expired holder included), writes the value it read
  plus one under the ``resourceVersion`` precondition, so epochs strictly increase per Lease.
  Resigning clears ``holderIdentity`` and keeps the count (the Lease is never deleted by us).
  :meth:`check_epoch` confirms holder, epoch, term (when this client won it) and that the
  lease has not expired. Deleting the Lease by hand restarts the count at 1 (outside the
  protocol, like deleting etcd's key): the term check still fences the old holder out.
* **Clocks.** A Lease is judged by its holder's wall clock (``renewTime``). Taking over needs
  two things: ``renewTime + leaseDurationSeconds`` past by this instance's wall clock, **and**
  the same ``resourceVersion`` seen unchanged for ``leaseDurationSeconds`` by this client's
  monotonic clock (client-go's rule). The second alone is what safety rests on: the holder's
  last renewal was sent before the Lease was first seen, and the holder steps down locally
  ``margin`` before ``valid_from + ttl`` (:mod:`orchestrator.lease`), so wall-clock skew
  between instances cannot give the Lease away early; only clock *rate* drift beyond the margin
  could. The price: a candidate that has just started waits a whole ``leaseDurationSeconds``
  before taking over an expired Lease. A resigned Lease (no holder) is taken at once.
  ``check_epoch`` and :meth:`leader` use the wall clock; a skewed clock makes them answer "not
  current" early (safe) or late (the epoch check still fences: a successor's epoch differs).
* Durations are whole seconds (``leaseDurationSeconds``), rounded up, like etcd's leases.

Reads (GET, list) carry no ``resourceVersion``: "most recent", a quorum read of etcd (or the
watch cache once it has caught up with etcd's current revision), which an API server cut off
from etcd's quorum cannot answer.

Published documents: one Lease per key (role ``document``), the JSON document in the
annotation ``helios-orchestrator/document`` (256 KiB for all annotations together: larger
documents are refused), its TTL emulated with ``renewTime`` (the write's wall time) plus
``leaseDurationSeconds``: :meth:`read_prefix` lists by label selector and skips the expired
ones; a publisher overwrites (PUT with the ``resourceVersion`` of its last write, re-read on a
409). Expired documents stay as objects (one per key ever published) until overwritten.
Revisions are ``resourceVersion``s, which Kubernetes guarantees to be comparable integers per
resource since 1.35 (KEP-5504) and which are etcd's revisions before that. Leases rather than
ConfigMaps: they are the API's object for small, often rewritten heartbeats (the vantage points
publish every tick), and the orchestrator then needs no write access to ConfigMaps, among them
its own configuration's.

RBAC: ``get``, ``list``, ``create``, ``update`` on ``leases`` in ``coordination.k8s.io``
(:data:`RBAC_VERBS`); nothing is deleted, nothing else is read.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import re
import secrets
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from orchestrator.config_coord import CoordinationSettings
from orchestrator.coord.base import (
    CoordinationRejected,
    CoordinationUnavailable,
    LeaderInfo,
    Leadership,
    LostLeadership,
    Publication,
)
from orchestrator.coord.k8s_api import GROUP_VERSION, KubeApi
from orchestrator.errors import ConfigError

log = structlog.get_logger("helios.coord.kubernetes")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RBAC_VERBS = {("coordination.k8s.io", "leases"): ("get", "list", "create", "update")}
MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PREFIX = "helios-orchestrator/prefix"
LABEL_ROLE = "helios-orchestrator/role"
ANN_KEY = "helios-orchestrator/key"
ANN_TERM = "helios-orchestrator/term"
ANN_DOCUMENT = "helios-orchestrator/document"
DOCUMENT_LIMIT = 250 * 1024  # annotations: 256 KiB in all; room for the key and the rest
MAX_NAME = 253
_SEGMENT = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def object_name(prefix: str, key: str) -> str:
    """The DNS-1123 subdomain naming ``key`` under ``prefix``: the segments joined by dots
    when each is a DNS label and the whole fits; otherwise a cleaned form and a hash."""
    segments = [s for s in prefix.strip("/").split("/") if s] + key.split("/")
    plain = ".".join(segments)
    if all(_SEGMENT.match(s) for s in segments) and len(plain) <= MAX_NAME:
        return plain
    digest = hashlib.sha256(f"{prefix}{key}".encode()).hexdigest()[:12]
    cleaned = (re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") for s in segments)
    stem = ".".join(c for c in cleaned if c)[: MAX_NAME - len(digest) - 1].strip(".-")
    return f"{stem}.{digest}" if stem else digest


def lease_seconds(ttl: float) -> int:
    """``leaseDurationSeconds`` is whole seconds: round up, never below one."""
    return max(1, math.ceil(ttl))


def micro_time(t: float) -> str:
    """A Kubernetes ``MicroTime``: RFC 3339, UTC, exactly six fractional digits."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: object) -> float | None:
    """Seconds since the epoch of a ``MicroTime`` (or ``Time``); None when absent or bad."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo else None


@dataclass
class _Held:
    """A leadership this client won: the Lease as last written, for the next PUT."""

    candidate: str
    epoch: int
    term: str
    lease: dict[str, Any]


class KubernetesCoordinator:
    """A :class:`~orchestrator.coord.base.Coordinator` on Kubernetes Leases."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        namespace: str,
        prefix: str = "/helios/",
        timeout: float = 2.0,
        token: str | None = None,
        token_file: Path | None = None,
        verify: ssl.SSLContext | bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        label = ".".join(s for s in prefix.strip("/").split("/") if s)
        if len(label) > 63 or not _LABEL_VALUE.match(label):
            raise ValueError(f"prefix {prefix!r} does not make a label value")
        self._api = KubeApi(
            endpoints,
            namespace=namespace,
            token=token,
            token_file=token_file,
            timeout=timeout,
            verify=verify,
            clock=clock,
        )
        self._prefix = prefix
        self._label = label
        self._clock = clock
        self._wall = wall
        self._held: dict[str, _Held] = {}
        self._pending: dict[str, tuple[str, float]] = {}  # name -> (term, valid_from) unanswered
        self._seen: dict[str, tuple[str, float]] = {}  # lease -> (resourceVersion, first seen)
        self._written: dict[str, str] = {}  # document lease -> resourceVersion of our write

    @classmethod
    def from_settings(
        cls,
        settings: CoordinationSettings,
        *,
        environ: Mapping[str, str] = os.environ,
        service_account: Path = SERVICE_ACCOUNT_DIR,
    ) -> KubernetesCoordinator:
        """Build from the ``coordination`` settings, with the in-cluster defaults: the API
        server from ``KUBERNETES_SERVICE_HOST``/``_PORT``, and the service account's token, CA
        and namespace under ``service_account``. Raises ConfigError when one is missing."""
        problems: list[str] = []
        endpoints = list(settings.endpoints)
        if not endpoints:
            host, port = (
                environ.get("KUBERNETES_SERVICE_HOST"),
                environ.get("KUBERNETES_SERVICE_PORT", "443"),
            )
            if host:
                endpoints = [
                    f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
                ]
            else:
                problems.append(
                    "endpoints: not in a pod (KUBERNETES_SERVICE_HOST is unset): give the API "
                    "server URL"
                )
        namespace = settings.namespace
        if namespace is None:
            try:
                namespace = (service_account / "namespace").read_text(encoding="utf-8").strip()
            except OSError:
                problems.append(
                    f"namespace: not given, and {service_account / 'namespace'} is unreadable"
                )
        token_file = settings.token_file
        if token_file is None and (service_account / "token").is_file():
            token_file = service_account / "token"
        elif token_file is not None and not token_file.is_file():
            problems.append(f"token_file: {token_file} does not exist")
        ca_file = settings.ca_file
        if ca_file is None and (service_account / "ca.crt").is_file():
            ca_file = service_account / "ca.crt"
        if problems:
            raise ConfigError("coordination", problems)
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=str(ca_file))
        assert namespace is not None
        return cls(
            endpoints,
            namespace=namespace,
            prefix=settings.prefix,
            timeout=settings.timeout,
            token_file=token_file,
            verify=verify,
        )

    # --- names and objects -------------------------------------------------------------------

    def lease_name(self, key: str) -> str:
        """The Lease that holds election ``key`` or document ``key``."""
        return object_name(self._prefix, key)

    def _new(self, key: str, role: str, spec: dict[str, Any], **annotations: str) -> dict[str, Any]:
        return {
            "apiVersion": GROUP_VERSION,
            "kind": "Lease",
            "metadata": {
                "name": self.lease_name(key),
                "namespace": self._api.namespace,
                "labels": {
                    MANAGED_BY: "helios-orchestrator",
                    LABEL_PREFIX: self._label,
                    LABEL_ROLE: role,
                },
                "annotations": {ANN_KEY: key, **annotations},
            },
            "spec": spec,
        }

    def _check_owner(self, lease: Mapping[str, Any], key: str, role: str) -> None:
        meta = lease.get("metadata") or {}
        owner = (meta.get("annotations") or {}).get(ANN_KEY)
        owned_as = (meta.get("labels") or {}).get(LABEL_ROLE)
        if owner != key or owned_as != role:
            raise CoordinationRejected(
                f"Lease {meta.get('name')} in {self._api.namespace} is not the {role} {key!r} "
                f"(it holds {owner!r} as {owned_as!r}): another application's, or a name "
                "collision; change the coordination prefix"
            )

    # --- leader election ---------------------------------------------------------------------

    async def campaign(self, name: str, candidate_id: str, ttl: float) -> Leadership | None:
        lease_name = self.lease_name(name)
        seconds = lease_seconds(ttl)
        current = await self._api.get(lease_name)
        if current is not None:
            self._check_owner(current, name, "election")
            adopted = self._adopt(name, candidate_id, current)
            if adopted is not None:
                return adopted
            if _holder(current) and not self._expired(lease_name, current):
                return None
        term = secrets.token_hex(8)
        now = self._wall()
        spec = {
            "holderIdentity": candidate_id,
            "leaseDurationSeconds": seconds,
            "acquireTime": micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": (_epoch(current) if current is not None else 0) + 1,
        }
        valid_from = self._clock()
        self._pending[name] = (term, valid_from)
        if current is None:
            won = await self._api.create(self._new(name, "election", spec, **{ANN_TERM: term}))
        else:
            lease = copy.deepcopy(current)
            lease["spec"] = {**(current.get("spec") or {}), **spec}
            lease["metadata"].setdefault("annotations", {})[ANN_TERM] = term
            won = await self._api.replace(lease)
        # An answer (won or lost) settles it; an error leaves the write pending: maybe applied.
        del self._pending[name]
        if won is None:
            return None
        return self._hold(name, candidate_id, term, won, float(seconds), valid_from)

    def _adopt(self, name: str, candidate: str, lease: dict[str, Any]) -> Leadership | None:
        """Our own acquisition, applied by a request whose answer was lost."""
        pending = self._pending.pop(name, None)
        if pending is None or _term(lease) != pending[0] or _holder(lease) != candidate:
            return None
        log.info("kubernetes.campaign.adopted", election=name, epoch=_epoch(lease))
        duration = float(_int((lease.get("spec") or {}).get("leaseDurationSeconds")))
        return self._hold(name, candidate, pending[0], lease, duration, pending[1])

    def _hold(
        self, name: str, candidate: str, term: str, lease: dict[str, Any], ttl: float, since: float
    ) -> Leadership:
        epoch = _epoch(lease)
        self._held[name] = _Held(candidate, epoch, term, lease)
        log.info("kubernetes.campaign.won", election=name, candidate=candidate, epoch=epoch)
        return Leadership(name, candidate, epoch, _version_number(lease), ttl, since)

    def _expired(self, lease_name: str, lease: Mapping[str, Any]) -> bool:
        """Free to take: expired by its ``renewTime`` and unchanged for a whole duration as
        seen from here (see the module docstring)."""
        version, now = _version(lease), self._clock()
        seen = self._seen.get(lease_name)
        if seen is None or seen[0] != version:
            seen = self._seen[lease_name] = (version, now)
        spec = lease.get("spec") or {}
        duration = _int(spec.get("leaseDurationSeconds"))
        renewed = parse_time(spec.get("renewTime"))
        by_renew_time = renewed is None or renewed + duration <= self._wall()
        return by_renew_time and now - seen[1] >= duration

    async def renew(self, leadership: Leadership) -> Leadership:
        held = await self._held_for(leadership)
        for _ in range(2):
            lease = copy.deepcopy(held.lease)
            # Strictly later than the last one: an identical PUT would write nothing and keep
            # the resourceVersion, and a candidate watching it would not see the renewal.
            last = parse_time(lease["spec"].get("renewTime")) or 0.0
            lease["spec"]["renewTime"] = micro_time(max(self._wall(), last + 1e-6))
            valid_from = self._clock()
            written = await self._api.replace(lease)
            if written is not None:
                if _version(written) == _version(lease):
                    raise CoordinationUnavailable("the API server did not store the renewal")
                held.lease = written
                return replace(leadership, lease_id=_version_number(written), valid_from=valid_from)
            current = await self._api.get(self.lease_name(leadership.name))
            if current is None or not _ours(current, held):
                self._held.pop(leadership.name, None)
                raise LostLeadership(
                    leadership.name,
                    leadership.epoch,
                    "the Lease is gone"
                    if current is None
                    else f"held by {_holder(current)!r} with epoch {_epoch(current)}",
                )
            held.lease = current  # still ours; someone else touched it (labels, annotations)
        raise LostLeadership(leadership.name, leadership.epoch, "the Lease keeps changing")

    async def _held_for(self, leadership: Leadership) -> _Held:
        held = self._held.get(leadership.name)
        if held is not None and held.epoch == leadership.epoch:
            return held
        # Won through another client (or forgotten): what the service says.
        current = await self._api.get(self.lease_name(leadership.name))
        if (
            current is None
            or _holder(current) != leadership.candidate_id
            or _epoch(current) != leadership.epoch
        ):
            raise LostLeadership(leadership.name, leadership.epoch, "the Lease is not ours")
        held = _Held(leadership.candidate_id, leadership.epoch, _term(current) or "", current)
        self._held[leadership.name] = held
        return held

    async def resign(self, leadership: Leadership) -> None:
        held = self._held.get(leadership.name)
        if held is None or held.epoch != leadership.epoch:
            lease = await self._api.get(self.lease_name(leadership.name))
            if lease is None:
                return
            held = _Held(leadership.candidate_id, leadership.epoch, _term(lease) or "", lease)
        self._held.pop(leadership.name, None)
        lease = held.lease
        for _ in range(2):
            if not _ours(lease, held):
                return  # lost already: nothing to give up
            released = copy.deepcopy(lease)
            released["spec"].pop("holderIdentity", None)
            released["spec"]["renewTime"] = micro_time(self._wall())
            released["metadata"].get("annotations", {}).pop(ANN_TERM, None)
            if await self._api.replace(released) is not None:
                log.info("kubernetes.resigned", election=leadership.name, epoch=held.epoch)
                return
            current = await self._api.get(self.lease_name(leadership.name))
            if current is None:
                return
            lease = current

    async def leader(self, name: str) -> LeaderInfo | None:
        lease = await self._api.get(self.lease_name(name))
        if lease is None:
            return None
        self._check_owner(lease, name, "election")
        holder = _holder(lease)
        if not holder or _wall_expired(lease, self._wall()):
            return None
        return LeaderInfo(holder, _epoch(lease))

    async def check_epoch(self, name: str, epoch: int) -> bool:
        lease = await self._api.get(self.lease_name(name))
        if lease is None:
            return False
        self._check_owner(lease, name, "election")
        if not _holder(lease) or _epoch(lease) != epoch or _wall_expired(lease, self._wall()):
            return False
        held = self._held.get(name)
        return held is None or held.epoch != epoch or _ours(lease, held)

    # --- published documents -----------------------------------------------------------------

    async def publish(self, key: str, document: Mapping[str, Any], ttl: float) -> int:
        payload = json.dumps(dict(document), separators=(",", ":"), sort_keys=True)
        if len(payload.encode()) > DOCUMENT_LIMIT:
            raise CoordinationRejected(
                f"{key}: a {len(payload.encode())}-byte document does not fit a Lease "
                f"annotation ({DOCUMENT_LIMIT} bytes at most)"
            )
        lease_name = self.lease_name(key)
        version = self._written.pop(lease_name, None)
        for _ in range(2):
            lease = self._new(
                key,
                "document",
                {"leaseDurationSeconds": lease_seconds(ttl), "renewTime": micro_time(self._wall())},
                **{ANN_DOCUMENT: payload},
            )
            if version is None:
                current = await self._api.get(lease_name)
                if current is None:
                    written = await self._api.create(lease)
                else:
                    self._check_owner(current, key, "document")
                    lease["metadata"]["resourceVersion"] = _version(current)
                    written = await self._api.replace(lease)
            else:
                lease["metadata"]["resourceVersion"] = version
                written = await self._api.replace(lease)
            if written is not None:
                self._written[lease_name] = _version(written)
                return _version_number(written)
            version = None  # someone else wrote it since: read it again
        raise CoordinationUnavailable(f"{key}: other writers kept changing it")

    async def read_prefix(self, prefix: str) -> dict[str, Publication]:
        items = await self._api.select(
            f"{LABEL_PREFIX}={self._label},{LABEL_ROLE}=document,{MANAGED_BY}=helios-orchestrator"
        )
        now = self._wall()
        out: dict[str, Publication] = {}
        for lease in items:
            annotations = (lease.get("metadata") or {}).get("annotations") or {}
            key = annotations.get(ANN_KEY)
            if not isinstance(key, str) or not key.startswith(prefix):
                continue
            if _wall_expired(lease, now):
                continue
            with contextlib.suppress(ValueError, TypeError):
                doc = json.loads(annotations.get(ANN_DOCUMENT, ""))
                if isinstance(doc, dict):
                    out[key] = Publication(doc, _version_number(lease))
        return out

    async def aclose(self) -> None:
        await self._api.aclose()


# --- reading a Lease --------------------------------------------------------------------------


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _holder(lease: Mapping[str, Any]) -> str:
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def _epoch(lease: Mapping[str, Any]) -> int:
    return _int((lease.get("spec") or {}).get("leaseTransitions"))


def _term(lease: Mapping[str, Any]) -> str | None:
    value = ((lease.get("metadata") or {}).get("annotations") or {}).get(ANN_TERM)
    return value if isinstance(value, str) else None


def _version(lease: Mapping[str, Any]) -> str:
    return str((lease.get("metadata") or {}).get("resourceVersion") or "")


def _version_number(lease: Mapping[str, Any]) -> int:
    """The ``resourceVersion`` as the integer it is (KEP-5504); refused otherwise."""
    version = _version(lease)
    if not version.isdigit():
        raise CoordinationRejected(f"resourceVersion {version!r} is not an integer")
    return int(version)


def _ours(lease: Mapping[str, Any], held: _Held) -> bool:
    return (
        _holder(lease) == held.candidate
        and _epoch(lease) == held.epoch
        and (not held.term or _term(lease) == held.term)
    )


def _wall_expired(lease: Mapping[str, Any], now: float) -> bool:
    spec = lease.get("spec") or {}
    renewed = parse_time(spec.get("renewTime"))
    return renewed is None or renewed + _int(spec.get("leaseDurationSeconds")) <= now
