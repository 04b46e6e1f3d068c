"""REST routes for zones (admins): each runs its zones.* rpc method (same roles, schema and action).

    POST   /api/zones          {name, categories, geometry, active?}  -> 201 zone
    GET    /api/zones          ?category=&active=true|false          -> 200 {"zones": [...]}
    GET    /api/zones/<id>                                           -> 200 zone
    PUT    /api/zones/<id>     {name, categories, geometry, active?}  -> 200 zone
    DELETE /api/zones/<id>                                           -> 200 {"id", "deleted": true}

Registered in MatchingConfig.ready() (hub.routes): hub/urls.py places them before `api/<name>`,
which would otherwise take `POST /api/zones` as an unknown rpc method. Another method gets 405.
"""
from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from core.errors import BAD_REQUEST, HubError
from hub import rpc
from hub.http import authenticate, error_response, json_body, not_allowed
from hub.openapi import ERROR_SCHEMA
from hub.rpc import Caller
from matching import rpc as matching_rpc

# A 10,000-vertex polygon is ~400 KB of JSON; leave room beyond that.
MAX_ZONE_BODY = 2 * 1024 * 1024


def _json(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")


def _error(err: HubError) -> HttpResponse:
    return error_response(err)


def _caller(request: HttpRequest) -> Caller:
    return authenticate(request)


def _body(request: HttpRequest) -> dict[str, Any]:
    body = json_body(request, MAX_ZONE_BODY)
    if not isinstance(body, dict):
        raise HubError(BAD_REQUEST, "body must be a JSON object")
    return body


def _flag(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise HubError(BAD_REQUEST, "active must be true or false")


@csrf_exempt
async def zones_collection(request: HttpRequest) -> HttpResponse:
    try:
        caller = _caller(request)
        if request.method == "POST":
            return _json(await rpc.call(caller, "zones.create", _body(request)), status=201)
        if request.method == "GET":
            params: dict[str, Any] = {}
            if request.GET.get("category"):
                params["category"] = request.GET["category"]
            active = _flag(request.GET.get("active"))
            if active is not None:
                params["active"] = active
            return _json(await rpc.call(caller, "zones.list", params))
        return not_allowed("GET, POST")
    except HubError as err:
        return _error(err)


@csrf_exempt
async def zone_item(request: HttpRequest, zone_id: str) -> HttpResponse:
    try:
        caller = _caller(request)
        if request.method == "GET":
            return _json(await rpc.call(caller, "zones.get", {"id": zone_id}))
        if request.method == "PUT":
            body = _body(request)
            if "id" in body and body["id"] != zone_id:
                raise HubError(BAD_REQUEST, "id in the body differs from the URL")
            return _json(await rpc.call(caller, "zones.replace", {**body, "id": zone_id}))
        if request.method == "DELETE":
            return _json(await rpc.call(caller, "zones.delete", {"id": zone_id}))
        return not_allowed("GET, PUT, DELETE")
    except HubError as err:
        return _error(err)


urlpatterns = [
    path("api/zones", zones_collection),
    path("api/zones/<str:zone_id>", zone_item),
]


def _op(method: str, summary: str, status: int, body: bool = False, query: bool = False) -> dict[str, Any]:
    m = next(d for d in rpc.declared(matching_rpc) if d.name == method)
    op: dict[str, Any] = {
        "operationId": f"rest.{method}", "summary": summary, "x-roles": sorted(m.roles),
        "security": [{"bearer": []}],
        "responses": {str(status): {"description": "ok", "content": {"application/json": {"schema": m.result or {}}}},
                      "default": {"description": "error", "content": {"application/json": {"schema": ERROR_SCHEMA}}}},
    }
    if body:
        schema = {k: v for k, v in m.params.items()}
        if method == "zones.replace":  # the id comes from the URL
            schema = {**schema, "required": [r for r in schema.get("required", []) if r != "id"]}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    if query:
        op["parameters"] = [{"name": "category", "in": "query", "schema": {"type": "string"}},
                            {"name": "active", "in": "query", "schema": {"type": "boolean"}}]
    return op


def openapi() -> dict[str, dict[str, Any]]:
    """The zone routes' OpenAPI path items (from the rpc methods they call: they cannot drift)."""
    zone_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "/api/zones": {"get": _op("zones.list", "List zones (admin).", 200, query=True),
                       "post": _op("zones.create", "Create a zone (admin).", 201, body=True)},
        "/api/zones/{id}": {"parameters": zone_id,
                            "get": _op("zones.get", "One zone (admin).", 200),
                            "put": _op("zones.replace", "Replace a zone (admin).", 200, body=True),
                            "delete": _op("zones.delete", "Delete a zone (admin).", 200)},
    }
