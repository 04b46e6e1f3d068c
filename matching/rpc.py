"""rpc methods for providers, matching, bookings, offers and zones (also served at POST /api/<method>):
schemas and registration; the rules are in matching.actions.

Roles: `match.find` is for customers, enterprises and admins. Providers and servicemen may not
call it: distances to named competitors from chosen points would let them locate each other.
Customers and enterprises get distances to each provider's cell centre, rounded (matching.privacy).
"""
from __future__ import annotations

from typing import Any

from hub.rpc import PROVIDERS, USERS, Caller, method
from matching.actions import bookings, providers, zones
from matching.matcher import NO_PROVIDER_AVAILABLE, OUTSIDE_ZONES
from matching.schedules import WEEKDAYS

ADMIN = ("admin",)
LAT = {"type": "number", "minimum": -90, "maximum": 90}
LNG = {"type": "number", "minimum": -180, "maximum": 180}
CATEGORY = {"type": "string", "minLength": 1, "maxLength": 64}
ID = {"type": "string", "minLength": 1, "maxLength": 32, "pattern": "^[A-Za-z0-9_-]+$"}
USER = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^:]+$"}
CLOCK = {"type": "string", "pattern": "^([01][0-9]|2[0-4]):[0-5][0-9]$"}
INSTANT = {"type": "string", "minLength": 10, "maxLength": 40}
SCHEDULE = {
    "type": "array", "maxItems": 100,
    "items": {"oneOf": [
        {"type": "object", "additionalProperties": False, "required": ["from", "to"],
         "properties": {"from": INSTANT, "to": INSTANT}},
        {"type": "object", "additionalProperties": False, "required": ["days", "from", "to"],
         "properties": {"days": {"type": "array", "minItems": 1, "maxItems": 7, "uniqueItems": True,
                                 "items": {"enum": list(WEEKDAYS)}},
                        "from": CLOCK, "to": CLOCK,
                        "tz": {"type": "string", "minLength": 1, "maxLength": 64}}},
    ]},
}
GEOMETRY = {"type": "object", "required": ["type", "coordinates"],
            "properties": {"type": {"type": "string"}, "coordinates": {"type": "array"}}}
ZONE_FIELDS = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "categories": {"type": "array", "minItems": 1, "maxItems": 100, "items": CATEGORY},
    "geometry": GEOMETRY,
    "active": {"type": "boolean"},
}
ZONE_RESULT = {"type": "object", "properties": {
    "id": {"type": "string"}, "name": {"type": "string"}, "categories": {"type": "array"},
    "geometry": {"type": "object"}, "active": {"type": "boolean"}, "version": {"type": "integer"}}}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required, "properties": props}


# --- providers and matching -------------------------------------------------------------------

@method("providers.update", roles=PROVIDERS,
        summary="Report your location and availability (many times a minute); returns your H3 cell.",
        params=_obj(["lat", "lng", "available"], lat=LAT, lng=LNG, available={"type": "boolean"},
                    categories={"type": "array", "maxItems": 50, "items": CATEGORY},
                    capacity={"type": "integer", "minimum": 0, "maximum": 100}, schedule=SCHEDULE),
        result={"type": "object", "properties": {"cell": {"type": "string"}}})
def providers_update(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    cell = providers.update_provider(caller.user, params["lat"], params["lng"], params["available"],
                                   categories=params.get("categories"), capacity=params.get("capacity"),
                                   schedule=params.get("schedule"), tenant=caller.tenant)
    return {"cell": cell}


@method("match.find", roles=("customer", "enterprise", "admin"),
        summary="The k nearest available providers for a category at a point (crew > 1: a crew).",
        params=_obj(["lat", "lng", "category"], lat=LAT, lng=LNG, category=CATEGORY,
                    k={"type": "integer", "minimum": 1, "maximum": 100},
                    crew={"type": "integer", "minimum": 1, "maximum": 20}),
        result={"type": "object", "properties": {
            "zone": {"type": ["string", "null"]},
            "providers": {"type": "array", "items": {"type": "object", "properties": {
                "user": {"type": "string"}, "distance_m": {"type": "number"},
                "score": {"type": "number"}}}},
            "reason": {"enum": [None, OUTSIDE_ZONES, NO_PROVIDER_AVAILABLE]}}})
async def match_find(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return await providers.find_providers(caller, params["lat"], params["lng"], params["category"],
                                          k=params.get("k", 10), crew=params.get("crew", 1))


@method("providers.assign_zone", roles=ADMIN,
        summary="Assign a provider to a zone (remove: true unassigns); they then serve it from anywhere.",
        params=_obj(["provider", "zone"], provider=USER, zone=ID, remove={"type": "boolean"}))
def providers_assign_zone(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return providers.assign_zone(caller, params["provider"], params["zone"], remove=params.get("remove", False))


@method("providers.set_rating", roles=ADMIN, summary="Set a provider's rating (0..5), used in the score.",
        params=_obj(["provider", "rating"], provider=USER,
                    rating={"type": "number", "minimum": 0, "maximum": 5}))
def providers_set_rating(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    providers.set_rating(caller, params["provider"], float(params["rating"]))
    return {"provider": params["provider"], "rating": params["rating"]}


# --- bookings and offers ----------------------------------------------------------------------

@method("bookings.create", roles=("customer", "enterprise"),
        summary="Book a category at a point, now (on_demand) or at a time (scheduled); offers go out.",
        serial=bookings.booking_queue,
        batch=lambda calls: bookings.create_bookings([bookings.BookingRequest(
            c, p["category"], p["lat"], p["lng"], p["mode"], p.get("at"), p.get("crew", 1)) for c, p in calls]),
        params=_obj(["category", "lat", "lng", "mode"], category=CATEGORY, lat=LAT, lng=LNG,
                    mode={"enum": ["on_demand", "scheduled"]}, at=INSTANT,
                    crew={"type": "integer", "minimum": 1, "maximum": 20}),
        result={"type": "object", "properties": {"booking": {"type": "string"},
                                                 "status": {"type": "string"}}})
def bookings_create(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return bookings.create_booking(caller, params["category"], params["lat"], params["lng"], params["mode"],
                                   at=params.get("at"), crew=params.get("crew", 1))


@method("bookings.get", roles=USERS, summary="A booking, for its customer, providers offered it, admins.",
        params=_obj(["booking"], booking=ID))
def bookings_get(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return bookings.get_booking(caller, params["booking"])


@method("offers.accept", roles=PROVIDERS, summary="Accept an offer: first come, first served.",
        params=_obj(["booking"], booking=ID))
def offers_accept(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return bookings.accept_offer(caller, params["booking"])


@method("offers.decline", roles=PROVIDERS, summary="Decline an offer; it goes to the next candidate.",
        params=_obj(["booking"], booking=ID))
def offers_decline(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return bookings.decline_offer(caller, params["booking"])


# --- zones (also REST: /api/zones, /api/zones/<id>) --------------------------------------------

@method("zones.create", roles=ADMIN, summary="Create a service zone (GeoJSON Polygon/MultiPolygon).",
        params=_obj(["name", "categories", "geometry"], **ZONE_FIELDS), result=ZONE_RESULT)
def zones_create(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return zones.create_zone(caller, params["name"], params["categories"], params["geometry"],
                               active=params.get("active", True))


@method("zones.list", roles=ADMIN, summary="List zones, optionally by category or active flag.",
        params=_obj([], category=CATEGORY, active={"type": "boolean"}))
def zones_list(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return {"zones": zones.list_zones(params.get("category"), params.get("active"), caller.tenant)}


@method("zones.get", roles=ADMIN, summary="One zone.", params=_obj(["id"], id=ID), result=ZONE_RESULT)
def zones_get(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return zones.get_zone(params["id"], caller.tenant)


@method("zones.replace", roles=ADMIN, summary="Replace a zone's name, categories, geometry and flag.",
        params=_obj(["id", "name", "categories", "geometry"], id=ID, **ZONE_FIELDS), result=ZONE_RESULT)
def zones_replace(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return zones.replace_zone(caller, params["id"], params["name"], params["categories"],
                                params["geometry"],
                                active=params.get("active", True))


@method("zones.delete", roles=ADMIN, summary="Delete a zone (its provider assignments go with it).",
        params=_obj(["id"], id=ID))
def zones_delete(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return zones.delete_zone(caller, params["id"])
