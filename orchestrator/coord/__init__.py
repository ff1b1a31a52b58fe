"""Coordination between orchestrator instances: leader election with a fencing epoch and the
vantage points' published observations. :mod:`.base` holds the contract, :mod:`.etcd` the
etcd v3 backend, :mod:`.kubernetes` the Kubernetes Lease backend; :func:`build_coordinator`
picks the backend a configuration names.

This package never imports the composition root or the CLI (``orchestrator.app``,
``orchestrator.cli*``): import-linter checks it.
"""

from __future__ import annotations

from orchestrator.config_coord import CoordinationSettings
from orchestrator.coord.base import (
    CoordinationRejected,
    CoordinationUnavailable,
    Coordinator,
    LeaderInfo,
    Leadership,
    LostLeadership,
    Publication,
)
from orchestrator.errors import ConfigError

__all__ = [
    "CoordinationRejected",
    "CoordinationUnavailable",
    "Coordinator",
    "LeaderInfo",
    "Leadership",
    "LostLeadership",
    "Publication",
    "build_coordinator",
]


def build_coordinator(settings: CoordinationSettings) -> Coordinator:
    """The coordinator of the configured backend. Raises ConfigError when the Kubernetes
    backend's in-cluster defaults are needed and missing (not in a pod)."""
    if settings.backend == "etcd":
        from orchestrator.coord.etcd import EtcdCoordinator

        return EtcdCoordinator.from_settings(settings)
    if settings.backend == "kubernetes":
        from orchestrator.coord.kubernetes import KubernetesCoordinator

        return KubernetesCoordinator.from_settings(settings)
    raise ConfigError("coordination", [f"backend: {settings.backend!r} is not implemented"])
