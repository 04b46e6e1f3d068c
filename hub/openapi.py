"""OpenAPI 3.1 schema generated from the rpc registry (so it cannot drift from the code)."""
from __future__ import annotations

from typing import Any

from core.errors import HTTP_STATUS
from hub import routes
from hub.rpc import REGISTRY

ERROR_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"error": {"type": "object", "properties": {
    "code": {"enum": sorted(HTTP_STATUS)}, "message": {"type": "string"}, "retry_after_ms": {"type": "integer"}}}}}


def schema() -> dict[str, Any]:
    error = ERROR_SCHEMA
    paths: dict[str, Any] = {}
    for name in sorted(REGISTRY):
        m = REGISTRY[name]
        if not m.http:
            continue
        paths[f"/api/{name}"] = {"post": {
            "operationId": name,
            "summary": m.summary,
            "description": f"Roles: {', '.join(sorted(m.roles))}. Also over the socket: rpc {name}.",
            "x-roles": sorted(m.roles),
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": m.params}}},
            "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"result": m.result or {}}}}}},
                **{str(s): {"description": c, "content": {"application/json": {"schema": error}}}
                   for c, s in sorted(HTTP_STATUS.items(), key=lambda x: x[1])},
            },
        }}
    paths["/api/publish"] = {"post": {
        "operationId": "publish", "summary": "Server-side publish for backend services (audited).",
        "x-roles": ["admin", "service"], "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["channel", "data"],
            "properties": {"channel": {"type": "string"}, "data": {}, "key": {"type": "string", "maxLength": 64}}}}}},
        "responses": {"200": {"description": "durable", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"result": {"type": "object", "properties": {
                "offset": {"type": "integer"}}}}}}}}},
    }}
    paths.update(routes.openapi_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "Marketplace hub API", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "paths": paths,
    }
