"""Small, dependency-free geodesy helpers (spherical Earth, metres)."""

from __future__ import annotations

import math

# IUGG mean Earth radius; the same value h3 uses for its metre-based helpers.
EARTH_RADIUS_M: float = 6371008.8

_DEG = math.pi / 180.0
# Metres per degree of latitude on the sphere (also per degree of longitude at the equator).
M_PER_DEG: float = EARTH_RADIUS_M * _DEG


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres between two WGS84 points given in degrees."""
    p1 = lat1 * _DEG
    p2 = lat2 * _DEG
    s_dp = math.sin((p2 - p1) * 0.5)
    s_dl = math.sin((lng2 - lng1) * _DEG * 0.5)
    a = s_dp * s_dp + math.cos(p1) * math.cos(p2) * s_dl * s_dl
    # min() guards against a > 1 from rounding for antipodal points.
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


def valid_latlng(lat: float, lng: float) -> bool:
    """True for finite coordinates inside the WGS84 domain (NaN fails both comparisons)."""
    return -90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0


def bounding_box(lat: float, lng: float, radius_m: float) -> tuple[float, float, float, float]:
    """Conservative (min_lat, min_lng, max_lat, max_lng) box containing every point within radius_m.

    Longitude span uses the cosine of the latitude nearest the pole inside the box, so the box
    never under-covers; near a pole (or if the circle crosses one) the full longitude range is
    returned. Boxes are not wrapped across the antimeridian: they are clamped to [-180, 180].
    """
    if radius_m < 0:
        raise ValueError("radius_m must be >= 0")
    dlat = radius_m / M_PER_DEG
    min_lat = max(-90.0, lat - dlat)
    max_lat = min(90.0, lat + dlat)
    polar = max(abs(min_lat), abs(max_lat))
    if polar >= 89.9:
        return (min_lat, -180.0, max_lat, 180.0)
    dlng = dlat / math.cos(polar * _DEG)
    return (min_lat, max(-180.0, lng - dlng), max_lat, min(180.0, lng + dlng))


def in_bounding_box(lat: float, lng: float, box: tuple[float, float, float, float]) -> bool:
    """Point-in-box test for boxes produced by :func:`bounding_box`."""
    return box[0] <= lat <= box[2] and box[1] <= lng <= box[3]


def destination(lat: float, lng: float, bearing_deg: float, distance_m: float) -> tuple[float, float]:
    """Point reached travelling distance_m along a great circle from (lat, lng) at bearing_deg."""
    d = distance_m / EARTH_RADIUS_M
    b = bearing_deg * _DEG
    p1 = lat * _DEG
    l1 = lng * _DEG
    sp2 = math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b)
    p2 = math.asin(max(-1.0, min(1.0, sp2)))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * sp2)
    lng2 = (l2 / _DEG + 540.0) % 360.0 - 180.0
    return (p2 / _DEG, lng2)
