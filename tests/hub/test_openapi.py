"""hub.openapi: the schema at /api/openapi.json, generated from the rpc registry and the apps' routes."""
from __future__ import annotations

from django.test import Client

from core.errors import HTTP_STATUS
from hub import routes
from hub.openapi import schema
from hub.rpc import REGISTRY


def test_openapi_lists_every_method_and_route() -> None:
    resp = Client().get("/api/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc == schema() and doc["openapi"].startswith("3.")
    for name, m in REGISTRY.items():
        if m.http:
            op = doc["paths"][f"/api/{name}"]["post"]
            assert op["x-roles"] == sorted(m.roles) and set(op["responses"]) >= {"200", *map(str, HTTP_STATUS.values())}
    assert doc["paths"]["/api/publish"]["post"]["x-roles"] == ["admin", "service"]
    assert set(routes.openapi_paths()) <= set(doc["paths"])  # the apps' own routes (zones, push)
