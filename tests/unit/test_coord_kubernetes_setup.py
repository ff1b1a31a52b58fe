"""The Kubernetes Lease backend's pure parts and its setup: object names, MicroTime, the
``coordination`` settings for ``backend: kubernetes`` and the in-cluster defaults resolved when
the coordinator is built. Its behaviour is in tests/integration/test_coord_kubernetes.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.config_coord import CoordinationSettings
from orchestrator.coord import build_coordinator
from orchestrator.coord.kubernetes import (
    KubernetesCoordinator,
    lease_seconds,
    micro_time,
    object_name,
    parse_time,
)
from orchestrator.errors import ConfigError

SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def test_object_names_are_readable_when_the_key_maps_one_to_one() -> None:
    assert object_name("/helios/", "helios-db/leader") == "helios.helios-db.leader"
    assert object_name("/a/b/", "svc/vantage/us-east") == "a.b.svc.vantage.us-east"


@pytest.mark.parametrize(
    "key",
    ["svc/vantage/US_East", "svc/a.b", "svc//x", "svc/x/", "-svc/x", "svc/" + "x" * 300, "é/ü"],
)
def test_other_keys_get_a_hash(key: str) -> None:
    name = object_name("/helios/", key)
    assert SUBDOMAIN.match(name) and len(name) <= 253
    assert re.search(r"\.[0-9a-f]{12}$", name) or re.fullmatch(r"[0-9a-f]{12}", name)


def test_names_that_would_collide_do_not() -> None:
    keys = ["svc/a.b", "svc/a/b", "svc/a-b", "svc/A/b", "svc/a_b"]
    names = {object_name("/helios/", k) for k in keys}
    assert len(names) == len(keys)


@given(st.text(min_size=1, max_size=400))
def test_every_key_makes_a_valid_name(key: str) -> None:
    name = object_name("/helios/", key)
    assert SUBDOMAIN.match(name) and len(name) <= 253


def test_micro_time_round_trip() -> None:
    text = micro_time(1_700_000_000.123456)
    assert text == "2023-11-14T22:13:20.123456Z"
    assert parse_time(text) == pytest.approx(1_700_000_000.123456, abs=1e-6)
    assert parse_time("2023-11-15T00:13:20.5+02:00") == pytest.approx(1_700_000_000.5)
    assert parse_time("2023-11-14T22:13:20") is None  # no zone: not a Kubernetes time
    assert parse_time(None) is None and parse_time("soon") is None
    assert [lease_seconds(x) for x in (0.2, 3.0, 10.5)] == [1, 3, 11]


# --- settings ---------------------------------------------------------------------------------


def test_kubernetes_settings() -> None:
    s = CoordinationSettings.model_validate(
        {"backend": "kubernetes", "namespace": "helios", "token_file": "/tmp/t", "ttl": "15s"}
    )
    assert (s.namespace, s.token_file, s.endpoints) == ("helios", Path("/tmp/t"), [])
    for url in ("https://10.0.0.1:6443", "http://127.0.0.1:8001", "http://localhost:8001"):
        CoordinationSettings(backend="kubernetes", endpoints=[url])


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"endpoints": ["http://e:2379"], "namespace": "x"}, "only for the kubernetes backend"),
        ({"endpoints": ["http://e:2379"], "token_file": "/t"}, "only for the kubernetes"),
        ({"backend": "kubernetes", "endpoints": ["http://10.0.0.1:6443"]}, "in clear"),
        ({"backend": "kubernetes", "prefix": "/Helios/"}, "cannot name Kubernetes objects"),
        ({"backend": "kubernetes", "prefix": "/" + "a" * 64 + "/"}, "63 characters"),
        ({"backend": "kubernetes", "namespace": "Bad_NS"}, "not a valid name"),
        (
            {"backend": "kubernetes", "username": "u", "password": "env:HOME"},
            "only for the etcd backend",
        ),
    ],
)
def test_kubernetes_settings_problems(data: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        CoordinationSettings.model_validate(data)


# --- in-cluster defaults ----------------------------------------------------------------------


def service_account(tmp_path: Path, namespace: str = "helios") -> Path:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "namespace").write_text(namespace)
    (sa / "token").write_text("sa-token-0123456789\n")
    return sa


async def test_in_cluster_defaults(tmp_path: Path) -> None:
    sa = service_account(tmp_path)
    settings = CoordinationSettings(backend="kubernetes")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    coord = KubernetesCoordinator.from_settings(settings, environ=env, service_account=sa)
    try:
        api = coord._api
        assert api._endpoints == ["https://10.96.0.1:443"]
        assert api.namespace == "helios"
        assert api._token == "sa-token-0123456789" and api._token_file == sa / "token"
        assert coord.lease_name("helios-db/leader") == "helios.helios-db.leader"
    finally:
        await coord.aclose()
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    coord = KubernetesCoordinator.from_settings(settings, environ=env, service_account=sa)
    try:
        assert coord._api._endpoints == ["https://[fd00::1]:6443"]
    finally:
        await coord.aclose()


async def test_explicit_settings_win_and_no_token_outside_a_pod(tmp_path: Path) -> None:
    settings = CoordinationSettings(
        backend="kubernetes", endpoints=["http://127.0.0.1:8001"], namespace="ops"
    )
    coord = KubernetesCoordinator.from_settings(
        settings, environ={}, service_account=tmp_path / "absent"
    )
    try:
        assert coord._api._endpoints == ["http://127.0.0.1:8001"]
        assert coord._api.namespace == "ops" and coord._api._token is None
    finally:
        await coord.aclose()
    coord = build_coordinator(settings)  # the same, through the backend switch
    try:
        assert isinstance(coord, KubernetesCoordinator)
    finally:
        await coord.aclose()


def test_outside_a_pod_without_settings_is_a_config_error(tmp_path: Path) -> None:
    settings = CoordinationSettings(backend="kubernetes", token_file=tmp_path / "missing")
    with pytest.raises(ConfigError) as exc:
        KubernetesCoordinator.from_settings(
            settings, environ={}, service_account=tmp_path / "absent"
        )
    text = str(exc.value)
    assert "KUBERNETES_SERVICE_HOST is unset" in text
    assert "namespace" in text and "does not exist" in text
