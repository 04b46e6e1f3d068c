"""The compiled search kernels against plain-Python references (matching/kernels.py)."""

from __future__ import annotations

import math
import random

import numpy as np

from matching import kernels
from matching.geo import haversine_m


def _unit(lat: float, lng: float) -> tuple[float, float, float]:
    la, lo = math.radians(lat), math.radians(lng)
    return math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)


def _tables(points: list[tuple[float, float, float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """hot rows (x, y, z, ets) and float record rows (lat, lng, ts, rating, acc, -, -)."""
    hot = np.array([(*_unit(la, ln), ets, ) for la, ln, ets, _r, _a in points], dtype=np.float64)
    rec = np.array([(la, ln, 0.0, r, a, 0.0, 0.0) for la, ln, _e, r, a in points], dtype=np.float64)
    return hot, rec


def _slots(n: int) -> np.ndarray:
    return np.frombuffer(np.arange(n, dtype=np.int64).tobytes(), dtype=np.int64)  # read-only, as in use


def test_distances_are_bit_for_bit_haversine() -> None:
    rng = random.Random(5)
    for _ in range(30):
        qlat, qlng = rng.uniform(-89, 89), rng.uniform(-179, 179)
        pts = [(rng.uniform(-90, 90), rng.uniform(-180, 180), 1.0, rng.random(), rng.random()) for _ in range(50)]
        pts += [(qlat + rng.uniform(-0.01, 0.01), qlng + rng.uniform(-0.01, 0.01), 1.0, 0.0, 0.0) for _ in range(50)]
        hot, rec = _tables(pts)
        qx, qy, qz = _unit(qlat, qlng)
        slots, dists, _kth, m, _tie = kernels.nearest_rows(
            hot, rec, _slots(len(pts)), qlat, qlng, qx, qy, qz, 0.0, -2.0, len(pts), 1e-14, math.inf)
        assert m == len(pts) and slots.size == len(pts)
        for s, d in zip(slots.tolist(), dists.tolist(), strict=True):
            assert d == haversine_m(qlat, qlng, pts[s][0], pts[s][1])
        assert dists.tolist() == sorted(dists.tolist())


def test_ineligible_far_and_ties() -> None:
    q = (51.5, -0.1)
    pts = [
        (51.5, -0.1001, 1.0, 4.0, 0.5),   # 0: nearest
        (51.5, -0.1002, 0.0, 5.0, 1.0),   # 1: stale (ets below min_ts)
        (51.5, -0.1003, 1.0, 5.0, 1.0),   # 2
        (51.5, -0.0996, 1.0, 4.0, 1.0),   # 3
        (51.6, -0.1, 1.0, 5.0, 1.0),      # 4: ~11 km, beyond the radius
        (51.5, -0.1001, 1.0, 4.0, 0.5),   # 5: same place, rating and acceptance as 0: a tie
    ]
    hot, rec = _tables(pts)
    slots, dists, _kth, m, tie = kernels.nearest_rows(
        hot, rec, _slots(6), q[0], q[1], *_unit(*q), 0.5, math.cos(5000 / 6371008.8) - 1e-14, 10, 1e-14, 5000.0)
    assert m == 4  # 1 is stale, 4 beyond the floor
    assert set(slots.tolist()[:2]) == {0, 5} and slots.tolist()[2:] == [2, 3]
    assert tie  # 0 and 5 share every key: the index breaks it by user id


def test_rank_full_orders_by_dot() -> None:
    rng = random.Random(9)
    pts = [(51.5 + rng.uniform(-0.05, 0.05), -0.1 + rng.uniform(-0.05, 0.05), 1.0, 0.0, 0.0) for _ in range(200)]
    hot, _rec = _tables(pts)
    qx, qy, qz = _unit(51.5, -0.1)
    slots, dots, kth, m = kernels.rank(hot, _slots(200), qx, qy, qz, 0.0, -2.0, 10, 1e-14, True)
    assert m == 200 and slots.size == 200
    assert dots.tolist() == sorted(dots.tolist(), reverse=True)
    assert kth == dots[9]
    # Not full: only the candidates within the slack of the 10th
    s2, d2, kth2, m2 = kernels.rank(hot, _slots(200), qx, qy, qz, 0.0, -2.0, 10, 1e-14, False)
    assert kth2 == kth and m2 == 200 and sorted(s2.tolist()) == sorted(slots[:10].tolist())
