"""Configuration of coordination between orchestrator instances: leader election and the
vantage points' published observations (the ``coordination`` section of the config file).

Guarantees: the timing is checked at load time so that a leader renews its lease several times
per ttl and steps down locally (``ttl - step_down_margin`` after its last renewal was sent)
before the coordination service can give the lease to another instance; credentials are only
accepted by reference (``env:``/``file:``), and only together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from orchestrator.config_types import Duration, Name, SecretRef, check_url

# etcd grants leases in whole seconds and refuses to expire one sooner than about 1.5 election
# timeouts; below 2 s a leader would spend its whole lease renewing it.
MIN_TTL = 2.0


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
        "next when one cannot be reached.",
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
        None, description="CA bundle to verify https:// endpoints (default: system CAs)."
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
        if problems:
            raise ValueError("; ".join(problems))
        return self
