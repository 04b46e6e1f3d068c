"""Compiled inner loops of the provider index (numba, nopython mode; no Django, no Python objects).

One call replaces a dozen small numpy calls per query: on a few hundred candidates their fixed
costs, not the arithmetic, were most of a query's time. ``cache=True`` keeps the machine code in
``__pycache__``, so only the first process on a machine pays the compile (about ten seconds;
``make install`` does it); ``warm_up()`` pays it at start-up instead of on the first query.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from matching.geo import EARTH_RADIUS_M


@njit(cache=True, nogil=True)
def rank(
    hot: np.ndarray,
    slots: np.ndarray,
    qx: float,
    qy: float,
    qz: float,
    min_ts: float,
    floor: float,
    k: int,
    slack: float,
    full: bool,
) -> tuple[np.ndarray, np.ndarray, float, int]:  # pragma: no cover - compiled
    """Rank candidate slots by the dot product of their unit vector with q (larger = nearer).

    ``hot`` rows are (x, y, z, ets); a candidate counts when ets >= min_ts and dot >= floor.
    Returns (slots, dots, kth, m): m candidates counted, kth the k-th largest dot among them
    (the smallest if m < k). With ``full`` every counted candidate is returned, nearest first;
    otherwise only those within ``slack`` of the k-th (in no particular order).
    """
    n = slots.size
    d = np.empty(n)
    s = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        j = slots[i]
        if hot[j, 3] >= min_ts:
            v = hot[j, 0] * qx + hot[j, 1] * qy + hot[j, 2] * qz
            if v >= floor:
                d[m] = v
                s[m] = j
                m += 1
    d = d[:m]
    s = s[:m]
    if m == 0:
        return s, d, -2.0, 0
    if full or m <= k:
        order = np.argsort(-d, kind="mergesort")
        return s[order], d[order], d[order[min(k, m) - 1]], m
    kth = -np.partition(-d, k - 1)[k - 1]
    keep = d >= kth - slack
    return s[keep], d[keep], kth, m


@njit(cache=True, nogil=True)
def nearest_rows(
    hot: np.ndarray,
    rec: np.ndarray,
    slots: np.ndarray,
    lat: float,
    lng: float,
    qx: float,
    qy: float,
    qz: float,
    min_ts: float,
    floor: float,
    k: int,
    slack: float,
    radius: float,
) -> tuple[np.ndarray, np.ndarray, float, int, bool]:  # pragma: no cover - compiled
    """rank() for a search without a predicate, then the exact distances of the survivors.

    ``rec`` rows are the float view of the provider records (lat, lng, ts, rating, acc, ...).
    Distances use geo.haversine_m's formula with its exact operation order (IEEE, no fast-math
    and no contraction, so the results are bit-for-bit the same). Survivors farther than
    ``radius`` are dropped; the rest are sorted by (distance, -rating, -acceptance). Returns
    (slots, distances, kth, m, tie): kth and m as for rank(), tie when two consecutive results
    share all three keys (the caller then breaks the tie by user id).
    """
    s, _d, kth, m = rank(hot, slots, qx, qy, qz, min_ts, floor, k, slack, False)
    n = s.size
    dist = np.empty(n)
    key1 = np.empty(n)
    key2 = np.empty(n)
    rad = math.pi / 180.0
    p1 = lat * rad
    c1 = math.cos(p1)
    two_r = 2.0 * EARTH_RADIUS_M
    w = 0
    for i in range(n):
        j = s[i]
        p2 = rec[j, 0] * rad
        s_dp = math.sin((p2 - p1) * 0.5)
        s_dl = math.sin((rec[j, 1] - lng) * rad * 0.5)
        a = s_dp * s_dp + c1 * math.cos(p2) * s_dl * s_dl
        d = two_r * math.asin(math.sqrt(min(1.0, a)))
        if d > radius:
            continue
        # insertion sort by (d, -rating, -acc): n is about k
        r1 = -rec[j, 3]
        r2 = -rec[j, 4]
        p = w
        while p > 0 and (
            dist[p - 1] > d or (dist[p - 1] == d and (key1[p - 1] > r1 or (key1[p - 1] == r1 and key2[p - 1] > r2)))
        ):
            dist[p] = dist[p - 1]
            key1[p] = key1[p - 1]
            key2[p] = key2[p - 1]
            s[p] = s[p - 1]
            p -= 1
        dist[p] = d
        key1[p] = r1
        key2[p] = r2
        s[p] = j
        w += 1
    tie = False
    for i in range(1, w):
        if dist[i] == dist[i - 1] and key1[i] == key1[i - 1] and key2[i] == key2[i - 1]:
            tie = True
    return s[:w], dist[:w], kth, m, tie


def warm_up() -> None:
    """Compile (or load from the cache) the kernels for the argument types the index uses."""
    hot = np.zeros((2, 4))
    slots = np.frombuffer(np.zeros(2, np.int64).tobytes(), dtype=np.int64)  # read-only, as in use
    rank(hot, slots, 0.0, 0.0, 1.0, 0.0, -2.0, 1, 1e-14, False)
    rank(hot, slots, 0.0, 0.0, 1.0, 0.0, -2.0, 1, 1e-14, True)
    nearest_rows(hot, np.zeros((2, 7)), slots, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -2.0, 1, 1e-14, math.inf)
