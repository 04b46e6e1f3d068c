"""REST zones (matching/urls.py) through Django's test client: auth, status codes, error bodies."""
from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from shapely.geometry import Point, shape

from hub import auth
from matching.matcher import find, matcher
from matching.models import Zone
from matching.zoneindex import ZoneIndex


def token(role: str = "admin", user: str = "ops") -> str:
    return auth.mint(user, role, settings.HUB_SECRET, tenant="t1")


def square(lat: float, lng: float, d: float = 0.05) -> dict[str, Any]:
    ring = [[lng - d, lat - d], [lng + d, lat - d], [lng + d, lat + d], [lng - d, lat + d], [lng - d, lat - d]]
    return {"type": "Polygon", "coordinates": [ring]}


@pytest.fixture()
def client() -> Iterator[Client]:
    # The project's URL conf: the zone routes are there because MatchingConfig.ready() registered them.
    yield Client()


def req(client: Client, method: str, path: str, body: Any = None, tok: str | None = None,
        raw: bytes | None = None) -> tuple[int, Any]:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {tok}"} if tok else {}
    data = raw if raw is not None else (json.dumps(body) if body is not None else "")
    resp = getattr(client, method.lower())(path, data=data, content_type="application/json", **headers)
    if method == "GET" and body is None:
        resp = client.get(path, **headers)
    return resp.status_code, json.loads(resp.content) if resp.content else None


def test_zone_lifecycle(client: Client) -> None:
    cat = f"c{uuid.uuid4().hex[:8]}"
    admin = token()
    status, zone = req(client, "POST", "/api/zones", {"name": "Islington", "categories": [cat],
                                                      "geometry": square(51.54, -0.10)}, admin)
    assert status == 201 and zone["id"] and zone["active"] is True
    status, got = req(client, "GET", f"/api/zones/{zone['id']}", tok=admin)
    assert status == 200 and got["geometry"] == square(51.54, -0.10)
    status, listed = req(client, "GET", f"/api/zones?category={cat}", tok=admin)
    assert status == 200 and [z["id"] for z in listed["zones"]] == [zone["id"]]
    status, listed = req(client, "GET", f"/api/zones?category={cat}&active=false", tok=admin)
    assert status == 200 and listed["zones"] == []
    status, put = req(client, "PUT", f"/api/zones/{zone['id']}", {"name": "Islington N", "categories": [cat],
                                                                 "geometry": square(51.55, -0.10),
                                                                 "active": False}, admin)
    assert status == 200 and put["name"] == "Islington N" and put["active"] is False and put["version"] == 2
    status, deleted = req(client, "DELETE", f"/api/zones/{zone['id']}", tok=admin)
    assert status == 200 and deleted == {"id": zone["id"], "deleted": True}
    status, err = req(client, "GET", f"/api/zones/{zone['id']}", tok=admin)
    assert status == 404 and err["error"]["code"] == "not_found"


def test_auth_and_roles(client: Client) -> None:
    status, err = req(client, "GET", "/api/zones")
    assert status == 401 and err["error"]["code"] == "unauthorized"
    status, err = req(client, "GET", "/api/zones", tok="not-a-jwt")
    assert status == 401
    status, err = req(client, "POST", "/api/zones", {"name": "x", "categories": ["a"], "geometry": square(0, 0)},
                      token("customer"))
    assert status == 403 and err["error"]["code"] == "forbidden"


@pytest.mark.parametrize("body", [
    {"name": "x", "categories": ["a"], "geometry": {"type": "Point", "coordinates": [0, 0]}},
    {"name": "x", "categories": ["a"], "geometry": {"type": "Polygon",
                                                    "coordinates": [[[0, 51], [1, 52], [1, 51], [0, 52], [0, 51]]]}},
    {"name": "x", "categories": ["a"], "geometry": {"type": "Polygon",
                                                    "coordinates": [[[0, 200], [1, 200], [1, 201], [0, 200]]]}},
    {"name": "x", "categories": ["a"]},
    {"name": "x", "categories": ["a"], "geometry": square(0, 0), "colour": "red"},
])
def test_validation_errors(client: Client, body: dict[str, Any]) -> None:
    status, err = req(client, "POST", "/api/zones", body, token())
    assert status == 400 and err["error"]["code"] == "bad_request" and err["error"]["message"]


def test_bad_json_and_methods(client: Client) -> None:
    status, err = req(client, "POST", "/api/zones", raw=b"{nope", tok=token())
    assert status == 400 and err["error"]["code"] == "bad_request"
    status, err = req(client, "PATCH", "/api/zones/abc", {"name": "x"}, token())
    assert status == 405 and err["error"]["code"] == "bad_request"
    assert client.patch("/api/zones/abc", HTTP_AUTHORIZATION=f"Bearer {token()}")["Allow"] == "GET, PUT, DELETE"
    assert client.delete("/api/zones", HTTP_AUTHORIZATION=f"Bearer {token()}")["Allow"] == "GET, POST"
    status, err = req(client, "PUT", "/api/zones/abc", {"id": "other", "name": "x", "categories": ["a"],
                                                        "geometry": square(0, 0)}, token())
    assert status == 400
    status, err = req(client, "PUT", "/api/zones/nosuchzone", {"name": "x", "categories": ["a"],
                                                               "geometry": square(0, 0)}, token())
    assert status == 404


def km_square(lat: float, lng: float, half_km: float) -> dict[str, Any]:
    d, dl = half_km / 111.32, half_km / (111.32 * math.cos(math.radians(lat)))
    ring = [[lng - dl, lat - d], [lng + dl, lat - d], [lng + dl, lat + d], [lng - dl, lat + d], [lng - dl, lat - d]]
    return {"type": "Polygon", "coordinates": [ring]}


def test_zone_across_an_icosahedron_edge_is_stored_and_indexed(client: Client) -> None:
    # 2 km square at 48.9027 N, 3.0867 E: its cells near an icosahedron edge have extra vertices.
    cat = f"c{uuid.uuid4().hex[:8]}"
    geometry = km_square(48.9027, 3.0867, 1.0)
    status, zone = req(client, "POST", "/api/zones", {"name": "Edge", "categories": [cat], "geometry": geometry},
                       token())
    assert status == 201, zone
    assert Zone.objects.get(id=zone["id"]).geometry == geometry
    m = matcher()
    geom = shape(geometry)
    rng = random.Random(3)
    x0, y0, x1, y1 = geom.bounds
    for _ in range(2000):
        lat, lng = rng.uniform(y0 - 0.005, y1 + 0.005), rng.uniform(x0 - 0.005, x1 + 0.005)
        want = zone["id"] if geom.covers(Point(lng, lat)) else None
        assert m.lookup_zone(lat, lng, cat, "t1") == want, (lat, lng)
    assert find(48.9027, 3.0867, cat, tenant="t1")["zone"] == zone["id"]
    req(client, "DELETE", f"/api/zones/{zone['id']}", tok=token())


BOWTIE = {"type": "Polygon", "coordinates": [[[0.0, 51.0], [1.0, 52.0], [1.0, 51.0], [0.0, 52.0], [0.0, 51.0]]]}


def test_self_intersecting_zone_is_refused_and_nothing_stored(client: Client) -> None:
    name = f"bowtie-{uuid.uuid4().hex[:8]}"
    status, err = req(client, "POST", "/api/zones", {"name": name, "categories": ["a"], "geometry": BOWTIE},
                      token())
    assert status == 400 and err["error"]["code"] == "bad_request"
    assert "Self-intersection" in err["error"]["message"]
    assert not Zone.objects.filter(name=name).exists()


def test_zone_the_index_cannot_load_is_refused_and_nothing_stored(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    cat = f"c{uuid.uuid4().hex[:8]}"
    status, zone = req(client, "POST", "/api/zones", {"name": "Kept", "categories": [cat],
                                                      "geometry": square(51.50, -0.10)}, token())
    assert status == 201

    def cannot_load(self: ZoneIndex, geometry: Any) -> Any:
        raise ValueError("setting an array element with a sequence")

    monkeypatch.setattr(ZoneIndex, "prepare", cannot_load)
    name = f"unloadable-{uuid.uuid4().hex[:8]}"
    status, err = req(client, "POST", "/api/zones", {"name": name, "categories": [cat],
                                                     "geometry": square(51.60, -0.10)}, token())
    assert status == 400 and err["error"]["code"] == "bad_request"
    assert err["error"]["message"].startswith("geometry: the zone index cannot load this geometry")
    assert not Zone.objects.filter(name=name).exists()
    # A replacement the index cannot load changes nothing either.
    status, err = req(client, "PUT", f"/api/zones/{zone['id']}", {"name": "Moved", "categories": [cat],
                                                                 "geometry": square(51.60, -0.10)}, token())
    assert status == 400 and err["error"]["code"] == "bad_request"
    row = Zone.objects.get(id=zone["id"])
    assert (row.name, row.version, row.geometry) == ("Kept", 1, square(51.50, -0.10))
    monkeypatch.undo()
    assert matcher().lookup_zone(51.50, -0.10, cat, "t1") == zone["id"]
    req(client, "DELETE", f"/api/zones/{zone['id']}", tok=token())


def test_zone_routes_are_in_the_openapi_schema_and_other_methods_get_405(client: Client) -> None:
    status, schema = req(client, "GET", "/api/openapi.json")
    assert status == 200
    assert set(schema["paths"]["/api/zones"]) == {"get", "post"}
    assert set(schema["paths"]["/api/zones/{id}"]) == {"parameters", "get", "put", "delete"}
    assert schema["paths"]["/api/zones"]["post"]["x-roles"] == ["admin"]
    assert "geometry" in schema["paths"]["/api/zones"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]["properties"]
    for method, path in (("PATCH", "/api/zones"), ("DELETE", "/api/zones"), ("POST", "/api/zones/z1"),
                         ("PATCH", "/api/zones/z1")):
        status, body = req(client, method, path, {}, token())
        assert status == 405, (method, path, status)
        assert body["error"]["code"]
