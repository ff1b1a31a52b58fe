"""The Kubernetes API server stand-in (Leases only), driven over HTTP the way a client sees it:
Status objects in the API's documented shape, resourceVersion optimistic concurrency, the Lease
strategy's create-on-update and no unconditional update, label selectors, paging, validation,
the bearer token and the namespace boundary. Fast: one server on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orchestrator.sandbox.standins.kubernetes import KubernetesStandIn

TOKEN = "standin-token-0123456789"
BASE = "/apis/coordination.k8s.io/v1/namespaces/ns1/leases"


@pytest.fixture
def server() -> Iterator[KubernetesStandIn]:
    srv = KubernetesStandIn(TOKEN, namespaces=["ns1"])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def http(server: KubernetesStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False
    ) as c:
        yield c


def lease(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}


def assert_status(
    resp: httpx.Response, code: int, reason: str, message: str = ""
) -> dict[str, Any]:
    assert resp.status_code == code, resp.text
    body = resp.json()
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["code"] == code and body["reason"] == reason
    assert message in body["message"]
    assert body["metadata"] == {}
    return dict(body)


def test_create_get_and_already_exists(http: httpx.Client) -> None:
    resp = http.post(BASE, json=lease("a", holderIdentity="x", leaseDurationSeconds=10))
    assert resp.status_code == 201
    created = resp.json()
    assert (created["kind"], created["apiVersion"]) == ("Lease", "coordination.k8s.io/v1")
    meta = created["metadata"]
    assert meta["namespace"] == "ns1" and meta["uid"] and meta["creationTimestamp"]
    assert meta["resourceVersion"].isdigit()
    assert http.get(f"{BASE}/a").json() == created
    body = assert_status(
        http.post(BASE, json=lease("a")), 409, "AlreadyExists", '"a" already exists'
    )
    assert body["details"] == {"name": "a", "group": "coordination.k8s.io", "kind": "leases"}
    body = assert_status(http.get(f"{BASE}/b"), 404, "NotFound")
    assert body["message"] == 'leases.coordination.k8s.io "b" not found'
    assert body["details"]["name"] == "b"
    created_rv = lease("c")
    created_rv["metadata"]["resourceVersion"] = "5"
    assert_status(http.post(BASE, json=created_rv), 500, "InternalError", "should not be set")


def test_put_is_a_compare_and_set_on_the_resource_version(http: httpx.Client) -> None:
    first = http.post(BASE, json=lease("a", holderIdentity="x", leaseDurationSeconds=10)).json()
    rv = first["metadata"]["resourceVersion"]
    # Leases never take an unconditional update.
    body = lease("a", holderIdentity="y")
    body = assert_status(http.put(f"{BASE}/a", json=body), 422, "Invalid", "must be specified")
    assert body["details"]["causes"][0]["field"] == "metadata.resourceVersion"
    update = {**first, "spec": {**first["spec"], "holderIdentity": "y"}}
    resp = http.put(f"{BASE}/a", json=update)
    assert resp.status_code == 200
    second = resp.json()
    assert int(second["metadata"]["resourceVersion"]) > int(rv)
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    # The old version again: somebody else wrote in between.
    stale = assert_status(http.put(f"{BASE}/a", json=update), 409, "Conflict")
    assert stale["message"] == (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "a": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    # A PUT that changes nothing writes nothing.
    same = http.put(f"{BASE}/a", json=second).json()
    assert same["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"]
    # The name in the body must be the URL's.
    assert_status(http.put(f"{BASE}/b", json=second), 400, "BadRequest", "does not match")


def test_put_creates_a_missing_lease_unless_its_uid_is_a_precondition(
    http: httpx.Client,
) -> None:
    resp = http.put(f"{BASE}/new", json=lease("new", leaseTransitions=1))
    assert resp.status_code == 201 and resp.json()["spec"]["leaseTransitions"] == 1
    gone = resp.json()
    http.delete(f"{BASE}/new")
    assert_status(http.put(f"{BASE}/new", json=gone), 409, "Conflict", "UID in precondition")
    again = http.post(BASE, json=lease("new")).json()
    # Re-created under the same name: the old uid does not match either.
    gone["metadata"]["resourceVersion"] = again["metadata"]["resourceVersion"]
    assert_status(http.put(f"{BASE}/new", json=gone), 409, "Conflict", "UID in precondition")


def test_delete_with_preconditions(http: httpx.Client) -> None:
    created = http.post(BASE, json=lease("a")).json()
    meta = created["metadata"]
    resp = http.request(
        "DELETE", f"{BASE}/a", json={"preconditions": {"resourceVersion": "999999"}}
    )
    assert_status(resp, 409, "Conflict", "ResourceVersion in precondition: 999999")
    resp = http.request(
        "DELETE",
        f"{BASE}/a",
        json={"preconditions": {"resourceVersion": meta["resourceVersion"], "uid": meta["uid"]}},
    )
    assert resp.status_code == 200
    assert resp.json()["status"] == "Success" and resp.json()["details"]["uid"] == meta["uid"]
    assert_status(http.delete(f"{BASE}/a"), 404, "NotFound")


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        ("", ["a", "b", "c", "d"]),
        ("role=election", ["a"]),
        ("role==document,prefix=p1", ["b", "c"]),
        ("role!=document", ["a", "d"]),
        ("role in (election, document),prefix notin (p2)", ["a", "b", "c"]),
        ("prefix", ["a", "b", "c"]),
        ("!prefix", ["d"]),
        ("example.com/team=x", []),
    ],
)
def test_list_by_label_selector(http: httpx.Client, selector: str, names: list[str]) -> None:
    for name, labels in [
        ("a", {"role": "election", "prefix": "p1"}),
        ("b", {"role": "document", "prefix": "p1"}),
        ("c", {"role": "document", "prefix": "p1"}),
        ("d", {}),
    ]:
        assert http.post(BASE, json=lease(name, labels)).status_code == 201
    resp = http.get(BASE, params={"labelSelector": selector} if selector else None)
    body = resp.json()
    assert (body["kind"], body["apiVersion"]) == ("LeaseList", "coordination.k8s.io/v1")
    assert body["metadata"]["resourceVersion"].isdigit()
    assert [i["metadata"]["name"] for i in body["items"]] == names


def test_list_pages_and_bad_selectors(http: httpx.Client) -> None:
    for i in range(5):
        http.post(BASE, json=lease(f"l{i}", {"k": "v"}))
    seen: list[str] = []
    params = {"labelSelector": "k=v", "limit": "2"}
    for _ in range(5):
        body = http.get(BASE, params=params).json()
        seen += [i["metadata"]["name"] for i in body["items"]]
        if not body["metadata"].get("continue"):
            break
        assert body["metadata"]["remainingItemCount"] == 5 - len(seen)
        params["continue"] = body["metadata"]["continue"]
    assert seen == [f"l{i}" for i in range(5)]
    for bad in ("k=v,", "k in v", "=v", "k=v=w"):
        assert_status(http.get(BASE, params={"labelSelector": bad}), 400, "BadRequest")


@pytest.mark.parametrize(
    ("body", "code", "reason", "message"),
    [
        (lease("Bad_Name"), 422, "Invalid", "RFC 1123 subdomain"),
        (lease("a", leaseDurationSeconds=0), 422, "Invalid", "must be greater than 0"),
        (lease("a", leaseTransitions=-1), 422, "Invalid", "greater than or equal to 0"),
        (lease("a", leaseDurationSeconds="10"), 400, "BadRequest", "int32"),
        (lease("a", renewTime="2024-01-01T00:00:00Z"), 400, "BadRequest", "parsing time"),
        (lease("a", {"bad key!": "v"}), 422, "Invalid", "metadata.labels"),
        (lease("a", {"k": "v" * 64}), 422, "Invalid", "metadata.labels"),
        ({"kind": "ConfigMap", "metadata": {"name": "a"}}, 400, "BadRequest", "do not match"),
    ],
)
def test_validation(
    http: httpx.Client, body: dict[str, Any], code: int, reason: str, message: str
) -> None:
    assert_status(http.post(BASE, json=body), code, reason, message)


def test_micro_time_is_stored_in_utc_and_annotations_are_bounded(http: httpx.Client) -> None:
    body = lease("a", renewTime="2024-01-01T02:00:00.123456+02:00")
    assert http.post(BASE, json=body).json()["spec"]["renewTime"] == "2024-01-01T00:00:00.123456Z"
    big = lease("b")
    big["metadata"]["annotations"] = {"example.com/doc": "x" * (256 * 1024)}
    assert_status(http.post(BASE, json=big), 422, "Invalid", "at most 262144 bytes")


def test_token_namespace_route_and_faults(server: KubernetesStandIn, http: httpx.Client) -> None:
    with httpx.Client(base_url=server.base_url, trust_env=False) as anonymous:
        body = assert_status(anonymous.get(BASE), 401, "Unauthorized")
        assert body["message"] == "Unauthorized"
    other = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
    body = assert_status(http.get(other), 403, "Forbidden", 'cannot list resource "leases"')
    assert 'in the namespace "kube-system"' in body["message"]
    assert_status(http.get("/api/v1/namespaces/ns1/configmaps"), 404, "NotFound")
    assert_status(http.patch(f"{BASE}/a", json={}), 405, "MethodNotAllowed")
    server.faults.inject(status=503)
    assert_status(http.get(BASE), 503, "ServiceUnavailable")
    assert http.get(BASE).status_code == 200
    assert [r.status for r in server.faults.requests][-2:] == [503, 200]
