"""In-memory, H3-bucketed supply index: fast location updates and exact k-nearest search.

Pure Python + numpy + h3, no Django. Memory layout (a million providers in ~270 MB RSS):

* one integer slot per provider; per-provider fields live in array.array columns indexed by slot;
* per cell, per category, a bucket = array('d') of [lng, lat, ets, slot code] entries.

Search data (position and the eligibility/freshness stamp ``ets``) is duplicated *inside* the
buckets on purpose: a query concatenates the raw bytes of the buckets it visits (``bytes.join``)
and runs a few vectorised numpy calls on the result, with no random access into million-entry
columns (which costs a cache miss per candidate and dominated latency in an earlier design).
A category-filtered search therefore touches only providers of that category in the visited cells.
"""

from __future__ import annotations

import math
import struct
import sys
import time
from array import array
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import msgpack
import numpy as np
from h3 import H3BaseException
from h3.api import basic_int as h3i

from matching.geo import EARTH_RADIUS_M, M_PER_DEG, haversine_m

__all__ = ["ProviderIndex", "ProviderState"]

try:  # the compiled function directly: h3's int API wraps it in an identity Python function
    from h3._cy import latlng_to_cell as _latlng_to_cell
except ImportError:  # pragma: no cover - other h3 builds
    _latlng_to_cell = h3i.latlng_to_cell
_grid_ring = h3i.grid_ring
_HALF_RAD = math.pi / 360.0  # degrees -> radians, halved (haversine works on half-angles)
_RAD = math.pi / 180.0

# Multiplier applied to the query cell's shortest edge before it is used in the ring bound below.
# The planar-hexagon argument is exact for a regular grid; H3 cells are slightly irregular and
# vary smoothly in size. Measured worst case (random cells in London and worldwide, res 7-10,
# rings 1-6) was true-distance / formula = 0.996, so 0.9 leaves a ~10% margin.
_EDGE_SAFETY = 0.9
# Pentagons (all placed in oceans by H3's design) break the hexagon argument; be very conservative.
_PENTAGON_SAFETY = 0.4
_VERSION = 1
# Bucket entries are 4 doubles: lng, lat, ets, _SLOT_BASE - slot. The slot code is always
# <= -1000, so it can never equal a longitude or latitude; _find also checks the position.
_SLOT_BASE = -1000.0
_pack_d = struct.Struct("=d").pack
# Bounded per-cell caches (cell geometry and the first few grid rings) used by nearest().
_CACHE_CELLS = 200_000
_CACHED_RINGS = 3
# Per-provider columns: array.array (typecode) rather than numpy, because the update path does
# scalar reads/writes, which cost ~40 ns on an array vs ~200 ns on a numpy array.
_COLUMNS = {
    "_lng": "d", "_lat": "d", "_rating": "d", "_acc": "d", "_ts": "d", "_cell": "q", "_capacity": "q",
    "_avail": "b",
}


def _equirect_eps(lat: float, dist_m: float) -> float:
    """Upper bound on |d'/d - 1| for the equirectangular distance d' used to pre-rank.

    d' = R * hypot(dlng * cos(lat_q), dlat). The only first-order error is using cos(lat_q) for
    the longitude term instead of the cosine at the other point: by the mean value theorem
    |cos(lat2)/cos(lat_q) - 1| <= tan(|lat_q| + |dlat|) * |dlat| with |dlat| <= d/R, and the square
    root halves it; the sin(x) ~ x terms are second order, covered by (d/R)^2. We use the
    un-halved first-order term, i.e. a 2x margin. Only used for |lat| <= 80 (see caller).
    """
    x = 1.1 * dist_m / EARTH_RADIUS_M
    return math.tan(min(math.radians(abs(lat)) + x, 1.55)) * x + x * x + 1e-12


class ProviderState(NamedTuple):
    """Immutable view of one provider; built on demand (the index itself stores columns)."""

    user: str
    lat: float
    lng: float
    available: bool
    categories: tuple[str, ...]
    capacity: int
    rating: float
    acceptance: float
    zones: tuple[str, ...]
    ts: float
    cell: str


def _find(data: array[float], code: float) -> int:
    """Start offset (in doubles) of the entry whose slot code is ``code``.

    bytes.find (memchr/memmem speed) on the raw buffer; array.index would box every element as a
    Python float first, which made in-cell updates ~3x slower."""
    raw = data.tobytes()
    key = _pack_d(code)
    i = raw.find(key)
    while i & 31 != 24:  # a match must be the 4th double of a 32-byte entry; else keep looking
        if i < 0:
            raise KeyError(code)
        i = raw.find(key, i + 1)
    return (i - 24) >> 3


def _grid_ring_safe(cell: int, r: int) -> list[int]:
    try:
        return _grid_ring(cell, r)
    except H3BaseException:  # pentagon distortion: fall back to the slow but always-valid path
        return list(set(h3i.grid_disk(cell, r)) - set(h3i.grid_disk(cell, r - 1)))


class ProviderIndex:
    """H3-indexed index of provider locations with exact k-nearest queries.

    Search bound (why the expanding-ring search is exact)
    -----------------------------------------------------
    Take a regular planar hexagon grid with edge e and the hexagon c0 holding the query point q,
    whose centre is c. The disk of rings 0..r around c0 is bounded, on each of its six sides, by
    ring-(r+1) cells whose centres all lie on a line at distance (r+1) * 1.5e from c (their centre
    spacing is sqrt(3)e and the line is a row of the lattice). The normal of that line points at a
    vertex of each such cell, so every point of the cell has a projection on the normal of at
    least (r+1) * 1.5e - e (the circumradius is e); its distance from c is at least that projection:
    (3r + 1) * e / 2. Every cell outside the disk lies in one of the six sextants, hence beyond one
    of these lines. By the triangle inequality every point outside the searched disk is at least

        bound(r) = (3r + 1) * e / 2 - dist(q, c)

    away from q. We use e = 0.9 * (shortest edge of c0) to absorb H3's cell irregularity and the
    sphere-vs-plane difference (see _EDGE_SAFETY; tests/matching/test_index.py checks the bound
    against true cell geometry). So once the exact k-th best candidate is closer than bound(r),
    no unsearched cell can improve the answer; once bound(r) >= radius_m every provider within the
    radius has been seen; and ``max_rings`` caps the work in empty areas.
    """

    def __init__(
        self,
        res: int = 9,
        stale_after_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        max_rings: int = 100,
        initial_capacity: int = 1024,
    ) -> None:
        if not 0 <= res <= 15:
            raise ValueError("res must be in 0..15")
        self.res = res
        self.stale_after_s = float(stale_after_s)
        self.clock = clock
        self.max_rings = max_rings
        self._slot: dict[str, int] = {}
        self._users: list[str | None] = []
        self._free: list[int] = []
        self._cats: list[tuple[str, ...]] = []
        self._zones: list[tuple[str, ...]] = []
        # cell -> category -> array('d') of [lng, lat, ets, slot code] entries: 32 bytes per entry
        # instead of pointers to boxed floats, one object per bucket, contiguous for bytes.join.
        self._buckets: dict[int, dict[str, array[float]]] = {}
        # Bucket entries per category: once a search has gathered all of them it can stop.
        self._cat_count: dict[str, int] = {}
        self._cat_intern: dict[Any, tuple[str, ...]] = {(): ()}
        self._zone_intern: dict[Any, tuple[str, ...]] = {(): ()}
        self._geom: dict[int, tuple[float, float, float]] = {}
        self._rings: dict[int, list[Any]] = {}
        self._alloc_columns(max(16, initial_capacity))

    # ------------------------------------------------------------------ storage
    def _alloc_columns(self, cap: int) -> None:
        self._cap_n = cap
        for name, code in _COLUMNS.items():
            setattr(self, name, array(code, bytes(array(code).itemsize * cap)))

    def _grow(self) -> None:
        extra = max(16, self._cap_n)
        for name in _COLUMNS:
            col = getattr(self, name)
            col.frombytes(bytes(col.itemsize * extra))
        self._cap_n += extra

    def _intern_cats(self, categories: Iterable[str]) -> tuple[str, ...]:
        if isinstance(categories, str):  # a bare string is one category, not its letters
            categories = (categories,)
        key = categories if isinstance(categories, (tuple, frozenset)) else tuple(categories)
        got = self._cat_intern.get(key)
        if got is None:
            got = tuple(sorted({sys.intern(str(c)) for c in key}))
            got = self._cat_intern.setdefault(got, got)
            self._cat_intern[key] = got
        return got

    def _intern_zones(self, zones: Iterable[str]) -> tuple[str, ...]:
        if isinstance(zones, str):
            zones = (zones,)
        key = zones if isinstance(zones, (tuple, frozenset)) else tuple(zones)
        got = self._zone_intern.get(key)
        if got is None:
            got = tuple(sorted({sys.intern(str(z)) for z in key}))
            got = self._zone_intern.setdefault(got, got)
            self._zone_intern[key] = got
        return got

    def _bucket_add(
        self, cell: int, cats: tuple[str, ...], slot: int, lng: float, lat: float, ets: float
    ) -> None:
        if not cats:
            return
        b = self._buckets.get(cell)
        if b is None:
            b = self._buckets[cell] = {}
        counts = self._cat_count
        entry = (lng, lat, ets, _SLOT_BASE - slot)
        for c in cats:
            counts[c] = counts.get(c, 0) + 1
            data = b.get(c)
            if data is None:
                b[c] = array("d", entry)
            else:
                data.extend(entry)

    def _bucket_remove(self, cell: int, cats: tuple[str, ...], slot: int) -> None:
        if not cats:
            return
        b = self._buckets[cell]
        counts = self._cat_count
        code = _SLOT_BASE - slot
        for c in cats:
            counts[c] -= 1
            data = b[c]
            last = len(data) - 4
            if last == 0:
                del b[c]
                continue
            j = _find(data, code)
            if j != last:  # swap-remove keeps the array dense without shifting
                data[j:j + 4] = data[last:]
            del data[last:]
        if not b:
            del self._buckets[cell]

    # ------------------------------------------------------------------ writes
    def update(
        self,
        user: str,
        lat: float,
        lng: float,
        available: bool,
        categories: Iterable[str] | None = None,
        capacity: int | None = None,
        rating: float | None = None,
        acceptance: float | None = None,
        zones: Iterable[str] | None = None,
        ts: float | None = None,
    ) -> str:
        """Insert or update a provider; returns its H3 cell (string) at ``self.res``.

        None for categories/capacity/rating/acceptance/zones keeps the previous value (or the
        default for a new provider: no categories, capacity 1, rating 0, acceptance 0, no zones).
        """
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):  # also rejects NaN
            raise ValueError(f"invalid coordinates lat={lat!r} lng={lng!r}")
        cell = _latlng_to_cell(lat, lng, self.res)
        t = self.clock() if ts is None else float(ts)
        avail = bool(available)
        slot = self._slot.get(user)
        if slot is None:
            if capacity is not None and capacity < 0:
                raise ValueError("capacity must be >= 0")
            if self._free:
                slot = self._free.pop()
                self._users[slot] = user
            else:
                slot = len(self._users)
                if slot >= self._cap_n:
                    self._grow()
                self._users.append(user)
                self._cats.append(())
                self._zones.append(())
            self._slot[user] = slot
            cats = self._intern_cats(categories) if categories is not None else ()
            self._cats[slot] = cats
            self._zones[slot] = self._intern_zones(zones) if zones is not None else ()
            cap = 1 if capacity is None else int(capacity)
            self._capacity[slot] = cap
            self._rating[slot] = 0.0 if rating is None else float(rating)
            self._acc[slot] = 0.0 if acceptance is None else float(acceptance)
            self._cell[slot] = cell
            ets = t if avail and cap > 0 else -math.inf
            self._bucket_add(cell, cats, slot, lng, lat, ets)
        else:
            if capacity is None:
                cap = self._capacity[slot]
            else:
                if capacity < 0:
                    raise ValueError("capacity must be >= 0")
                cap = int(capacity)
                self._capacity[slot] = cap
            ets = t if avail and cap > 0 else -math.inf
            old_cats = self._cats[slot]
            cats = old_cats if categories is None else self._intern_cats(categories)
            old_cell = self._cell[slot]
            if old_cell == cell and cats is old_cats:
                # Cheap path: same cell and categories -> overwrite the triples in place.
                if cats:
                    b = self._buckets[cell]
                    key = _pack_d(_SLOT_BASE - slot)
                    for c in cats:
                        data = b[c]
                        # Inlined _find (hot path): a raw byte search for the slot code.
                        i = data.tobytes().find(key)
                        j = (i - 24) >> 3 if i & 31 == 24 else _find(data, _SLOT_BASE - slot)
                        data[j] = lng
                        data[j + 1] = lat
                        data[j + 2] = ets
            else:
                self._bucket_remove(old_cell, old_cats, slot)
                self._bucket_add(cell, cats, slot, lng, lat, ets)
                self._cell[slot] = cell
                self._cats[slot] = cats
            if rating is not None:
                self._rating[slot] = rating
            if acceptance is not None:
                self._acc[slot] = acceptance
            if zones is not None:
                self._zones[slot] = self._intern_zones(zones)
        self._lng[slot] = lng
        self._lat[slot] = lat
        self._ts[slot] = t
        self._avail[slot] = 1 if avail else 0
        return f"{cell:x}"

    def remove(self, user: str) -> bool:
        """Forget a provider; returns False if it was not indexed."""
        slot = self._slot.pop(user, None)
        if slot is None:
            return False
        self._bucket_remove(self._cell[slot], self._cats[slot], slot)
        self._users[slot] = None
        self._cats[slot] = ()
        self._zones[slot] = ()
        self._avail[slot] = 0
        self._free.append(slot)
        return True

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, user: object) -> bool:
        return user in self._slot

    def _state(self, slot: int) -> ProviderState:
        return ProviderState(
            self._users[slot],  # type: ignore[arg-type]
            self._lat[slot], self._lng[slot], self._avail[slot] == 1, self._cats[slot], self._capacity[slot],
            self._rating[slot], self._acc[slot], self._zones[slot], self._ts[slot], f"{self._cell[slot]:x}",
        )

    def get(self, user: str) -> ProviderState | None:
        slot = self._slot.get(user)
        return None if slot is None else self._state(slot)

    def users(self) -> list[str]:
        return list(self._slot)

    def _cell_geom(self, cell: int) -> tuple[float, float, float]:
        """(centre lat, centre lng, half of the safety-scaled shortest edge in metres), cached."""
        g = self._geom.get(cell)
        if g is None:
            clat, clng = h3i.cell_to_latlng(cell)
            bnd = h3i.cell_to_boundary(cell)
            n = len(bnd)
            e = min(haversine_m(*bnd[i], *bnd[(i + 1) % n]) for i in range(n))
            safety = _PENTAGON_SAFETY if h3i.is_pentagon(cell) else _EDGE_SAFETY
            if len(self._geom) >= _CACHE_CELLS:  # bounded: a world-wide query pattern cannot leak
                self._geom.clear()
            g = self._geom[cell] = (clat, clng, 0.5 * safety * e)
        return g

    def _ring(self, cell: int, r: int) -> list[int]:
        """grid_ring with a small cache for the first rings (h3's ring call costs ~4 us)."""
        if r > _CACHED_RINGS:
            return _grid_ring_safe(cell, r)
        rings = self._rings.get(cell)
        if rings is None:
            if len(self._rings) >= _CACHE_CELLS:
                self._rings.clear()
            rings = self._rings[cell] = [None] * (_CACHED_RINGS + 1)
        ring = rings[r]
        if ring is None:
            ring = rings[r] = _grid_ring_safe(cell, r)
        return ring

    def nearest(
        self,
        lat: float,
        lng: float,
        category: str,
        k: int = 10,
        radius_m: float | None = None,
        accept: Callable[[ProviderState], bool] | None = None,
        now: float | None = None,
    ) -> list[tuple[float, ProviderState]]:
        """The k nearest eligible providers as (distance_m, state), best first.

        Eligible: available, capacity > 0, serves ``category``, updated within stale_after_s of
        ``now`` and ``accept(state)`` is true. Order: (distance, -rating, -acceptance, user).
        Exact within min(radius_m, the distance covered by ``max_rings`` rings).
        """
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):
            raise ValueError(f"invalid coordinates lat={lat!r} lng={lng!r}")
        total = self._cat_count.get(category, 0)
        if k <= 0 or total == 0:
            return []
        if radius_m is not None and not radius_m >= 0:
            return []
        min_ts = (self.clock() if now is None else now) - self.stale_after_s
        cell0 = _latlng_to_cell(lat, lng, self.res)
        clat, clng, half_e = self._cell_geom(cell0)
        d0 = haversine_m(lat, lng, clat, clng)
        max_r = self.max_rings
        if radius_m is not None:
            # Smallest r with bound(r) >= radius_m: beyond it nothing can be within the radius.
            need = math.ceil(((radius_m + d0) / half_e - 1.0) / 3.0)
            max_r = min(max_r, max(0, need))
        buckets = self._buckets
        parts: list[array[float]] = []
        count = 0  # gathered doubles: 4 per candidate
        total *= 4
        k4 = 4 * k
        # Rough share of the searched disk lying within the bound (uniform density), used only to
        # decide when an evaluation is worth its cost; correctness never depends on it.
        cell_area = 2.598 * (half_e * 2.0 / _EDGE_SAFETY) ** 2
        memo: dict[int, bool] = {}
        # When to re-evaluate after a failed evaluation (heuristics only - the final ring is always
        # evaluated): hint[0] is a distance the bound must exceed first (the k-th found so far
        # can only improve), need_count means "wait for new candidates".
        hint = [0.0]
        need_count = -1
        evaluated = False
        ring = self._ring
        for r in range(max_r + 1):
            for c in ring(cell0, r) if r else (cell0,):
                b = buckets.get(c)
                if b is not None:
                    e = b.get(category)
                    if e is not None:
                        parts.append(e)
                        count += len(e)
            bound = (3 * r + 1) * half_e - d0
            # Also final once every provider of the category has been gathered (sparse supply).
            final = r == max_r or count >= total or (radius_m is not None and bound >= radius_m)
            if not final:
                if count < k4 or count <= need_count or bound <= hint[0]:
                    continue
                if not evaluated and r <= 2:
                    share = math.pi * bound * bound / ((3 * r * r + 3 * r + 1) * cell_area)
                    if count * share < k4:
                        continue
            evaluated = True
            if count == 0:
                res: list[tuple[float, ProviderState]] | None = []
            else:
                res = self._evaluate(
                    lat, lng, parts, k, bound, final, radius_m, accept, min_ts, memo, hint
                )
            if res is not None and (res or final):
                return res
            if hint[0] < bound:  # failed for lack of candidates, not for lack of search radius
                need_count = count
        return []  # unreachable: the last ring is always final

    def _evaluate(
        self,
        lat: float,
        lng: float,
        parts: list[array[float]],
        k: int,
        bound: float,
        final: bool,
        radius_m: float | None,
        accept: Callable[[ProviderState], bool] | None,
        min_ts: float,
        memo: dict[int, bool],
        hint: list[float],
    ) -> list[tuple[float, ProviderState]] | None:
        """Rank gathered candidates; None means "not provably complete yet, search further".

        Candidates are first ranked with a cheap equirectangular distance d' (a few numpy calls),
        whose relative error against the true great-circle distance is at most ``eps`` (see
        _equirect_eps); every candidate that could be in the true top k is kept by widening the
        cut by (1 + eps) / (1 - eps). Survivors are ranked with exact haversine, and the stop test
        compares the *exact* k-th distance with the conservative ring bound.
        """
        rows = np.frombuffer(b"".join(parts), dtype=np.float64).reshape(-1, 4)
        ets = rows[:, 2]
        if ets.min() < min_ts:  # drop unavailable / zero-capacity / stale providers
            rows = rows[ets >= min_ts]
            if rows.shape[0] == 0:
                return [] if final else None
        if abs(lat) > 80.0 or abs(lng) > 170.0:
            # Near a pole or the antimeridian (longitude wrap) the planar pre-rank is not valid.
            return self._evaluate_exact(lat, lng, rows, k, bound, final, radius_m, accept, memo, hint)
        dx = rows[:, 0] - lng
        dx *= math.cos(lat * _RAD)
        approx = np.hypot(dx, rows[:, 1] - lat)  # in degrees of arc; scaled to metres as scalars
        n = approx.size
        kth = (float(np.partition(approx, k - 1)[k - 1]) if n > k else float(approx.max())) * M_PER_DEG
        if radius_m is not None:
            kth = min(kth, radius_m)
        eps = _equirect_eps(lat, max(kth, 0.0 if final else bound))
        if eps > 0.05:  # continental distances: the planar pre-rank is useless
            return self._evaluate_exact(lat, lng, rows, k, bound, final, radius_m, accept, memo, hint)
        widen = (1.0 + eps) / (1.0 - eps)
        if accept is None:
            if not final and (n < k or kth * (1.0 - eps) >= bound):
                hint[0] = kth * (1.0 - eps)
                return None  # even optimistically the k-th is not provably final
            if n > k:
                rows = rows[approx <= (kth * widen + 1e-6) / M_PER_DEG]
            slots = [int(_SLOT_BASE - c) for c in rows[:, 3].tolist()]
            keyed = self._exact(lat, lng, rows[:, 0].tolist(), rows[:, 1].tolist(), slots, radius_m)
            return self._finish(keyed, k, bound, final, hint)
        approx *= M_PER_DEG
        slots_arr = (_SLOT_BASE - rows[:, 3]).astype(np.int64)
        order = np.argsort(approx, kind="stable")
        ap = approx[order].tolist()
        olist = slots_arr[order].tolist()
        lngs = rows[order, 0].tolist()
        lats = rows[order, 1].tolist()
        chosen: list[int] = []
        cut = math.inf if radius_m is None else radius_m * (1.0 + eps) + 1e-6
        limit = math.inf if final else bound * (1.0 + eps) + 1e-6
        for i, d_apx in enumerate(ap):
            if d_apx > cut:
                break
            if d_apx > limit:
                hint[0] = d_apx * (1.0 - eps)  # this candidate becomes decidable past that bound
                break
            slot = olist[i]
            ok = memo.get(slot)
            if ok is None:
                ok = memo[slot] = bool(accept(self._state(slot)))
            if ok:
                chosen.append(i)
                if len(chosen) == k:
                    cut = min(cut, d_apx * widen + 1e-6)
        if len(chosen) < k and not final:
            return None
        keyed = self._exact(
            lat, lng, [lngs[i] for i in chosen], [lats[i] for i in chosen], [olist[i] for i in chosen],
            radius_m,
        )
        return self._finish(keyed, k, bound, final, hint)

    def _evaluate_exact(
        self,
        lat: float,
        lng: float,
        rows: np.ndarray,
        k: int,
        bound: float,
        final: bool,
        radius_m: float | None,
        accept: Callable[[ProviderState], bool] | None,
        memo: dict[int, bool],
        hint: list[float],
    ) -> list[tuple[float, ProviderState]] | None:
        """Fallback for extreme latitudes/distances: exact haversine for every candidate."""
        plng = rows[:, 0]
        plat = rows[:, 1]
        s1 = np.sin((plat - lat) * _HALF_RAD)
        s2 = np.sin((plng - lng) * _HALF_RAD)
        a = s1 * s1 + (math.cos(lat * _RAD) * np.cos(plat * _RAD)) * (s2 * s2)
        dist = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))
        order = np.argsort(dist, kind="stable")
        olist = (_SLOT_BASE - rows[order, 3]).astype(np.int64).tolist()
        lngs = plng[order].tolist()
        lats = plat[order].tolist()
        chosen: list[int] = []
        cut = math.inf if radius_m is None else radius_m * (1.0 + 1e-9) + 1e-6
        for i, d in enumerate(dist[order].tolist()):
            if d > cut:
                break
            if accept is not None:
                slot = olist[i]
                ok = memo.get(slot)
                if ok is None:
                    ok = memo[slot] = bool(accept(self._state(slot)))
                if not ok:
                    continue
            chosen.append(i)
            if len(chosen) == k:
                cut = min(cut, d * (1.0 + 1e-9) + 1e-6)
        if len(chosen) < k and not final:
            return None
        keyed = self._exact(
            lat, lng, [lngs[i] for i in chosen], [lats[i] for i in chosen], [olist[i] for i in chosen],
            radius_m,
        )
        return self._finish(keyed, k, bound, final, hint)

    def _exact(
        self,
        lat: float,
        lng: float,
        lngs: list[float],
        lats: list[float],
        slots: list[int],
        radius_m: float | None,
    ) -> list[tuple[Any, ...]]:
        """Exact sort keys (math haversine, identical to geo.haversine_m), best first.

        Each key is (distance, -rating, -acceptance, user, slot)."""
        users = self._users
        rating = self._rating
        acc = self._acc
        keyed = []
        # Inlined geo.haversine_m with the query-side terms hoisted; the operation order is
        # kept identical so distances are bit-for-bit equal to haversine_m's.
        sin = math.sin
        p1 = lat * _RAD
        c1 = math.cos(p1)
        cos = math.cos
        asin = math.asin
        sqrt = math.sqrt
        two_r = 2.0 * EARTH_RADIUS_M
        for i, slot in enumerate(slots):
            p2 = lats[i] * _RAD
            s_dp = sin((p2 - p1) * 0.5)
            s_dl = sin((lngs[i] - lng) * _RAD * 0.5)
            a = s_dp * s_dp + c1 * cos(p2) * s_dl * s_dl
            d = two_r * asin(sqrt(a if a < 1.0 else 1.0))
            if radius_m is not None and d > radius_m:
                continue
            keyed.append((d, -rating[slot], -acc[slot], users[slot], slot))
        keyed.sort()
        return keyed

    def _finish(
        self,
        keyed: list[tuple[Any, ...]],
        k: int,
        bound: float,
        final: bool,
        hint: list[float],
    ) -> list[tuple[float, ProviderState]] | None:
        if not final and (len(keyed) < k or keyed[k - 1][0] >= bound):
            if len(keyed) >= k:
                hint[0] = keyed[k - 1][0]
            return None  # an unsearched cell could still hold something at least as good
        state = self._state
        return [(t[0], state(t[4])) for t in keyed[:k]]

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> bytes:
        """Serialise all providers (msgpack, columnar) for a fast restart."""
        slots = np.fromiter(self._slot.values(), dtype=np.int64, count=len(self._slot))
        slot_list = slots.tolist()
        cat_table: dict[tuple[str, ...], int] = {}
        zone_table: dict[tuple[str, ...], int] = {}
        cat_ids = np.array([cat_table.setdefault(self._cats[s], len(cat_table)) for s in slot_list],
                           dtype=np.int32)
        zone_ids = np.array([zone_table.setdefault(self._zones[s], len(zone_table)) for s in slot_list],
                            dtype=np.int32)
        def col(name: str, dtype: Any) -> bytes:
            # Temporary numpy view of the array column (released before returning).
            return np.frombuffer(getattr(self, name), dtype=dtype)[slots].tobytes()

        payload = {
            "v": _VERSION,
            "res": self.res,
            "stale_after_s": self.stale_after_s,
            "users": list(self._slot.keys()),
            "lat": col("_lat", np.float64),
            "lng": col("_lng", np.float64),
            "rating": col("_rating", np.float64),
            "acc": col("_acc", np.float64),
            "ts": col("_ts", np.float64),
            "capacity": col("_capacity", np.int64),
            "avail": col("_avail", np.int8),
            "cell": col("_cell", np.int64),
            "cat_table": [list(t) for t in cat_table],
            "cats": cat_ids.tobytes(),
            "zone_table": [list(t) for t in zone_table],
            "zones": zone_ids.tobytes(),
        }
        return msgpack.packb(payload, use_bin_type=True)

    @classmethod
    def restore(
        cls,
        data: bytes,
        clock: Callable[[], float] = time.time,
        stale_after_s: float | None = None,
        res: int | None = None,
        max_rings: int = 100,
    ) -> ProviderIndex:
        """Rebuild an index from :meth:`snapshot` output (cells are recomputed if res differs)."""
        p = msgpack.unpackb(data, raw=False)
        if not isinstance(p, dict) or p.get("v") != _VERSION:
            raise ValueError("unsupported or corrupt provider-index snapshot")
        snap_res = int(p["res"])
        res = snap_res if res is None else res
        users: list[str] = p["users"]
        n = len(users)
        idx = cls(
            res=res,
            stale_after_s=p["stale_after_s"] if stale_after_s is None else stale_after_s,
            clock=clock,
            max_rings=max_rings,
            initial_capacity=16,
        )
        for name, key in (("_lat", "lat"), ("_lng", "lng"), ("_rating", "rating"), ("_acc", "acc"),
                          ("_ts", "ts"), ("_capacity", "capacity"), ("_avail", "avail"), ("_cell", "cell")):
            setattr(idx, name, array(_COLUMNS[name], p[key]))
        idx._cap_n = n
        lat = np.frombuffer(p["lat"], dtype=np.float64)
        lng = np.frombuffer(p["lng"], dtype=np.float64)
        ts = np.frombuffer(p["ts"], dtype=np.float64)
        cap = np.frombuffer(p["capacity"], dtype=np.int64)
        avail = np.frombuffer(p["avail"], dtype=np.int8) == 1
        if res != snap_res:
            l2c = _latlng_to_cell
            idx._cell = array("q", [l2c(a, b, res) for a, b in zip(lat.tolist(), lng.tolist(), strict=True)])
        cat_table = [idx._intern_cats(t) for t in p["cat_table"]]
        zone_table = [idx._intern_zones(t) for t in p["zone_table"]]
        cats = [cat_table[i] for i in np.frombuffer(p["cats"], dtype=np.int32).tolist()]
        idx._cats = cats
        idx._zones = [zone_table[i] for i in np.frombuffer(p["zones"], dtype=np.int32).tolist()]
        idx._users = list(users)
        # One int object per slot, shared by the user map (saves memory).
        slot_objs = list(range(n))
        idx._slot = dict(zip(users, slot_objs, strict=True))
        ets = np.where(avail & (cap > 0), ts, -np.inf).tolist()
        add = idx._bucket_add
        for slot, cell, a, b, e in zip(
            slot_objs, idx._cell, lng.tolist(), lat.tolist(), ets, strict=True
        ):
            add(cell, cats[slot], slot, a, b, e)
        return idx
