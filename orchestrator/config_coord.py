"""Configuration of coordination between orchestrator instances: leader election and the
vantage points' published observations (the ``coordination`` section of the config file).

Guarantees: the timing is checked at load time so that a leader renews its lease several times
per ttl and steps down locally (``ttl - step_down_margin`` after its last renewal was sent)
before the coordination service can give the lease to another instance; credentials are only
accepted by reference (``env:``/``file:``), and only together; the settings of one backend are
refused with the other. The Kubernetes backend's in-cluster defaults (API server from
``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``, the service account's token, CA and
namespace) are resolved when the coordinator is built (:mod:`orchestrator.coord.kubernetes`),
not here, so ``config check`` works outside a pod.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from orchestrator.config_types import Duration, Name, SecretRef, check_url

# etcd grants leases in whole seconds and refuses to expire one sooner than about 1.5 election
# timeouts; below 2 s a leader would spend its whole lease renewing it.
MIN_TTL = 2.0


# A Kubernetes name segment (RFC 1123 label): the prefix becomes a label value (at most 63
# characters) and the first part of every object name.
_K8S_SEGMENT = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def _check_prefix(value: str) -> str:
    if not (value.startswith("/") and value.endswith("/")) or "//" in value:
        raise ValueError("expected a key prefix that starts and ends with '/', e.g. /helios/")
    return value


class CoordinationSettings(BaseModel):
    """Where the orchestrator instances meet, and the leader lease's timing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["etcd", "kubernetes"] = Field(
        "etcd", description="etcd (v3) or a Kubernetes Lease (in a cluster)."
    )
    endpoints: list[Annotated[str, AfterValidator(check_url)]] = Field(
        default_factory=list,
        description="etcd client URLs (http:// or https://), one per member; a call tries the "
        "next when one cannot be reached. kubernetes: the API server URL(s) (https://; http:// "
        "only on loopback, e.g. kubectl proxy), default in a pod "
        "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.",
    )
    prefix: Annotated[str, AfterValidator(_check_prefix)] = Field(
        "/helios/", description="Key prefix (namespace) of everything this service writes."
    )
    ttl: Duration = Field(
        10.0,
        ge=MIN_TTL,
        description="Leader lease time to live (rounded up to whole seconds). A new leader "
        "takes over at most this long after the old one is lost.",
    )
    step_down_margin: Duration | None = Field(
        None,
        gt=0,
        description="The leader considers itself leader until ttl minus this after its last "
        "renewal was sent (default: ttl/5).",
    )
    timeout: Duration = Field(
        2.0, gt=0, description="Budget of one call to the coordination service (all endpoints)."
    )
    instance_id: Name | None = Field(
        None, description="This orchestrator instance's name (default: the host name)."
    )
    vantage: Name | None = Field(
        None, description="The vantage point this instance observes from, e.g. its region."
    )
    vantage_quorum: int = Field(
        2,
        ge=1,
        description="How many vantage points (orchestrator instances, this one included) must "
        "see the primary fail before the leader declares it DOWN.",
    )
    username: str | None = Field(None, min_length=1, description="etcd user, with password.")
    password: SecretRef | None = Field(None, description="etcd password reference.")
    ca_file: Path | None = Field(
        None,
        description="CA bundle to verify https:// endpoints (default: system CAs; kubernetes: "
        "the service account's ca.crt when it exists).",
    )
    namespace: Name | None = Field(
        None,
        description="kubernetes: namespace of the Leases (default: the pod's own, from the "
        "service account).",
    )
    token_file: Path | None = Field(
        None,
        description="kubernetes: bearer token file, read again every minute and after a 401 "
        "(the kubelet rotates it; default: the service account's token when it exists; none "
        "behind kubectl proxy).",
    )

    @property
    def renew_interval(self) -> float:
        """Time between renewals: a third of the ttl."""
        return self.ttl / 3

    @property
    def margin(self) -> float:
        """The step-down margin in force."""
        return self.step_down_margin if self.step_down_margin is not None else self.ttl / 5

    @model_validator(mode="after")
    def _check(self) -> CoordinationSettings:
        problems: list[str] = []
        if self.backend == "etcd" and not self.endpoints:
            problems.append("endpoints: the etcd backend needs at least one endpoint URL")
        if self.margin >= self.ttl - self.renew_interval:
            problems.append(
                f"step_down_margin: {self.margin:g}s leaves no time to renew: it must be below "
                f"two thirds of the ttl ({self.ttl - self.renew_interval:g}s)"
            )
        if self.timeout > self.renew_interval:
            problems.append(
                f"timeout: {self.timeout:g}s must not exceed the renew interval, a third of the "
                f"ttl ({self.renew_interval:g}s)"
            )
        if (self.username is None) != (self.password is None):
            problems.append("username and password: give both or neither")
        if self.backend == "etcd" and (self.namespace or self.token_file):
            problems.append("namespace and token_file: only for the kubernetes backend")
        if self.backend == "kubernetes":
            problems.extend(self._kubernetes_problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _kubernetes_problems(self) -> list[str]:
        problems: list[str] = []
        if self.username is not None or self.password is not None:
            problems.append("username and password: only for the etcd backend")
        segments = self.prefix.strip("/").split("/")
        if not all(_K8S_SEGMENT.match(s) for s in segments) or len(".".join(segments)) > 63:
            problems.append(
                f"prefix: {self.prefix!r} cannot name Kubernetes objects: use lower-case "
                "letters, digits and dashes between the slashes, 63 characters at most"
            )
        for url in self.endpoints:
            parts = urlsplit(url)
            if parts.scheme != "https" and parts.netloc.rsplit(":", 1)[0] not in _LOOPBACK_HOSTS:
                problems.append(
                    f"endpoints: {url} would send the bearer token in clear: the API server "
                    "takes https:// (http:// only on loopback, e.g. kubectl proxy)"
                )
        return problems
