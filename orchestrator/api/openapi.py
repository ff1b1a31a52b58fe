"""The control API's OpenAPI 3.1 document, served at ``GET /v1/openapi.json``.

Guarantees: request bodies are the pydantic models of :mod:`orchestrator.api.models` (so the
document and the validation cannot drift apart); every operation lists every status code it can
answer, each with its schema; the tests run schemathesis against a live daemon with this
document.
"""

from __future__ import annotations

import copy
import functools
from importlib import metadata
from typing import Any

from pydantic import BaseModel

from orchestrator.api.models import (
    ControlRequest,
    DrillRequest,
    FailoverRequest,
    SwitchoverRequest,
)

REF = "#/components/schemas/{model}"


def _obj(required: list[str], props: dict[str, Any], extra: bool = True) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": props,
        "additionalProperties": extra,
    }


_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        ["error"],
        {
            "error": _obj(
                ["code", "message"],
                {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {
                        "type": "array",
                        "items": _obj(
                            ["field", "message"],
                            {"field": {"type": "string"}, "message": {"type": "string"}},
                        ),
                    },
                },
                extra=False,
            )
        },
        extra=False,
    ),
    "Status": _obj(
        ["version", "service", "source", "cycle", "primary", "reason", "sentence", "regions"],
        {
            "version": {"type": "integer"},
            "service": {"type": "string"},
            "source": {"type": "string", "enum": ["daemon", "probe"]},
            "cycle": {"type": "integer"},
            "objectives": _obj(
                ["rto_seconds", "rpo_seconds"],
                {"rto_seconds": {"type": "number"}, "rpo_seconds": {"type": "number"}},
            ),
            "primary": _obj(["node", "region"], {"node": _STR_OR_NULL, "region": _STR_OR_NULL}),
            "reason": {"type": "string"},
            "sentence": {"type": "string"},
            "regions": {
                "type": "array",
                "items": _obj(
                    ["name", "verdict", "nodes"],
                    {
                        "name": {"type": "string"},
                        "verdict": {"type": "string"},
                        "nodes": {"type": "array", "items": {"type": "object"}},
                    },
                ),
            },
            "bcp": {"type": "object"},
            "drills": {"type": "object"},
        },
    ),
    "Plan": _obj(
        ["kind", "trigger", "checksum", "old_primary", "candidate", "dns", "steps", "budget"],
        {
            "kind": {"type": "string", "enum": ["failover", "switchover"]},
            "trigger": {"type": "string"},
            "checksum": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "old_primary": {"type": "object"},
            "candidate": {"type": "object"},
            "why": {"type": "string"},
            "expected_data_loss": {"type": "object"},
            "fence": {"type": "string"},
            "dns": {"type": "array", "items": {"type": "object"}},
            "steps": {"type": "array", "items": {"type": "object"}},
            "budget": {"type": "object"},
            "overrides": {"type": "object"},
        },
    ),
    "PlanAnswer": _obj(
        ["dry_run", "plan"],
        {"dry_run": {"type": "boolean"}, "plan": {"$ref": REF.format(model="Plan")}},
    ),
    "RunAnswer": _obj(
        ["dry_run", "plan"],
        {
            "dry_run": {"type": "boolean"},
            "accepted": {"type": "boolean"},
            "incident": {"type": "string"},
            "plan": {"$ref": REF.format(model="Plan")},
            "links": {"type": "object"},
        },
    ),
    "DrillAnswer": _obj(
        ["dry_run", "drill"],
        {
            "dry_run": {"type": "boolean"},
            "accepted": {"type": "boolean"},
            "drill": {"type": ["object", "string"]},
            "planned": {"type": "array", "items": {"type": "object"}},
            "links": {"type": "object"},
        },
    ),
    "ControlAnswer": _obj(
        ["dry_run", "action", "effect", "before", "after"],
        {
            "dry_run": {"type": "boolean"},
            "action": {"type": "string", "enum": ["pause", "resume", "ack"]},
            "effect": {"type": "string"},
            "before": {"type": "object"},
            "after": {"type": "object"},
            "effective": {"type": "string"},
        },
    ),
    "IncidentSummary": _obj(
        ["id", "status", "kind", "opened_at", "primary"],
        {
            "id": {"type": "string"},
            "status": {"type": "string"},
            "kind": {"type": "string"},
            "opened_at": {"type": "number"},
            "closed_at": _NUM_OR_NULL,
            "primary": {"type": "string"},
            "new_primary": _STR_OR_NULL,
            "level": {"type": "integer"},
            "rto_seconds": _NUM_OR_NULL,
            "rpo_seconds": _NUM_OR_NULL,
            "rpo_bytes": {"type": ["integer", "null"]},
        },
    ),
    "IncidentList": _obj(
        ["incidents"],
        {"incidents": {"type": "array", "items": {"$ref": REF.format(model="IncidentSummary")}}},
    ),
    "Incident": _obj(
        ["id", "status", "opened_at", "primary", "region", "timeline", "notes"],
        {
            "id": {"type": "string"},
            "status": {"type": "string"},
            "opened_at": {"type": "number"},
            "primary": {"type": "string"},
            "region": {"type": "string"},
            "timeline": {"type": "array", "items": {"type": "object"}},
            "notes": {"type": "array", "items": {"type": "string"}},
        },
    ),
    "Drill": _obj(["id", "result"], {"id": {"type": "string"}, "result": {"type": "string"}}),
}


def _ref(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": REF.format(model=name)}}}}


def _responses(ok: int, ok_schema: str, *codes: int) -> dict[str, Any]:
    texts = {
        200: "OK",
        202: "Accepted: the run goes on in the daemon",
        400: "The body is not a JSON object",
        401: "Missing or invalid bearer token",
        403: "The token may not do this, or no operator token is configured",
        404: "No such record",
        409: "Busy, refused by a safety rail, or the plan changed",
        413: "The body is larger than 64 KiB",
        422: "A field is invalid (details name it)",
        502: "A provider failed while planning",
        503: "The daemon has not completed a tick yet",
    }
    out: dict[str, Any] = {
        str(ok): {"description": texts[ok], **_ref(ok_schema)},
    }
    for code in codes:
        out[str(code)] = {"description": texts[code], **_ref("Error")}
    return out


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "required": False,
        "description": "An empty body is a dry run with every field at its default.",
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
    }


def _write_op(summary: str, model: type[BaseModel], answer: str, *extra: int) -> dict[str, Any]:
    responses = _responses(200, answer, 400, 401, 403, 413, 422, *extra)
    if answer in ("RunAnswer", "DrillAnswer"):
        responses["202"] = {"description": "Accepted: it goes on in the daemon", **_ref(answer)}
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "requestBody": _body(model),
            "responses": responses,
        }
    }


def _read_op(summary: str, answer: str, *codes: int, **extra: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": _responses(200, answer, 401, *codes), **extra}}


def _query(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}


def _version() -> str:
    try:
        return metadata.version("helios-orchestrator")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _path_id(prefix: str) -> list[dict[str, Any]]:
    schema = {"type": "string", "pattern": f"^{prefix}-[A-Za-z0-9_-]{{1,64}}$"}
    return [{"name": "id", "in": "path", "required": True, "schema": schema}]


def _region_field(schema: dict[str, Any], region: dict[str, Any]) -> dict[str, Any]:
    """A request model's schema with ``to`` limited to the configured regions."""
    props = schema.get("properties", {})
    if "to" in props:
        props["to"] = {
            "anyOf": [region, {"type": "null"}],
            "default": None,
            "description": props["to"].get("description", ""),
        }
    return schema


@functools.cache
def _document(regions: tuple[str, ...]) -> dict[str, Any]:
    region: dict[str, Any] = {"type": "string", "minLength": 1}
    if regions:
        region = {"type": "string", "enum": list(regions)}
    schemas = dict(SCHEMAS)
    for model in (FailoverRequest, SwitchoverRequest, DrillRequest, ControlRequest):
        schemas[model.__name__] = _region_field(model.model_json_schema(ref_template=REF), region)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "helios-orchestrator control API",
            "version": _version(),
            "description": (
                "Read the daemon's view and drive it. Mutating endpoints need an operator "
                'bearer token and are dry runs unless the body says "execute": true.'
            ),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/status": _read_op("Regions, nodes, verdicts, the activation level", "Status", 503),
            "/v1/incidents": _read_op(
                "Incidents, newest first",
                "IncidentList",
                422,
                parameters=[
                    _query(
                        "status",
                        {
                            "type": "string",
                            "enum": ["open", "held", "failed_over", "recovered", "failed"],
                        },
                        "Only incidents with this status (open: not closed).",
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000},
                        "At most this many (default 100).",
                    ),
                ],
            ),
            "/v1/incidents/{id}": _read_op(
                "One incident with its timeline", "Incident", 404, 422, parameters=_path_id("inc")
            ),
            "/v1/drills/{id}": _read_op(
                "One drill's record (result running while it runs)",
                "Drill",
                404,
                422,
                parameters=_path_id("drill"),
            ),
            "/v1/plan": _read_op(
                "The plan a failover or switchover would follow now (a dry run)",
                "PlanAnswer",
                409,
                422,
                502,
                503,
                parameters=[
                    _query("to", region, "Target region (default: the best candidate)."),
                    _query(
                        "kind",
                        {"type": "string", "enum": ["failover", "switchover"]},
                        "Default failover.",
                    ),
                ],
            ),
            "/v1/failover": _write_op(
                "Fail over from a lost primary", FailoverRequest, "RunAnswer", 409, 502, 503
            ),
            "/v1/switchover": _write_op(
                "Planned switchover to a replica", SwitchoverRequest, "RunAnswer", 409, 502, 503
            ),
            "/v1/drill": _write_op(
                "Run (or plan) a DR drill", DrillRequest, "DrillAnswer", 409, 502
            ),
            "/v1/pause": _write_op("Maintenance mode", ControlRequest, "ControlAnswer"),
            "/v1/resume": _write_op("Leave maintenance mode", ControlRequest, "ControlAnswer"),
            "/v1/ack": _write_op(
                "Acknowledge (lift the cooldown, acknowledge the page)",
                ControlRequest,
                "ControlAnswer",
            ),
        },
    }


def openapi_document(regions: tuple[str, ...] = ()) -> dict[str, Any]:
    """A fresh copy of the document (callers may change it). With ``regions``, the daemon's
    configured regions are the only accepted targets (``to``)."""
    return copy.deepcopy(_document(tuple(regions)))
