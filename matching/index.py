"""In-memory, H3-bucketed supply index: fast location updates and exact k-nearest search.

Pure Python + numpy + h3, no Django. Memory layout (a million providers in ~230 MB RSS):

* one integer slot per provider; its numeric fields live in one fixed-size 72-byte record of a
  flat ``bytearray`` (see _REC: lat, lng, ets, ts, slot, rating, acceptance, capacity, cell),
  read and written with precompiled ``struct`` calls - one C call per read/write of a group of
  fields, and one or two cache lines per provider instead of one per column;
* per category, per H3 cell, a bucket = array('q') of slots (8 bytes per entry).

A location update that stays in its cell (the common case) only rewrites the first five fields
of the record: no bucket work at all. Buckets change only when the cell or the categories change.

A query concatenates the raw bytes of the slot buckets it visits (``bytes.join``) and gathers the
matching records with one ``ndarray.take`` on a float64 view of the record buffer (C-level random
access, so the cache misses overlap), then runs a few vectorised numpy calls on the result.
``ets`` (eligibility/freshness stamp) is ts when available and capacity > 0, else -inf, so
eligibility is one comparison. A category-filtered search touches only providers of that category.
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
_NEG_INF = -math.inf

# Multiplier applied to the query cell's shortest edge before it is used in the ring bound below.
# The planar-hexagon argument is exact for a regular grid; H3 cells are slightly irregular and
# vary smoothly in size. Measured worst case (random cells in London and worldwide, res 7-10,
# rings 1-6) was true-distance / formula = 0.996, so 0.9 leaves a ~10% margin.
_EDGE_SAFETY = 0.9
# Pentagons (all placed in oceans by H3's design) break the hexagon argument; be very conservative.
_PENTAGON_SAFETY = 0.4
_VERSION = 1
# Bounded per-cell caches (cell geometry and the first few grid rings) used by nearest().
_CACHE_CELLS = 200_000
_CACHED_RINGS = 3

# Per-provider record: 9 eight-byte fields, native byte order, no padding (so a float64 view of
# the buffer reshaped to (-1, 9) addresses the float fields directly).
# The slot is stored (as a float, exact below 2**53) so that gathered rows carry it along.
# ``capf`` is the capacity when the provider is available, else ~capacity (= -capacity - 1):
# availability costs no extra field.
_REC = struct.Struct("=dddddddqq")  # lat, lng, ets, ts, slot, rating, acc, capf, cell
_REC_SIZE = _REC.size  # 72
_NFIELDS = _REC_SIZE // 8
_F_LAT, _F_LNG, _F_ETS, _F_TS, _F_SLOT, _F_RATING, _F_ACC, _F_CAP, _F_CELL = range(_NFIELDS)
_POS = struct.Struct("=dddd")  # lat, lng, ets, ts: everything an in-cell ping changes
_CAP_CELL = struct.Struct("=qq")  # capf, cell
_OFF_CAP = 8 * _F_CAP
_OFF_CELL = 8 * _F_CELL
_Q = struct.Struct("=q")
_REC_DTYPE = np.dtype([
    ("lat", "=f8"), ("lng", "=f8"), ("ets", "=f8"), ("ts", "=f8"), ("slot", "=f8"),
    ("rating", "=f8"), ("acc", "=f8"), ("capf", "=i8"), ("cell", "=i8"),
])
assert _REC_DTYPE.itemsize == _REC_SIZE


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
    """Immutable view of one provider; built on demand (the index itself stores records)."""

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


# tuple.__new__ on the class skips the generated Python-level __new__ (about 2x faster).
_new_state: Callable[[type, tuple[Any, ...]], ProviderState] = tuple.__new__  # type: ignore[assignment]


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
        # category -> cell -> array('q') of slots (unordered; swap-free append/remove).
        self._buckets: dict[str, dict[int, array[int]]] = {}
        # Bucket entries per category: once a search has gathered all of them it can stop.
        self._cat_count: dict[str, int] = {}
        self._cat_intern: dict[Any, tuple[str, ...]] = {(): ()}
        self._zone_intern: dict[Any, tuple[str, ...]] = {(): ()}
        self._geom: dict[int, tuple[float, float, float]] = {}
        self._rings: dict[int, list[list[int] | None]] = {}
        cap = max(16, initial_capacity)
        self._cap_n = cap
        self._rec = bytearray(_REC_SIZE * cap)
        # float64 (cap_n, 9) view of _rec, created lazily and dropped whenever _rec is replaced.
        self._view: np.ndarray | None = None

    # ------------------------------------------------------------------ storage
    def _grow(self) -> None:
        extra = max(16, self._cap_n)
        # A new buffer rather than an in-place resize: a live numpy view (e.g. held by a nearest()
        # whose accept callback updates the index) would make bytearray resizing fail.
        self._view = None
        self._rec = self._rec + bytes(_REC_SIZE * extra)
        self._cap_n += extra

    def _records(self) -> np.ndarray:
        v = self._view
        if v is None:
            v = self._view = np.frombuffer(self._rec, dtype=np.float64).reshape(-1, _NFIELDS)
        return v

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

    def _bucket_add(self, cell: int, cats: tuple[str, ...], slot: int) -> None:
        buckets = self._buckets
        counts = self._cat_count
        for c in cats:
            counts[c] = counts.get(c, 0) + 1
            cb = buckets.get(c)
            if cb is None:
                cb = buckets[c] = {}
            target = cb.get(cell)
            if target is None:
                cb[cell] = array("q", (slot,))
            else:
                target.append(slot)

    def _bucket_remove(self, cell: int, cats: tuple[str, ...], slot: int) -> None:
        buckets = self._buckets
        counts = self._cat_count
        for c in cats:
            counts[c] -= 1
            cb = buckets[c]
            data = cb[cell]
            if len(data) == 1:
                del cb[cell]
            else:
                data.remove(slot)

    def _move(self, slot: int, old_cell: int, cell: int) -> None:
        """Same categories, new cell: move the slot between buckets."""
        buckets = self._buckets
        for c in self._cats[slot]:
            cb = buckets[c]
            data = cb[old_cell]
            if len(data) == 1:
                del cb[old_cell]
            else:
                data.remove(slot)
            target = cb.get(cell)
            if target is None:
                cb[cell] = array("q", (slot,))
            else:
                target.append(slot)
        _Q.pack_into(self._rec, slot * _REC_SIZE + _OFF_CELL, cell)

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
        slot = self._slot.get(user)
        if (
            slot is not None and categories is None and capacity is None and rating is None
            and acceptance is None and zones is None
        ):
            # Hot path (a location ping): one read of (capacity, cell), one write of the position
            # fields; buckets are only touched when the cell changes.
            rec = self._rec
            off = slot * _REC_SIZE
            capf, old_cell = _CAP_CELL.unpack_from(rec, off + _OFF_CAP)
            if available:
                if capf < 0:  # becomes available
                    capf = ~capf
                    _Q.pack_into(rec, off + _OFF_CAP, capf)
                _POS.pack_into(rec, off, lat, lng, t if capf > 0 else _NEG_INF, t)
            else:
                if capf >= 0:
                    _Q.pack_into(rec, off + _OFF_CAP, ~capf)
                _POS.pack_into(rec, off, lat, lng, _NEG_INF, t)
            if old_cell != cell:
                self._move(slot, old_cell, cell)
            return f"{cell:x}"
        self._update_full(slot, user, lat, lng, cell, t, bool(available), categories, capacity, rating,
                          acceptance, zones)
        return f"{cell:x}"

    def _update_full(
        self,
        slot: int | None,
        user: str,
        lat: float,
        lng: float,
        cell: int,
        t: float,
        avail: bool,
        categories: Iterable[str] | None,
        capacity: int | None,
        rating: float | None,
        acceptance: float | None,
        zones: Iterable[str] | None,
    ) -> None:
        if capacity is not None and capacity < 0:
            raise ValueError("capacity must be >= 0")
        if slot is None:
            cats = self._intern_cats(categories) if categories is not None else ()
            zs = self._intern_zones(zones) if zones is not None else ()
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
            self._cats[slot] = cats
            self._zones[slot] = zs
            cap = 1 if capacity is None else int(capacity)
            rt = 0.0 if rating is None else float(rating)
            ac = 0.0 if acceptance is None else float(acceptance)
            self._bucket_add(cell, cats, slot)
        else:
            off = slot * _REC_SIZE
            (_, _, _, _, _, rt, ac, cap, old_cell) = _REC.unpack_from(self._rec, off)
            if cap < 0:
                cap = ~cap
            if capacity is not None:
                cap = int(capacity)
            if rating is not None:
                rt = rating
            if acceptance is not None:
                ac = acceptance
            old_cats = self._cats[slot]
            cats = old_cats if categories is None else self._intern_cats(categories)
            if old_cell != cell or cats is not old_cats:
                self._bucket_remove(old_cell, old_cats, slot)
                self._bucket_add(cell, cats, slot)
                self._cats[slot] = cats
            if zones is not None:
                self._zones[slot] = self._intern_zones(zones)
        ets = t if avail and cap > 0 else _NEG_INF
        _REC.pack_into(self._rec, slot * _REC_SIZE, lat, lng, ets, t, slot, rt, ac, cap if avail else ~cap, cell)

    def remove(self, user: str) -> bool:
        """Forget a provider; returns False if it was not indexed."""
        slot = self._slot.pop(user, None)
        if slot is None:
            return False
        off = slot * _REC_SIZE
        self._bucket_remove(_Q.unpack_from(self._rec, off + _OFF_CELL)[0], self._cats[slot], slot)
        self._users[slot] = None
        self._cats[slot] = ()
        self._zones[slot] = ()
        self._rec[off:off + _REC_SIZE] = bytes(_REC_SIZE)
        self._free.append(slot)
        return True

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, user: object) -> bool:
        return user in self._slot

    def _state(self, slot: int) -> ProviderState:
        lat, lng, _ets, ts, _slot, rating, acc, capf, cell = _REC.unpack_from(self._rec, slot * _REC_SIZE)
        return _new_state(ProviderState, (
            self._users[slot], lat, lng, capf >= 0, self._cats[slot], capf if capf >= 0 else ~capf,
            rating, acc, self._zones[slot], ts, f"{cell:x}",
        ))

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
        g = self._geom.get(cell0)
        clat, clng, half_e = self._cell_geom(cell0) if g is None else g
        d0 = haversine_m(lat, lng, clat, clng)
        max_r = self.max_rings
        if radius_m is not None:
            # Smallest r with bound(r) >= radius_m: beyond it nothing can be within the radius.
            need = math.ceil(((radius_m + d0) / half_e - 1.0) / 3.0)
            max_r = min(max_r, max(0, need))
        get = self._buckets[category].get
        parts: list[array[int]] = []
        count = 0  # gathered candidates
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
        rings = self._rings.get(cell0)
        for r in range(max_r + 1):
            if r == 0:
                e = get(cell0)
                if e is not None:
                    parts.append(e)
                    count += len(e)
            else:
                ring = rings[r] if rings is not None and r <= _CACHED_RINGS else None
                if ring is None:
                    ring = self._ring(cell0, r)
                    rings = self._rings.get(cell0)
                for e in map(get, ring):
                    if e is not None:
                        parts.append(e)
                        count += len(e)
            bound = (3 * r + 1) * half_e - d0
            # Also final once every provider of the category has been gathered (sparse supply).
            final = r == max_r or count >= total or (radius_m is not None and bound >= radius_m)
            if not final:
                if count < k or count <= need_count or bound <= hint[0]:
                    continue
                if not evaluated and r <= 2:
                    share = math.pi * bound * bound / ((3 * r * r + 3 * r + 1) * cell_area)
                    if count * share < k:
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
        parts: list[array[int]],
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
        v = self._view
        if v is None:
            v = self._records()
        # One C-level gather of the candidates' records (each row carries its own slot).
        rows = v.take(np.frombuffer(b"".join(parts), dtype=np.int64), axis=0)
        ets = rows[:, _F_ETS]
        if ets.min() < min_ts:  # drop unavailable / zero-capacity / stale providers
            rows = rows[ets >= min_ts]
            if rows.shape[0] == 0:
                return [] if final else None
        if abs(lat) > 80.0 or abs(lng) > 170.0:
            # Near a pole or the antimeridian (longitude wrap) the planar pre-rank is not valid.
            return self._evaluate_exact(lat, lng, rows, k, bound, final, radius_m, accept, memo, hint)
        c = math.cos(lat * _RAD)
        d = rows[:, :2] - (lat, lng)
        d *= d
        # Squared equirectangular distance in degrees^2 (monotone in d', so ranks are the same).
        approx2 = d @ (1.0, c * c)
        n = approx2.size
        kth = math.sqrt(float(np.partition(approx2, k - 1)[k - 1] if n > k else approx2.max())) * M_PER_DEG
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
                cut = (kth * widen + 1e-6) / M_PER_DEG
                rows = rows[approx2 <= cut * cut]
            return self._finish(self._exact(lat, lng, rows.tolist(), radius_m), k, bound, final, hint)
        approx = np.sqrt(approx2)
        approx *= M_PER_DEG
        order = np.argsort(approx, kind="stable")
        ap = approx[order].tolist()
        olist = rows[order, _F_SLOT].tolist()
        chosen: list[int] = []
        cut = math.inf if radius_m is None else radius_m * (1.0 + eps) + 1e-6
        limit = math.inf if final else bound * (1.0 + eps) + 1e-6
        for i, d_apx in enumerate(ap):
            if d_apx > cut:
                break
            if d_apx > limit:
                hint[0] = d_apx * (1.0 - eps)  # this candidate becomes decidable past that bound
                break
            slot = int(olist[i])
            ok = memo.get(slot)
            if ok is None:
                ok = memo[slot] = bool(accept(self._state(slot)))
            if ok:
                chosen.append(i)
                if len(chosen) == k:
                    cut = min(cut, d_apx * widen + 1e-6)
        if len(chosen) < k and not final:
            return None
        keyed = self._exact(lat, lng, rows[order[chosen]].tolist(), radius_m)
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
        plng = rows[:, _F_LNG]
        plat = rows[:, _F_LAT]
        s1 = np.sin((plat - lat) * _HALF_RAD)
        s2 = np.sin((plng - lng) * _HALF_RAD)
        a = s1 * s1 + (math.cos(lat * _RAD) * np.cos(plat * _RAD)) * (s2 * s2)
        dist = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))
        order = np.argsort(dist, kind="stable")
        olist = rows[order, _F_SLOT].tolist()
        chosen: list[int] = []
        cut = math.inf if radius_m is None else radius_m * (1.0 + 1e-9) + 1e-6
        for i, d in enumerate(dist[order].tolist()):
            if d > cut:
                break
            if accept is not None:
                slot = int(olist[i])
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
        keyed = self._exact(lat, lng, rows[order[chosen]].tolist(), radius_m)
        return self._finish(keyed, k, bound, final, hint)

    def _exact(
        self, lat: float, lng: float, rows: list[list[float]], radius_m: float | None
    ) -> list[tuple[float, float, float, str, int]]:
        """Exact sort keys (math haversine, identical to geo.haversine_m), best first.

        ``rows`` are record rows as read through the float64 view (see _REC).
        Each key is (distance, -rating, -acceptance, user, slot)."""
        users = self._users
        keyed: list[tuple[float, float, float, str, int]] = []
        # Inlined geo.haversine_m with the query-side terms hoisted; the operation order is
        # kept identical so distances are bit-for-bit equal to haversine_m's.
        sin = math.sin
        p1 = lat * _RAD
        c1 = math.cos(p1)
        cos = math.cos
        asin = math.asin
        sqrt = math.sqrt
        two_r = 2.0 * EARTH_RADIUS_M
        lim = math.inf if radius_m is None else radius_m
        for row in rows:
            p2 = row[0] * _RAD
            s_dp = sin((p2 - p1) * 0.5)
            s_dl = sin((row[1] - lng) * _RAD * 0.5)
            a = s_dp * s_dp + c1 * cos(p2) * s_dl * s_dl
            d = two_r * asin(sqrt(a if a < 1.0 else 1.0))
            if d > lim:
                continue
            slot = int(row[4])  # _F_SLOT
            keyed.append((d, -row[5], -row[6], users[slot], slot))  # type: ignore[arg-type]
        keyed.sort()
        return keyed

    def _finish(
        self,
        keyed: list[tuple[float, float, float, str, int]],
        k: int,
        bound: float,
        final: bool,
        hint: list[float],
    ) -> list[tuple[float, ProviderState]] | None:
        if not final and (len(keyed) < k or keyed[k - 1][0] >= bound):
            if len(keyed) >= k:
                hint[0] = keyed[k - 1][0]
            return None  # an unsearched cell could still hold something at least as good
        # ProviderState for the final k only (inlined _state: this runs k times per query).
        rec = self._rec
        cats = self._cats
        zones = self._zones
        unpack = _REC.unpack_from
        new = _new_state
        out = []
        for d, _r, _a, user, slot in keyed[:k]:
            lat, lng, _ets, ts, _slot, rating, acc, capf, cell = unpack(rec, slot * _REC_SIZE)
            out.append((d, new(ProviderState, (
                user, lat, lng, capf >= 0, cats[slot], capf if capf >= 0 else ~capf,
                rating, acc, zones[slot], ts, f"{cell:x}",
            ))))
        return out

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
        recs = np.frombuffer(self._rec, dtype=_REC_DTYPE)[slots]  # a copy: releases the buffer
        capf = recs["capf"]
        capacity = np.where(capf >= 0, capf, ~capf).astype(np.int64)

        def col(name: str, dtype: Any) -> bytes:
            return np.ascontiguousarray(recs[name], dtype=dtype).tobytes()

        payload = {
            "v": _VERSION,
            "res": self.res,
            "stale_after_s": self.stale_after_s,
            "users": list(self._slot.keys()),
            "lat": col("lat", np.float64),
            "lng": col("lng", np.float64),
            "rating": col("rating", np.float64),
            "acc": col("acc", np.float64),
            "ts": col("ts", np.float64),
            "capacity": capacity.tobytes(),
            "avail": (capf >= 0).astype(np.int8).tobytes(),
            "cell": col("cell", np.int64),
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
        cap_n = max(16, n)
        recs = np.zeros(cap_n, dtype=_REC_DTYPE)
        lat = np.frombuffer(p["lat"], dtype=np.float64)
        lng = np.frombuffer(p["lng"], dtype=np.float64)
        ts = np.frombuffer(p["ts"], dtype=np.float64)
        cap = np.frombuffer(p["capacity"], dtype=np.int64)
        avail = np.frombuffer(p["avail"], dtype=np.int8) == 1
        if res != snap_res:
            l2c = _latlng_to_cell
            cells = np.array([l2c(a, b, res) for a, b in zip(lat.tolist(), lng.tolist(), strict=True)],
                             dtype=np.int64)
        else:
            cells = np.frombuffer(p["cell"], dtype=np.int64)
        r = recs[:n]
        r["lat"] = lat
        r["lng"] = lng
        r["ts"] = ts
        r["ets"] = np.where(avail & (cap > 0), ts, -np.inf)
        r["slot"] = np.arange(n, dtype=np.float64)
        r["rating"] = np.frombuffer(p["rating"], dtype=np.float64)
        r["acc"] = np.frombuffer(p["acc"], dtype=np.float64)
        r["capf"] = np.where(avail, cap, ~cap)
        r["cell"] = cells
        idx._rec = bytearray(recs.tobytes())
        idx._cap_n = cap_n
        del recs, r
        cat_table = [idx._intern_cats(t) for t in p["cat_table"]]
        zone_table = [idx._intern_zones(t) for t in p["zone_table"]]
        cat_ids = np.frombuffer(p["cats"], dtype=np.int32)
        idx._cats = [cat_table[i] for i in cat_ids.tolist()]
        idx._zones = [zone_table[i] for i in np.frombuffer(p["zones"], dtype=np.int32).tolist()]
        idx._users = list(users)
        # One int object per slot, shared by the user map (saves memory).
        idx._slot = dict(zip(users, range(n), strict=True))
        # Buckets, one category at a time: group that category's slots by cell with a stable sort.
        for cat in sorted({c for t in cat_table for c in t}):
            ids = [i for i, t in enumerate(cat_table) if cat in t]
            slots = np.flatnonzero(np.isin(cat_ids, ids))
            if slots.size == 0:
                continue
            order = np.argsort(cells[slots], kind="stable")
            slots = slots[order]
            sc = cells[slots]
            starts = np.flatnonzero(np.concatenate(([True], sc[1:] != sc[:-1])))
            ends = np.append(starts[1:], slots.size).tolist()
            cb: dict[int, array[int]] = {}
            raw = slots.astype(np.int64).tobytes()
            for s, e, c in zip(starts.tolist(), ends, sc[starts].tolist(), strict=True):
                a: array[int] = array("q")
                a.frombytes(raw[8 * s:8 * e])
                cb[c] = a
            idx._buckets[cat] = cb
            idx._cat_count[cat] = int(slots.size)
        return idx
