"""The webhook's routes, declared once: the service registers them and `/openapi.json`
(OpenAPI 3.1) is generated from them and from the pydantic bodies in webhook_models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter

from fleet.dr import DrAppState
from starters.webhook_models import (
    START_BODY,
    ApproveBody,
    ControlBody,
    ControlResponse,
    DrStartBody,
    ErrorResponse,
    GitPushBody,
    Health,
    OperationResponse,
    StartResponse,
)
from starters.webhook_signing import (
    KEY_HEADER,
    KEY_PATTERN,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)

REF = "#/components/schemas/{model}"
CONTROLS = ("pause", "resume", "abort")
DR_ACTIONS = ("switchover", "failover", "failback", "drill")
ERRORS = {
    400: "Missing or bad Idempotency-Key, or malformed JSON",
    401: "Missing, bad or expired credentials",
    403: "The pushed repository is not in FLOTILLA_GIT_REPOS",
    404: "No such rollout",
    409: "A replayed request (nonce already used), or the rollout refused the control",
    422: "Invalid body or plan refused",
    503: "Temporal unreachable",
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    response: type[BaseModel] | None  # None: the JSON is not one of our models
    body: TypeAdapter[Any] | None = None
    ok: int = 200
    errors: tuple[int, ...] = (401, 404, 409, 503)
    signed: bool = True  # False: no authentication
    idempotency_key: bool = False


ROUTES = (
    Route("GET", "/healthz", "Liveness", Health, errors=(), signed=False),
    Route("GET", "/openapi.json", "This schema", None, errors=(), signed=False),
    Route(
        "POST",
        "/v1/rollouts",
        "Start a rollout (200 when this Idempotency-Key already started one)",
        StartResponse,
        START_BODY,
        ok=201,
        errors=(400, 401, 409, 422, 503),
        idempotency_key=True,
    ),
    Route(
        "POST",
        "/v1/git/push",
        "Start a sync of a pushed commit (200 when this SHA already has one)",
        StartResponse,
        TypeAdapter(GitPushBody),
        ok=201,
        errors=(400, 401, 403, 409, 422, 503),
    ),
    Route(
        "GET",
        "/v1/operations/{workflow_id}",
        "A rollout's status, progress and result",
        OperationResponse,
    ),
    Route(
        "POST",
        "/v1/operations/{workflow_id}/approve",
        "Approve the waiting wave, which the body names",
        ControlResponse,
        TypeAdapter(ApproveBody),
        errors=(400, 401, 404, 409, 422, 503),
    ),
    *(
        Route(
            "POST",
            f"/v1/operations/{{workflow_id}}/{action}",
            f"{action.capitalize()} a rollout",
            ControlResponse,
            TypeAdapter(ControlBody),
            errors=(400, 401, 404, 409, 422, 503),
        )
        for action in CONTROLS
    ),
    Route(
        "POST",
        "/v1/dr/{app}/{action}",
        "Start a DR switchover, failover, failback or drill of an application "
        "(200 when this Idempotency-Key already started it)",
        StartResponse,
        TypeAdapter(DrStartBody),
        ok=201,
        errors=(400, 401, 404, 409, 422, 503),
        idempotency_key=True,
    ),
    Route("GET", "/v1/dr/{app}", "An application's DR record: policy, primary, runs", DrAppState),
    Route(
        "GET",
        "/v1/dr/operations/{workflow_id}",
        "A DR run's status, steps and measurements",
        OperationResponse,
    ),
)

_SECURITY_SCHEMES = {
    "signature": {
        "type": "apiKey",
        "in": "header",
        "name": SIGNATURE_HEADER,
        "description": "v1=<hex HMAC-SHA256 of the canonical request> (docs/webhooks.md); "
        f"with {TIMESTAMP_HEADER} and {NONCE_HEADER}",
    },
    "timestamp": {
        "type": "apiKey",
        "in": "header",
        "name": TIMESTAMP_HEADER,
        "description": "Unix seconds; refused outside the window (default 300 s)",
    },
    "nonce": {
        "type": "apiKey",
        "in": "header",
        "name": NONCE_HEADER,
        "description": "16-128 letters, digits, '_', '-'; new for every request",
    },
    "bearer": {"type": "http", "scheme": "bearer"},
}
_SIGNED: list[dict[str, list[str]]] = [
    {"signature": [], "timestamp": [], "nonce": []},
    {"bearer": []},
]


def openapi(routes: tuple[Route, ...] = ROUTES) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`; bodies are refs into components.schemas."""
    error = TypeAdapter(ErrorResponse)
    inputs: list[tuple[tuple[int, str], Any, TypeAdapter[Any]]] = [
        ((-1, "error"), "serialization", error)
    ]
    for i, route in enumerate(routes):
        if route.body is not None:
            inputs.append(((i, "body"), "validation", route.body))
        if route.response is not None:
            inputs.append(((i, "response"), "serialization", TypeAdapter(route.response)))
    schemas, defs = TypeAdapter.json_schemas(inputs, ref_template=REF)
    error_schema = schemas[(-1, "error"), "serialization"]
    paths: dict[str, dict[str, Any]] = {}
    for i, route in enumerate(routes):
        ok_schema = schemas.get(((i, "response"), "serialization"), {"type": "object"})
        responses = {str(route.ok): _json("Success", ok_schema)}
        responses |= {str(code): _json(ERRORS[code], error_schema) for code in route.errors}
        operation: dict[str, Any] = {
            "summary": route.summary,
            "security": _SIGNED if route.signed else [],
            "responses": responses,
        }
        parameters = []
        if "{workflow_id}" in route.path:
            parameters.append(
                {
                    "name": "workflow_id",
                    "in": "path",
                    "required": True,
                    "description": "<action>:<app>:<key> (a DR run)"
                    if route.path.startswith("/v1/dr/")
                    else "rollout:<kind>:<key>, or <kind>:<key>",
                    "schema": {"type": "string"},
                }
            )
        for name, text, enum in (
            ("app", "The application (its DR policy's name)", None),
            ("action", "The DR operation", list(DR_ACTIONS)),
        ):
            if f"{{{name}}}" in route.path:
                schema: dict[str, Any] = {"type": "string"}
                if enum:
                    schema["enum"] = enum
                parameters.append(
                    {
                        "name": name,
                        "in": "path",
                        "required": True,
                        "description": text,
                        "schema": schema,
                    }
                )
        if route.idempotency_key:
            parameters.append(
                {
                    "name": KEY_HEADER,
                    "in": "header",
                    "required": True,
                    "description": "The rollout id (1-100 letters, digits, '.', '_', '-'); "
                    "part of the signature",
                    "schema": {"type": "string", "pattern": KEY_PATTERN},
                }
            )
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            body_schema = schemas[(i, "body"), "validation"]
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Flotilla webhook", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}
