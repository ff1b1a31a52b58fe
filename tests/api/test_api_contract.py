"""The control API against its OpenAPI document and its rules, on a real daemon process.

The nodes refuse connections, so every endpoint answers for real (no primary: plans are
refused with 409) while nothing can be moved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from api_helpers import Daemon, start_daemon, stop_daemon, tokens
from hypothesis import HealthCheck, settings

from orchestrator.api.openapi import openapi_document

REGIONS = ("us-east", "us-west", "eu")
# The document the test daemon serves (test_the_served_document_is_the_published_one checks it).
SCHEMA = schemathesis.openapi.from_dict(openapi_document(REGIONS))
MUTATING = ["failover", "switchover", "drill", "pause", "resume", "ack"]


def post(d: Daemon, path: str, token: str | None, **kw: Any) -> httpx.Response:
    return httpx.post(f"{d.url}{path}", headers=d.headers(token), timeout=10, **kw)


def err(resp: httpx.Response) -> dict[str, Any]:
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    assert doc["error"]["code"] and doc["error"]["message"], doc
    return dict(doc["error"])


# --- schemathesis: every operation, generated inputs, with and without the operator token ----


@SCHEMA.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_answer_matches_the_openapi_document(case: Any, api_daemon: Daemon) -> None:
    case.call_and_validate(base_url=api_daemon.url, headers=api_daemon.headers(api_daemon.operator))


@SCHEMA.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_without_a_token_answers_match_the_document(case: Any, api_daemon: Daemon) -> None:
    resp = case.call(base_url=api_daemon.url)
    case.validate_response(resp)
    if case.operation.method.upper() == "POST" and case.method.upper() == "POST":
        assert resp.status_code == 401
        headers = {k.lower(): v for k, v in resp.headers.items()}
        challenge = headers["www-authenticate"]
        challenge = challenge[0] if isinstance(challenge, list) else challenge
        assert challenge.startswith("Bearer")


def test_the_served_document_is_the_published_one(api_daemon: Daemon) -> None:
    served = httpx.get(f"{api_daemon.url}/v1/openapi.json", timeout=5).json()
    assert served == openapi_document(REGIONS)
    to = served["components"]["schemas"]["FailoverRequest"]["properties"]["to"]
    assert to["anyOf"][0]["enum"] == list(REGIONS)
    ops = {(m.upper(), p) for p, item in served["paths"].items() for m in item}
    assert ops >= {("GET", "/v1/status"), ("GET", "/v1/plan"), ("GET", "/v1/incidents")}
    assert ops >= {("POST", f"/v1/{m}") for m in MUTATING}


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", MUTATING)
def test_mutating_endpoints_need_an_operator_token(api_daemon: Daemon, path: str) -> None:
    d = api_daemon
    missing = post(d, f"/v1/{path}", None, json={})
    assert missing.status_code == 401
    assert "Authorization: Bearer" in err(missing)["message"]
    wrong = post(d, f"/v1/{path}", "x" * 48, json={})
    assert wrong.status_code == 401
    assert err(wrong)["message"] == "the bearer token is not valid"
    basic = httpx.post(
        f"{d.url}/v1/{path}", headers={"Authorization": f"Basic {d.operator}"}, timeout=5
    )
    assert basic.status_code == 401
    viewer = post(d, f"/v1/{path}", d.viewer, json={})
    assert viewer.status_code == 403
    assert "'grafana' has the viewer role" in err(viewer)["message"]
    assert post(d, f"/v1/{path}", d.operator, json={}).status_code in (200, 409)


def test_reads_are_open_by_default_but_a_wrong_token_is_refused(api_daemon: Daemon) -> None:
    d = api_daemon
    assert httpx.get(f"{d.url}/v1/status", timeout=5).status_code == 200
    assert httpx.get(f"{d.url}/v1/incidents", timeout=5).json() == {"incidents": []}
    bad = httpx.get(f"{d.url}/v1/status", headers=d.headers("y" * 40), timeout=5)
    assert bad.status_code == 401


def test_reads_can_require_a_token_and_no_operator_token_means_read_only(
    tmp_path: Path,
) -> None:
    viewer_only = [t for t in tokens() if t["role"] == "viewer"]
    d = start_daemon(tmp_path, viewer_only, read_requires_token=True)
    try:
        assert httpx.get(f"{d.url}/v1/status", timeout=5).status_code == 401
        ok = httpx.get(f"{d.url}/v1/status", headers=d.headers(d.viewer), timeout=5)
        assert ok.status_code == 200 and ok.json()["service"] == "helios-db"
        # /metrics and the probes stay open for the scraper and the kubelet.
        assert httpx.get(f"{d.url}/metrics", timeout=5).status_code == 200
        assert httpx.get(f"{d.url}/healthz", timeout=5).status_code == 200
        denied = post(d, "/v1/pause", d.viewer, json={"execute": True})
        assert denied.status_code == 403
        assert err(denied)["code"] == "API_READ_ONLY"
    finally:
        assert stop_daemon(d) == 0


# --- bad bodies never crash the daemon -----------------------------------------------------------

BAD_BODIES = [
    (b"{not json", 400, "BAD_JSON", None),
    (b"[1, 2]", 400, "BAD_JSON", None),
    (b'"execute"', 400, "BAD_JSON", None),
    (b"\xff\xfe", 400, "BAD_JSON", None),
    (b'{"execute": "yes"}', 422, "INVALID_BODY", "execute"),
    (b'{"execute": 1}', 422, "INVALID_BODY", "execute"),
    (b'{"exectue": true}', 422, "INVALID_BODY", "exectue"),
    (b'{"to": 7}', 422, "INVALID_BODY", "to"),
    (b'{"checksum": "nope"}', 422, "INVALID_BODY", "checksum"),
]


@pytest.mark.parametrize(("body", "status", "code", "field"), BAD_BODIES)
def test_malformed_bodies_get_a_clear_error(
    api_daemon: Daemon, body: bytes, status: int, code: str, field: str | None
) -> None:
    d = api_daemon
    resp = post(d, "/v1/switchover", d.operator, content=body)
    assert resp.status_code == status, resp.text
    e = err(resp)
    assert e["code"] == code
    if field is not None:
        assert [x["field"] for x in e["details"]] == [field]
        assert field in e["message"]
    assert httpx.get(f"{d.url}/healthz", timeout=5).status_code == 200


def test_oversized_body_unknown_path_and_wrong_method(api_daemon: Daemon) -> None:
    d = api_daemon
    big = post(d, "/v1/pause", d.operator, content=b'{"reason": "' + b"x" * 70_000 + b'"}')
    assert big.status_code == 413 and err(big)["code"] == "BODY_TOO_LARGE"
    assert err(httpx.get(f"{d.url}/v1/nothing", timeout=5))["code"] == "NOT_FOUND"
    wrong = httpx.get(f"{d.url}/v1/failover", timeout=5)
    assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"]
    for bad_id in ("..%2F..%2Fetc%2Fpasswd", "inc-..", "drill-a.b"):
        kind = "drills" if bad_id.startswith("drill") else "incidents"
        resp = httpx.get(f"{d.url}/v1/{kind}/{bad_id}", timeout=5)
        assert resp.status_code in (404, 422), resp.text
    assert httpx.get(f"{d.url}/v1/incidents/inc-20260101T000000-abcdef", timeout=5).status_code == (
        404
    )
    assert httpx.get(f"{d.url}/healthz", timeout=5).status_code == 200


# --- dry run by default --------------------------------------------------------------------


def test_pause_is_a_dry_run_unless_execute_is_true(api_daemon: Daemon) -> None:
    d = api_daemon
    controls = d.state_dir / "controls.json"
    dry = post(d, "/v1/pause", d.operator, json={"reason": "maintenance"})
    assert dry.status_code == 200
    doc = dry.json()
    assert doc["dry_run"] is True and doc["after"]["paused"] is True
    assert not controls.exists() or json.loads(controls.read_text())["paused"] is False
    empty = post(d, "/v1/pause", d.operator)  # no body at all: also a dry run
    assert empty.json()["dry_run"] is True
    done = post(d, "/v1/pause", d.operator, json={"execute": True, "reason": "maintenance"})
    assert done.json()["dry_run"] is False
    assert json.loads(controls.read_text())["paused"] is True
    assert "pause by oncall through the control API: maintenance" in d.log.read_text()
    post(d, "/v1/resume", d.operator, json={"execute": True})
    assert json.loads(controls.read_text())["paused"] is False


def test_failover_without_a_primary_is_refused_not_crashed(api_daemon: Daemon) -> None:
    d = api_daemon
    for body in ({}, {"execute": True}, {"execute": True, "to": "eu"}):
        resp = post(d, "/v1/failover", d.operator, json=body)
        assert resp.status_code == 409, resp.text
        assert err(resp)["code"] == "UNSAFE_PLAN"
    unknown = post(d, "/v1/switchover", d.operator, json={"to": "mars"})
    assert unknown.status_code in (409, 422)
    plan = httpx.get(f"{d.url}/v1/plan", params={"to": "eu"}, timeout=5)
    assert plan.status_code == 409
    assert "no primary is known" in err(plan)["message"]
