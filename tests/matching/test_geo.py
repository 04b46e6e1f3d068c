"""Pure geodesy helpers: no Django, no network."""

from __future__ import annotations

import math
import random

import h3
import pytest

from matching.geo import (
    EARTH_RADIUS_M,
    M_PER_DEG,
    bounding_box,
    destination,
    haversine_m,
    in_bounding_box,
    valid_latlng,
)

LONDON_BRIDGE = (51.50788, -0.08773)
TOWER_BRIDGE = (51.50546, -0.07537)


def test_london_bridge_to_tower_bridge() -> None:
    d = haversine_m(*LONDON_BRIDGE, *TOWER_BRIDGE)
    # ~0.9 km on the map; cross-check with h3's own great-circle implementation.
    assert 880 < d < 905
    assert d == pytest.approx(h3.great_circle_distance(LONDON_BRIDGE, TOWER_BRIDGE, unit="m"), rel=1e-6)


def test_known_distances() -> None:
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(M_PER_DEG, rel=1e-12)
    assert M_PER_DEG == pytest.approx(111_195.08, abs=0.01)
    assert haversine_m(0.0, 0.0, 0.0, 90.0) == pytest.approx(math.pi / 2 * EARTH_RADIUS_M, rel=1e-12)
    assert haversine_m(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * EARTH_RADIUS_M, rel=1e-12)
    assert haversine_m(90.0, 0.0, -90.0, 0.0) == pytest.approx(math.pi * EARTH_RADIUS_M, rel=1e-12)
    # Heathrow to London City Airport, ~35 km.
    assert haversine_m(51.4700, -0.4543, 51.5048, 0.0495) == pytest.approx(35_100, rel=0.01)


def test_symmetry_and_zero() -> None:
    rng = random.Random(3)
    for _ in range(200):
        a = (rng.uniform(-89, 89), rng.uniform(-180, 180))
        b = (rng.uniform(-89, 89), rng.uniform(-180, 180))
        assert haversine_m(*a, *b) == pytest.approx(haversine_m(*b, *a), rel=1e-12, abs=1e-6)
        assert haversine_m(*a, *a) == 0.0


def test_antimeridian() -> None:
    assert haversine_m(0.0, 179.9999, 0.0, -179.9999) == pytest.approx(2e-4 * M_PER_DEG, rel=1e-6)


def test_valid_latlng() -> None:
    assert valid_latlng(51.5, -0.1)
    assert not valid_latlng(91.0, 0.0)
    assert not valid_latlng(0.0, 180.5)
    assert not valid_latlng(float("nan"), 0.0)


def test_destination_round_trip() -> None:
    rng = random.Random(5)
    for _ in range(200):
        lat, lng = rng.uniform(51.28, 51.70), rng.uniform(-0.51, 0.33)
        dist = rng.uniform(0, 20_000)
        lat2, lng2 = destination(lat, lng, rng.uniform(0, 360), dist)
        assert haversine_m(lat, lng, lat2, lng2) == pytest.approx(dist, abs=1e-6)


def test_bounding_box_contains_circle() -> None:
    rng = random.Random(7)
    for _ in range(100):
        lat, lng = rng.uniform(-70, 70), rng.uniform(-170, 170)
        radius = rng.uniform(10, 50_000)
        box = bounding_box(lat, lng, radius)
        for bearing in range(0, 360, 15):
            p = destination(lat, lng, bearing, radius * 0.999)
            assert in_bounding_box(*p, box)
    assert bounding_box(89.95, 0.0, 20_000)[1:4:2] == (-180.0, 180.0)
    with pytest.raises(ValueError):
        bounding_box(0.0, 0.0, -1.0)
