"""matching.rpc through the registry (the same path the socket and POST /api/<method> take)."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from core.errors import HubError
from core.models import AuditLog
from hub import rpc
from hub.rpc import Caller

LAT, LNG = 51.52, -0.05


def uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def call(role: str, name: str, params: dict[str, Any], user: str | None = None) -> Any:
    caller = Caller(user or uid("u"), role, "t1")
    return asyncio.run(rpc.call(caller, name, params))


def refused(role: str, name: str, params: dict[str, Any]) -> str:
    with pytest.raises(HubError) as err:
        call(role, name, params)
    return err.value.code


def square(lat: float, lng: float, d: float = 0.05) -> dict[str, Any]:
    ring = [[lng - d, lat - d], [lng + d, lat - d], [lng + d, lat + d], [lng - d, lat + d], [lng - d, lat - d]]
    return {"type": "Polygon", "coordinates": [ring]}


def test_methods_registered() -> None:
    for name in ("providers.update", "match.find", "bookings.create", "bookings.get", "offers.accept",
                 "offers.decline", "zones.create", "zones.list", "zones.get", "zones.replace", "zones.delete",
                 "providers.assign_zone", "providers.set_rating"):
        assert name in rpc.REGISTRY, name
    assert rpc.REGISTRY["zones.create"].roles == frozenset({"admin"})
    assert "provider" not in rpc.REGISTRY["match.find"].roles


@pytest.mark.parametrize("params", [
    {"lat": 91, "lng": 0, "available": True},
    {"lat": 0, "lng": -181, "available": True},
    {"lat": 0, "lng": 0},
    {"lat": 0, "lng": 0, "available": True, "extra": 1},
    {"lat": 0, "lng": 0, "available": True, "capacity": -1},
    {"lat": 0, "lng": 0, "available": True, "categories": [""]},
    {"lat": 0, "lng": 0, "available": True, "schedule": [{"days": ["funday"], "from": "09:00", "to": "10:00"}]},
    {"lat": 0, "lng": 0, "available": True, "schedule": [{"from": "09:00"}]},
])
def test_providers_update_schema(params: dict[str, Any]) -> None:
    assert refused("provider", "providers.update", params) == "bad_request"


@pytest.mark.parametrize("params", [
    {"lat": 0, "lng": 0, "category": "x", "k": 0},
    {"lat": 0, "lng": 0, "category": "x", "k": 101},
    {"lat": 0, "lng": 0, "category": "x", "crew": 0},
    {"lat": 0, "lng": 0, "category": "x", "crew": 21},
    {"lat": -90.5, "lng": 0, "category": "x"},
    {"lat": 0, "lng": 0},
    {"lat": 0, "lng": 0, "category": "x", "radius": 5},
])
def test_match_find_schema(params: dict[str, Any]) -> None:
    assert refused("customer", "match.find", params) == "bad_request"


def test_roles() -> None:
    assert refused("customer", "providers.update", {"lat": 0, "lng": 0, "available": True}) == "forbidden"
    assert refused("provider", "match.find", {"lat": 0, "lng": 0, "category": "x"}) == "forbidden"
    assert refused("serviceman", "match.find", {"lat": 0, "lng": 0, "category": "x"}) == "forbidden"
    assert refused("provider", "bookings.create", {"category": "x", "lat": 0, "lng": 0, "mode": "on_demand"}) \
        == "forbidden"
    assert refused("customer", "offers.accept", {"booking": "b1"}) == "forbidden"
    for role in ("customer", "provider", "enterprise"):
        assert refused(role, "zones.list", {}) == "forbidden"
        assert refused(role, "providers.assign_zone", {"provider": "p", "zone": "z"}) == "forbidden"


def test_update_find_book_accept_over_rpc() -> None:
    cat = uid("cat")
    zone = call("admin", "zones.create", {"name": "Hackney", "categories": [cat], "geometry": square(LAT, LNG)},
                user="ops")
    assert zone["active"] is True and zone["categories"] == [cat]
    assert AuditLog.objects.filter(action="zones.create", target=zone["id"], actor="ops").exists()
    p1, p2 = uid("p"), uid("p")
    got = call("provider", "providers.update", {"lat": LAT + 0.001, "lng": LNG, "available": True,
                                                  "categories": [cat], "capacity": 1}, user=p1)
    assert set(got) == {"cell"} and isinstance(got["cell"], str)
    call("serviceman", "providers.update", {"lat": LAT + 0.002, "lng": LNG, "available": True,
                                            "categories": [cat]}, user=p2)
    found = call("admin", "match.find", {"lat": LAT, "lng": LNG, "category": cat})
    assert found["zone"] == zone["id"]
    assert [p["user"] for p in found["providers"]] == [p1, p2]
    first = found["providers"][0]
    assert set(first) == {"user", "distance_m", "score"}
    assert first["distance_m"] == pytest.approx(111.2, abs=0.2)  # admins see exact distances
    # Customers and enterprises see distances to each provider's cell centre, rounded to 100 m.
    coarse = call("customer", "match.find", {"lat": LAT, "lng": LNG, "category": cat})
    assert coarse["zone"] == zone["id"] and {p["user"] for p in coarse["providers"]} == {p1, p2}
    assert all(p["distance_m"] % 100 == 0 and set(p) == {"user", "distance_m", "score"}
               for p in coarse["providers"])
    assert call("enterprise", "match.find", {"lat": LAT, "lng": LNG, "category": cat, "k": 1})["providers"] \
        == coarse["providers"][:1]
    assert call("admin", "match.find", {"lat": 0, "lng": 0, "category": cat}) == {"zone": None, "providers": [],
                                                                                  "reason": "outside_zones"}
    crew = call("customer", "match.find", {"lat": LAT, "lng": LNG, "category": cat, "crew": 2})
    assert {p["user"] for p in crew["providers"]} == {p1, p2}
    assert call("customer", "match.find", {"lat": LAT, "lng": LNG, "category": cat, "crew": 3})["providers"] == []

    customer = uid("c")
    booking = call("customer", "bookings.create", {"category": cat, "lat": LAT, "lng": LNG, "mode": "on_demand"},
                   user=customer)
    assert booking["status"] == "offering"
    got = call("provider", "offers.accept", {"booking": booking["booking"]}, user=p1)
    assert got["status"] == "accepted"
    with pytest.raises(HubError) as err:
        call("serviceman", "offers.accept", {"booking": booking["booking"]}, user=p2)
    assert err.value.code == "conflict"
    seen = call("customer", "bookings.get", {"booking": booking["booking"]}, user=customer)
    assert seen["status"] == "assigned" and seen["providers"] == [p1]
    with pytest.raises(HubError) as err:
        call("customer", "bookings.get", {"booking": booking["booking"]})
    assert err.value.code == "not_found"
    with pytest.raises(HubError) as err:
        call("provider", "offers.accept", {"booking": "nosuchbooking"}, user=p1)
    assert err.value.code == "not_found"


def test_zone_rpc_crud_and_validation() -> None:
    cat = uid("cat")
    z = call("admin", "zones.create", {"name": "A", "categories": [cat], "geometry": square(50, 0),
                                       "active": False})
    assert z["active"] is False
    assert call("admin", "zones.get", {"id": z["id"]})["name"] == "A"
    assert [x["id"] for x in call("admin", "zones.list", {"category": cat})["zones"]] == [z["id"]]
    z2 = call("admin", "zones.replace", {"id": z["id"], "name": "B", "categories": [cat], "geometry": square(50, 0)})
    assert z2["name"] == "B" and z2["active"] is True and z2["version"] == 2
    assert call("admin", "zones.delete", {"id": z["id"]}) == {"id": z["id"], "deleted": True}
    assert refused("admin", "zones.get", {"id": z["id"]}) == "not_found"
    assert refused("admin", "zones.delete", {"id": z["id"]}) == "not_found"
    bad = {"type": "Polygon", "coordinates": [[[0, 51], [1, 52], [1, 51], [0, 52], [0, 51]]]}  # a bow tie
    with pytest.raises(HubError) as err:
        call("admin", "zones.create", {"name": "X", "categories": [cat], "geometry": bad})
    assert err.value.code == "bad_request" and "geometry" in err.value.message
    assert refused("admin", "zones.create", {"name": "X", "categories": [], "geometry": square(50, 0)}) \
        == "bad_request"
    assert refused("admin", "providers.assign_zone", {"provider": "p", "zone": "nosuchzone"}) == "not_found"


def test_set_rating_changes_score() -> None:
    cat = uid("cat")
    call("admin", "zones.create", {"name": "R", "categories": [cat], "geometry": square(LAT, LNG)})
    p = uid("p")
    call("provider", "providers.update", {"lat": LAT, "lng": LNG, "available": True, "categories": [cat]}, user=p)
    before = call("customer", "match.find", {"lat": LAT, "lng": LNG, "category": cat})["providers"][0]["score"]
    call("admin", "providers.set_rating", {"provider": p, "rating": 5})
    after = call("customer", "match.find", {"lat": LAT, "lng": LNG, "category": cat})["providers"][0]["score"]
    assert after == pytest.approx(before - 0.25)


def test_match_find_reason_over_a_live_socket(live_hub: Any) -> None:
    from tests.support import HubClient, mint

    cat = uid("cat")
    with HubClient(live_hub.url, mint("ops", "admin")) as ops, \
            HubClient(live_hub.url, mint(uid("c"), "customer")) as customer, \
            HubClient(live_hub.url, mint(uid("p"), "provider")) as provider:
        assert customer.rpc("match.find", lat=LAT, lng=LNG, category=cat) == {
            "zone": None, "providers": [], "reason": "outside_zones"}
        zone = ops.rpc("zones.create", name="Reason", categories=[cat], geometry=square(LAT, LNG))
        assert customer.rpc("match.find", lat=LAT, lng=LNG, category=cat) == {
            "zone": zone["id"], "providers": [], "reason": "no_provider_available"}
        provider.rpc("providers.update", lat=LAT, lng=LNG, available=True, categories=[cat])
        found = customer.rpc("match.find", lat=LAT, lng=LNG, category=cat)
        assert found["zone"] == zone["id"] and found["reason"] is None and len(found["providers"]) == 1
        ops.rpc("zones.delete", id=zone["id"])
