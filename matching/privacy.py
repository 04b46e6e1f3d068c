"""Location privacy: what a customer may learn of a provider, and a provider of a job, before a deal.

Also the app's share of a data-subject request (`export`, `erase`, registered in ready()).

Positions are personal data. Customers and enterprises see a provider only as the centre of the
provider's H3 cell at resolution 8 (cells of about 0.7 km², every point within ~590 m of its
centre) with distances to it rounded to 100 m, so no sequence of `match.find` calls places a
provider more finely than their cell. Providers see a job only as its area (the same kind of cell,
its centre rounded to 3 decimals) until they are assigned to it; then the exact point is theirs.
docs/matching.md ("What each role sees and why") has the whole rule.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import h3
from django.db import transaction

from core import privacy as registry
from hub import privacy as hub_privacy
from matching import sync
from matching.geo import haversine_m
from matching.models import Assignment, Booking, Offer, ProviderState, ZoneAssignment

AREA_RES = 8  # about 0.74 km² per cell; every point lies within ~590 m of its cell's centre
DISTANCE_STEP_M = 100.0  # what a customer sees of a distance, and a provider of the distance to a job area
CENTRE_DECIMALS = 3  # an area centre is rounded to ~110 m (it says nothing finer than the cell anyway)
# Further than this from its exact position no cell centre lies (max over the globe is ~585 m at
# resolution 8; rounding the centre adds under 80 m): searches that keep a coarse radius look this
# much further and drop what the coarse distance puts outside.
COARSE_SLACK_M = 1000.0
# Roles that see exact positions and distances (besides a provider's own and an assigned job's).
EXACT_ROLES = frozenset({"admin", "service"})


def sees_exact(role: str) -> bool:
    return role in EXACT_ROLES


@lru_cache(maxsize=65536)
def _cell_centre(cell: str) -> tuple[float, float]:
    lat, lng = h3.cell_to_latlng(cell)
    return lat, lng


def coarse_point(lat: float, lng: float) -> tuple[float, float]:
    """The centre of the point's resolution-8 cell: a function of the cell alone."""
    return _cell_centre(h3.latlng_to_cell(lat, lng, AREA_RES))


def coarse_distance_m(lat: float, lng: float, provider_lat: float, provider_lng: float) -> float:
    """From a query point to a provider's cell centre, unrounded (for ranking and radius tests)."""
    clat, clng = coarse_point(provider_lat, provider_lng)
    return haversine_m(lat, lng, clat, clng)


def round_distance(distance_m: float) -> float:
    """A shown distance: a multiple of DISTANCE_STEP_M (a float, as distances always were)."""
    return float(DISTANCE_STEP_M * round(distance_m / DISTANCE_STEP_M))


@lru_cache(maxsize=65536)
def _area_of(cell: str) -> dict[str, Any]:
    clat, clng = _cell_centre(cell)
    lat, lng = round(clat, CENTRE_DECIMALS), round(clng, CENTRE_DECIMALS)
    # Every point of the cell lies within radius_m of the rounded centre (the farthest vertex, up).
    far = max(haversine_m(lat, lng, vlat, vlng) for vlat, vlng in h3.cell_to_boundary(cell))
    radius = int(DISTANCE_STEP_M * math.ceil(far / DISTANCE_STEP_M))
    return {"lat": lat, "lng": lng, "area": {"cell": cell, "radius_m": radius}}


def job_area(lat: float, lng: float) -> dict[str, Any]:
    """What a provider is told of a job's place before being chosen: `{lat, lng, area: {cell,
    radius_m}}`, the rounded centre of its resolution-8 cell (the job is within radius_m of it)."""
    out = _area_of(h3.latlng_to_cell(lat, lng, AREA_RES))
    return {"lat": out["lat"], "lng": out["lng"], "area": dict(out["area"])}


def distance_to_area_m(provider_lat: float, provider_lng: float, area: dict[str, Any]) -> float:
    """The offer's distance band: from the provider to the job area's centre, rounded to 100 m.
    Made only of what the provider already knows (their position and the area), so it leaks nothing."""
    return round_distance(haversine_m(provider_lat, provider_lng, area["lat"], area["lng"]))


def export(user: str) -> dict[str, Any]:
    row = registry.row
    # The snapshot is keyed `<tenant>/<user>` (matching.matcher.provider_key): U in every tenant.
    states = list(ProviderState.objects.filter(user__endswith=f"/{user}").order_by("user"))
    return {
        "bookings": [row(b) for b in Booking.objects.filter(customer=user).order_by("created_at", "id")],
        "offers": [row(o) for o in Offer.objects.filter(provider=user).order_by("offered_at", "id")],
        "assignments": [row(a) for a in Assignment.objects.filter(provider=user).order_by("accepted_at", "id")],
        "provider_state": [row(s) for s in states],
    }


def erase(user: str, pseudonym: str) -> dict[str, int]:
    """Bookings: customer pseudonymised, location cleared (and the publications about them lose
    their place); offers and assignments: provider pseudonymised (an offer's distance zeroed: it
    places its provider relative to a known booking); U's provider state and zone assignments
    deleted, and U leaves every process's matcher index and the Redis snapshot at commit."""
    bookings = set(Booking.objects.filter(customer=user).values_list("id", flat=True))
    out = {
        "place_publications": hub_privacy.erase_places("booking", bookings),
        "bookings": Booking.objects.filter(customer=user).update(customer=pseudonym, lat=0.0, lng=0.0),
        "offers": Offer.objects.filter(provider=user).update(provider=pseudonym, distance_m=0.0),
        "assignments": Assignment.objects.filter(provider=user).update(provider=pseudonym),
        "provider_state": ProviderState.objects.filter(user__endswith=f"/{user}").delete()[0],
        "zone_assignments": ZoneAssignment.objects.filter(provider=user).delete()[0],
    }
    transaction.on_commit(lambda: sync.erase_provider(user))
    return out


ENTRY = registry.Entry("matching", export=export, erase=erase)


def forget_here(user: str) -> None:
    """An erasure this hub process heard of from the database rather than Redis (no Redis, or a
    lost message; hub.privacy.poll_erasures): the provider leaves this process's index."""
    from matching import matcher

    m = matcher._matcher
    if m is not None:
        m.sync.forget(user)

