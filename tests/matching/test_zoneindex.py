"""ZoneIndex: geometry validation messages and exactness against shapely (no Django, no network)."""

from __future__ import annotations

import math
import random
from typing import Any

import h3
import pytest
import shapely
from shapely.geometry import Point, Polygon, shape

from matching.geo import destination
from matching.zoneindex import MAX_VERTICES, GeometryError, ZoneIndex, validate_geometry

Q = (51.5074, -0.1278)


def square(lng: float, lat: float, d: float = 0.01) -> list[list[float]]:
    return [[lng, lat], [lng + d, lat], [lng + d, lat + d], [lng, lat + d], [lng, lat]]


def poly(*rings: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def blob(lat: float, lng: float, radius_m: float, n: int, rng: random.Random) -> list[list[float]]:
    """Irregular star-shaped ring (counter-clockwise), closed."""
    pts = []
    for i in range(n):
        la, ln = destination(lat, lng, 360.0 * i / n, radius_m * (0.55 + 0.45 * rng.random()))
        pts.append([ln, la])
    pts.reverse()  # destination() walks clockwise in lng/lat; either orientation is valid
    pts.append(pts[0])
    return pts


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("geojson", "message"),
    [
        ({"type": "Point", "coordinates": [0.0, 51.5]}, "unsupported geometry type 'Point'"),
        ({"type": "LineString", "coordinates": [[0, 51], [1, 52]]},
         "expected 'Polygon' or 'MultiPolygon'"),
        ({"coordinates": [square(-0.1, 51.5)]}, "unsupported geometry type None"),
        ({"type": "Polygon"}, "missing 'coordinates'"),
        ({"type": "Polygon", "coordinates": None}, "missing 'coordinates'"),
        ({"type": "Polygon", "coordinates": "nope"}, "must be a non-empty array"),
        ({"type": "Polygon", "coordinates": []}, "must be a non-empty array"),
        ({"type": "Polygon", "coordinates": [5]}, "a ring must be an array of positions"),
        (poly([[0.0, 51.0], [0.1, 51.0], "x", [0.0, 51.0]]), "position 2: a position must be [lng, lat]"),
        (poly([[0.0, 51.0], [0.1, 51.0, 1.0, 2.0], [0.1, 51.1], [0.0, 51.0]]), "a position must be"),
        (poly([[0.0, 51.0], [0.1, "51"], [0.1, 51.1], [0.0, 51.0]]), "coordinates must be numbers"),
        (poly([[0.0, 51.0], [0.1, True], [0.1, 51.1], [0.0, 51.0]]), "coordinates must be numbers"),
        (poly([[0.0, 51.0], [0.1, 51.0], [0.1, 51.1], [0.0, 51.2]]), "ring is not closed"),
        (poly([[0.0, 51.0], [0.1, 51.0], [0.0, 51.0]]), "at least 4 positions"),
        (poly([[0.0, 51.0], [float("nan"), 51.0], [0.1, 51.1], [0.0, 51.0]]), "non-finite coordinate"),
        (poly([[0.0, 51.0], [float("inf"), 51.0], [0.1, 51.1], [0.0, 51.0]]), "non-finite coordinate"),
        (poly([[0.0, 51.0], [190.0, 51.0], [0.1, 51.1], [0.0, 51.0]]), "coordinate out of range"),
        (poly([[0.0, 51.0], [120.0, -95.0], [0.1, 51.1], [0.0, 51.0]]), "coordinate out of range"),
        # Tokyo as [lat, lng]: second value beyond +-90 -> swapped hint.
        (poly([[35.6, 139.6], [35.7, 139.6], [35.7, 139.7], [35.6, 139.6]]), "coordinates look swapped"),
        # UK data given as [lat, lng]: in range, but clearly reversed.
        (poly([[51.50, -0.12], [51.51, -0.12], [51.51, -0.11], [51.50, -0.12]]),
         "coordinates look swapped: GeoJSON is [lng, lat]"),
        # Bow-tie.
        (poly([[0.0, 51.0], [0.1, 51.1], [0.1, 51.0], [0.0, 51.1], [0.0, 51.0]]), "Self-intersection"),
        (poly(square(0.0, 51.0), square(0.5, 51.5)), "invalid geometry"),  # hole outside shell
        ({"type": "MultiPolygon", "coordinates": [[square(0.0, 51.0)], "bad"]}, "polygon 1: must be"),
        ({"type": "MultiPolygon", "coordinates": [[square(0.0, 51.0)], [[[0, 51], [0.1, 51]]]]},
         "polygon 1 exterior ring: a ring needs at least 4 positions"),
        ("not a dict", "must be a GeoJSON object"),
    ],
)
def test_validation_refusals(geojson: Any, message: str) -> None:
    with pytest.raises(GeometryError) as exc:
        validate_geometry(geojson)
    assert message in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_too_many_vertices() -> None:
    ring = blob(51.5, -0.12, 5000, MAX_VERTICES + 5, random.Random(1))
    with pytest.raises(GeometryError, match="too many vertices"):
        validate_geometry(poly(ring))
    ok = blob(51.5, -0.12, 5000, 2000, random.Random(1))
    assert validate_geometry(poly(ok)).is_valid


def test_valid_polygon_with_hole_and_multipolygon() -> None:
    outer = square(-0.2, 51.45, 0.1)
    hole = square(-0.17, 51.48, 0.02)[::-1]
    g = validate_geometry(poly(outer, hole))
    assert isinstance(g, Polygon) and len(g.interiors) == 1
    m = validate_geometry(
        {"type": "MultiPolygon", "coordinates": [[square(-0.2, 51.45)], [square(0.0, 51.5)]]}
    )
    assert m.geom_type == "MultiPolygon" and len(m.geoms) == 2
    # 3D positions are accepted (altitude ignored).
    three_d = [[-0.1, 51.5, 10], [0.0, 51.5, 10], [0.0, 51.6, 0], [-0.1, 51.5, 10]]
    assert validate_geometry(poly(three_d)).is_valid


def test_uk_swap_check_can_be_disabled() -> None:
    g = poly([[51.50, -0.12], [51.51, -0.12], [51.51, -0.11], [51.50, -0.12]])
    assert validate_geometry(g, uk_swap_check=False).is_valid


def test_put_rejects_bad_geometry_and_keeps_state() -> None:
    zi = ZoneIndex()
    zi.put("a", poly(square(-0.15, 51.49, 0.05)), ["x"])
    with pytest.raises(GeometryError):
        zi.put("a", {"type": "Point", "coordinates": [0, 0]}, ["x"])
    assert zi.lookup(51.51, -0.12) == "a"


# ---------------------------------------------------------------------------- lookups
def test_basic_lookup_hole_and_multipolygon() -> None:
    zi = ZoneIndex()
    zi.put("ring", poly(square(-0.2, 51.45, 0.1), square(-0.17, 51.48, 0.02)[::-1]), ["x"])
    multi = {"type": "MultiPolygon", "coordinates": [[square(0.0, 51.5, 0.02)], [square(0.1, 51.5, 0.02)]]}
    zi.put("multi", multi, ["y"])
    assert zi.lookup(51.46, -0.19) == "ring"
    assert zi.lookup(51.49, -0.16) is None  # inside the hole
    assert zi.lookup(51.48, -0.16) == "ring"  # on the hole's boundary: covered
    assert zi.lookup(51.51, 0.01) == "multi"
    assert zi.lookup(51.51, 0.11) == "multi"
    assert zi.lookup(51.51, 0.05) is None  # between the parts
    assert zi.lookup(52.5, -1.0) is None
    assert zi.covers("ring", 51.46, -0.19) and not zi.covers("ring", 51.49, -0.16)
    assert not zi.covers("nope", 51.46, -0.19)
    assert len(zi) == 2 and "ring" in zi


def test_overlapping_smallest_wins_and_categories() -> None:
    zi = ZoneIndex()
    zi.put("big", poly(square(-0.3, 51.4, 0.3)), ["plumbing", "cleaning"])
    zi.put("mid", poly(square(-0.2, 51.45, 0.1)), ["plumbing"])
    zi.put("small", poly(square(-0.16, 51.49, 0.02)), ["cleaning"])
    p = (51.5, -0.15)
    assert zi.lookup(*p) == "small"
    assert zi.lookup(*p, "plumbing") == "mid"
    assert zi.lookup(*p, "cleaning") == "small"
    assert zi.lookup(*p, "gardening") is None
    assert zi.zones_covering(*p) == ["small", "mid", "big"]
    assert zi.lookup(51.42, -0.28, "plumbing") == "big"


def test_inactive_ignored_and_reactivated() -> None:
    zi = ZoneIndex()
    zi.put("big", poly(square(-0.3, 51.4, 0.3)), ["x"])
    zi.put("small", poly(square(-0.16, 51.49, 0.02)), ["x"], active=False)
    p = (51.5, -0.15)
    assert zi.lookup(*p) == "big"
    assert zi.zones_covering(*p) == ["big"]
    assert zi.covers("small", *p)  # geometry question: independent of the active flag
    zi.set_active("small", True)
    assert zi.lookup(*p) == "small"
    zi.put("small", poly(square(-0.16, 51.49, 0.02)), ["x"], active=False)
    assert zi.lookup(*p) == "big"


def test_replace_and_remove() -> None:
    zi = ZoneIndex()
    zi.put("a", poly(square(-0.2, 51.45, 0.05)), ["x"])
    assert zi.lookup(51.47, -0.17) == "a"
    zi.put("a", poly(square(0.0, 51.45, 0.05)), ["x"])  # moved elsewhere
    assert zi.lookup(51.47, -0.17) is None
    assert zi.lookup(51.47, 0.02) == "a"
    assert zi.remove("a") is True and zi.remove("a") is False
    assert zi.lookup(51.47, 0.02) is None
    assert not zi._coarse and not zi._fine and not zi._cell_zones


def test_parent_bit_trick_matches_h3() -> None:
    zi = ZoneIndex(res=8, fine_res=10)
    rng = random.Random(0)
    for _ in range(2000):
        lat, lng = rng.uniform(-80, 80), rng.uniform(-180, 180)
        fine = h3.str_to_int(h3.latlng_to_cell(lat, lng, 10))
        assert zi._parent(fine) == h3.str_to_int(h3.cell_to_parent(h3.int_to_str(fine), 8))


def _near_boundary_points(geom: Any, rng: random.Random, n: int) -> list[tuple[float, float]]:
    """(lat, lng) points within a few metres of edges (both sides) and of vertices."""
    rings = []
    for part in getattr(geom, "geoms", [geom]):
        rings.append(list(part.exterior.coords))
        rings.extend(list(r.coords) for r in part.interiors)
    out = []
    for _ in range(n):
        ring = rng.choice(rings)
        i = rng.randrange(len(ring) - 1)
        (x1, y1), (x2, y2) = ring[i], ring[i + 1]
        t = rng.choice([0.0, 1.0, rng.random(), rng.random()])
        x, y = x1 + t * (x2 - x1), y1 + t * (y2 - y1)
        # Offset perpendicular-ish by up to a few metres (or exactly 0 / sub-millimetre).
        d = rng.choice([0.0, 1e-9, -1e-9, rng.uniform(-5, 5), rng.uniform(-0.05, 0.05)]) / 111_000
        nx, ny = -(y2 - y1), (x2 - x1)
        norm = math.hypot(nx, ny) or 1.0
        ang = rng.uniform(0, 2 * math.pi) if t in (0.0, 1.0) else None
        if ang is not None:
            x, y = x + d * math.cos(ang) / math.cos(math.radians(y)), y + d * math.sin(ang)
        else:
            x, y = x + d * nx / norm / math.cos(math.radians(y)), y + d * ny / norm
        out.append((y, x))
    return out


@pytest.mark.parametrize("res", [7, 8, 9])
def test_exact_against_shapely_near_edges(res: int) -> None:
    rng = random.Random(res)
    zi = ZoneIndex(res=res)
    zones: dict[str, Any] = {}
    specs = [
        ("hole", 51.52, -0.12, 4000, 300, True),
        ("east", 51.50, -0.05, 3000, 120, False),  # overlaps "hole"
        ("west", 51.47, -0.25, 2500, 60, False),
        ("tiny", 51.515, -0.125, 150, 12, False),  # smaller than one coarse cell
    ]
    for name, lat, lng, radius, n, with_hole in specs:
        rings = [blob(lat, lng, radius, n, rng)]
        if with_hole:
            rings.append(blob(lat + 0.003, lng - 0.005, radius * 0.25, 40, rng)[::-1])
        g = poly(*rings)
        zi.put(name, g, ["x"] if name != "east" else ["y"])
        zones[name] = shape(g)
    zones["multi"] = shape({"type": "MultiPolygon", "coordinates": [
        [blob(51.56, -0.30, 900, 50, rng)], [blob(51.56, -0.27, 700, 50, rng)]]})
    zi.put("multi", shapely.geometry.mapping(zones["multi"]), ["x"])
    by_area = sorted(zones, key=lambda z: (zones[z].area, z))

    points: list[tuple[float, float]] = []
    for g in zones.values():
        points += _near_boundary_points(g, rng, 1500)
    points += [(rng.uniform(51.40, 51.62), rng.uniform(-0.40, 0.05)) for _ in range(1000)]
    mismatches = 0
    for lat, lng in points:
        pt = Point(lng, lat)
        want = [z for z in by_area if zones[z].covers(pt)]
        assert zi.zones_covering(lat, lng) == want, (lat, lng)
        for z in zones:
            if zi.covers(z, lat, lng) != (z in want):
                mismatches += 1
        assert zi.lookup(lat, lng) == (want[0] if want else None)
        want_y = [z for z in want if z == "east"]
        assert zi.lookup(lat, lng, "y") == (want_y[0] if want_y else None)
    assert mismatches == 0
    assert len(points) >= 8000
