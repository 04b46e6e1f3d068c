"""In-memory, H3-bucketed supply index: fast location updates and exact k-nearest search.

Pure Python + numpy + h3, no Django. Memory layout (a million providers in ~250 MB RSS):

* one integer slot per provider; its fields live in two fixed-size records of flat
  ``bytearray`` buffers, read and written with precompiled ``struct`` calls (one C call per group
  of fields, one cache line per provider instead of one per column):
  - the 32-byte search record (_HOT): the unit vector (x, y, z) of the location and ``ets``;
  - the 56-byte record (_REC): lat, lng, ts, rating, acceptance, capacity, cell;
* per category, per H3 cell, a bucket = ``bytes`` of native int64 slots (8 bytes per entry;
  immutable, so a query's ``bytes.join`` needs no copy-out, and header and data share one
  allocation: one cache miss per cell visited, not three as with array('q')). A category whose
  occupied cells hold fewer than ``coarse_below`` providers on average is searched in buckets of
  the parent cells (res - 1, 7x larger): sparse supply then needs a few large cells instead of
  dozens of nearly empty ones. Those coarse buckets exist only while a category is sparse (built
  by its first sparse search, dropped once it is twice as dense), so dense categories do not pay
  for keeping them on every move.

A location update that stays in its cell (the common case) rewrites both records' position
fields: no bucket work at all. Buckets change only when the cell or the categories change.

A query concatenates the raw bytes of the slot buckets it visits (``bytes.join``), gathers their
search records with one ``ndarray.take`` (C-level random access, so the cache misses overlap) and
ranks them by the dot product of unit vectors, which orders points exactly as great-circle
distance does, everywhere on the sphere (no planar approximation, no special case at the poles or
the antimeridian). Only the few survivors get the exact haversine distance. ``ets``
(eligibility/freshness stamp) is ts when available and capacity > 0, else -inf, so eligibility is
one comparison. A category-filtered search touches only providers of that category.
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
from h3.api import basic_int as h3i

from matching.geo import EARTH_RADIUS_M, haversine_m

__all__ = ["ProviderIndex", "ProviderState"]

try:  # the compiled functions directly: h3's int API wraps each in a converting Python function
    from h3._cy import cell_to_boundary as _cell_to_boundary
    from h3._cy import cell_to_latlng as _cell_to_latlng
    from h3._cy import grid_disk as _grid_disk
    from h3._cy import latlng_to_cell as _latlng_to_cell
except ImportError:  # pragma: no cover - other h3 builds
    _cell_to_boundary = h3i.cell_to_boundary
    _cell_to_latlng = h3i.cell_to_latlng
    _grid_disk = h3i.grid_disk
    _latlng_to_cell = h3i.latlng_to_cell


def _disk(cell: int, r: int) -> array[int]:
    """Every cell within r rings (h3's compiled grid_disk returns a buffer; copied at C level)."""
    return array("Q", memoryview(_grid_disk(cell, r)))  # type: ignore[arg-type]


def _intern(table: dict[Any, tuple[str, ...]], names: Iterable[str]) -> tuple[str, ...]:
    """One shared sorted tuple per distinct set of names (categories, zones): a million providers
    hold a few hundred tuples. A bare string is one name, not its letters."""
    if isinstance(names, str):
        names = (names,)
    key = names if isinstance(names, (tuple, frozenset)) else tuple(names)
    got = table.get(key)
    if got is None:
        got = tuple(sorted({sys.intern(str(n)) for n in key}))
        got = table.setdefault(got, got)
        table[key] = got
    return got
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
# Bounded per-cell geometry cache used by nearest() (3 floats per cell; Greater London is ~21,000
# cells at res 9).
_CACHE_CELLS = 100_000
# First disk radius a category's search tries before it has learnt from earlier queries, and the
# most it starts with (later rings are chosen from the density seen, see nearest()).
_START_RINGS = 1
# Disks of r < _CACHED_DISKS rings are cached per cell, up to _DISK_CACHE_CELLS cells per r (at
# most ~40 MB in all; Greater London's ~21,000 cells fit).
_CACHED_DISKS = 5
_DISK_CACHE_CELLS = 30_000
_MAX_START_RINGS = 3

# Per-provider record: 7 eight-byte fields, native byte order, no padding.
# ``capf`` is the capacity when the provider is available, else ~capacity (= -capacity - 1):
# availability costs no extra field.
_REC = struct.Struct("=dddddqq")  # lat, lng, ts, rating, acc, capf, cell
_REC_SIZE = _REC.size  # 56
_POS = struct.Struct("=ddd")  # lat, lng, ts: the record fields an in-cell ping changes
_CAP_CELL = struct.Struct("=qq")  # capf, cell
_OFF_CAP = 40
_OFF_CELL = 48
_Q = struct.Struct("=q")
_REC_DTYPE = np.dtype([
    ("lat", "=f8"), ("lng", "=f8"), ("ts", "=f8"), ("rating", "=f8"), ("acc", "=f8"),
    ("capf", "=i8"), ("cell", "=i8"),
])
assert _REC_DTYPE.itemsize == _REC_SIZE
# Per-provider search record: unit vector of the location, and ets (see the module docstring).
_HOT = struct.Struct("=dddd")
_HOT_SIZE = _HOT.size  # 32: a cache line holds two, and none straddles one
# Absolute error bound on a computed dot product of two computed unit vectors (a few ulps of 1,
# with a 10x margin): candidates within it of a cut are kept, so rounding never drops one.
_DOT_SLACK = 1e-14


# The compiled kernels (matching.kernels), bound on first use: importing numba costs ~0.3 s and
# ~140 MB, which processes that never search (manage.py commands) should not pay.
_nearest_rows: Any = None
_rank: Any = None


def _load_kernels() -> None:
    global _nearest_rows, _rank
    from matching import kernels

    _nearest_rows, _rank = kernels.nearest_rows, kernels.rank


def _take_out(buckets: dict[int, bytes], cell: int, packed: bytes) -> None:
    """Remove one 8-byte entry from a cell's bucket (only 8-byte-aligned matches count)."""
    data = buckets[cell]
    i = data.find(packed)
    while i % 8:
        if i < 0:
            raise KeyError("slot not in its bucket")
        i = data.find(packed, i + 1)
    if len(data) == 8:
        del buckets[cell]
    else:
        buckets[cell] = data[:i] + data[i + 8:]


def _parent_cell(cell: Any, res: int) -> Any:
    """H3 cellToParent by bit arithmetic (resolution field, then the finer digits set to 7), a
    few times faster than the h3 call. tests/matching/test_index.py checks it against h3."""
    low = (1 << (3 * (15 - res))) - 1
    return (cell & ~(0xF << 52) & ~low) | (res << 52) | low


def _unit(lat: float, lng: float) -> tuple[float, float, float]:
    """Unit vector of a point; the dot product of two is the cosine of their central angle."""
    la = lat * _RAD
    lo = lng * _RAD
    c = math.cos(la)
    return c * math.cos(lo), c * math.sin(lo), math.sin(la)


def _dot_to_m(dot: float) -> float:
    """Great-circle distance (metres) for a dot product of unit vectors (chord = sqrt(2 - 2 dot))."""
    h = 0.5 * (1.0 - dot)
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(h if h < 1.0 else 1.0)) if h > 0.0 else 0.0


def _m_to_dot(dist_m: float) -> float:
    """Dot product of unit vectors dist_m apart (the inverse of _dot_to_m on 0..pi R)."""
    return math.cos(min(max(dist_m, 0.0) / EARTH_RADIUS_M, math.pi))


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
        coarse_below: float = 3.0,
    ) -> None:
        if not 0 <= res <= 15:
            raise ValueError("res must be in 0..15")
        self.res = res
        # Searches use the res - 1 buckets for a category averaging fewer providers than this per
        # occupied cell (0: never; the answer is the same either way, only the cost differs).
        self.coarse_below = float(coarse_below) if res > 0 else 0.0
        self.stale_after_s = float(stale_after_s)
        self.clock = clock
        self.max_rings = max_rings
        self._slot: dict[str, int] = {}
        self._users: list[str | None] = []
        self._free: list[int] = []
        self._cats: list[tuple[str, ...]] = []
        self._zones: list[tuple[str, ...]] = []
        # category -> cell -> bytes of int64 slots (unordered; rebuilt on append/remove), at res
        # and at res - 1 (the parent cells).
        self._buckets: dict[str, dict[int, bytes]] = {}
        self._coarse: dict[str, dict[int, bytes]] = {}  # only for categories searched coarse
        # Bucket entries per category: once a search has gathered all of them it can stop.
        self._cat_count: dict[str, int] = {}
        self._cat_intern: dict[Any, tuple[str, ...]] = {(): ()}
        self._zone_intern: dict[Any, tuple[str, ...]] = {(): ()}
        self._geom: dict[int, tuple[float, float, float]] = {}
        # Per r < _CACHED_DISKS: cell -> its disk of r rings (8 bytes a cell): every query in a
        # cell starts from the same disks, and h3's grid_disk costs more than the lookup.
        self._disks: list[dict[int, array[int]]] = [{} for _ in range(_CACHED_DISKS)]
        # (category, coarse) -> moving average of the disk radius that answered (where searches
        # start).
        self._start_r: dict[tuple[str, bool], float] = {}
        cap = max(16, initial_capacity)
        self._cap_n = cap
        self._rec = bytearray(_REC_SIZE * cap)
        self._hot = bytearray(_HOT_SIZE * cap)
        # float64 views of _hot (cap_n, 4) and _rec (cap_n, 7; the int fields read as garbage and
        # are never used through it), created lazily and dropped whenever the buffers are replaced.
        self._views: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ storage
    def _grow(self) -> None:
        extra = max(16, self._cap_n)
        # A new buffer rather than an in-place resize: a live numpy view (e.g. held by a nearest()
        # whose accept callback updates the index) would make bytearray resizing fail.
        self._views = None
        self._rec = self._rec + bytes(_REC_SIZE * extra)
        self._hot = self._hot + bytes(_HOT_SIZE * extra)
        self._cap_n += extra

    def _search_views(self) -> tuple[np.ndarray, np.ndarray]:
        v = self._views
        if v is None:
            v = self._views = (
                np.frombuffer(self._hot, dtype=np.float64).reshape(-1, 4),
                np.frombuffer(self._rec, dtype=np.float64).reshape(-1, _REC_SIZE // 8),
            )
        return v

    def _intern_cats(self, categories: Iterable[str]) -> tuple[str, ...]:
        return _intern(self._cat_intern, categories)

    def _intern_zones(self, zones: Iterable[str]) -> tuple[str, ...]:
        return _intern(self._zone_intern, zones)

    def _parent(self, cell: int) -> int:
        return _parent_cell(cell, self.res - 1)  # only called when res > 0 (coarse_below > 0)

    def _bucket_add(self, cell: int, cats: tuple[str, ...], slot: int) -> None:
        counts = self._cat_count
        packed = _Q.pack(slot)
        for c in cats:
            counts[c] = counts.get(c, 0) + 1
            cb = self._buckets.get(c)
            if cb is None:
                cb = self._buckets[c] = {}
            cb[cell] = cb.get(cell, b"") + packed
            cb = self._coarse.get(c)
            if cb is not None:
                parent = self._parent(cell)
                cb[parent] = cb.get(parent, b"") + packed

    def _bucket_remove(self, cell: int, cats: tuple[str, ...], slot: int) -> None:
        counts = self._cat_count
        packed = _Q.pack(slot)
        for c in cats:
            counts[c] -= 1
            _take_out(self._buckets[c], cell, packed)
            cb = self._coarse.get(c)
            if cb is not None:
                _take_out(cb, self._parent(cell), packed)

    def _coarse_buckets(self, category: str) -> dict[int, bytes]:
        """The category's res - 1 buckets, built from the fine ones on first use."""
        cb = self._coarse.get(category)
        if cb is None:
            parts: dict[int, list[bytes]] = {}
            for cell, data in self._buckets[category].items():
                parts.setdefault(self._parent(cell), []).append(data)
            cb = self._coarse[category] = {p: b"".join(v) for p, v in parts.items()}
        return cb

    def _move(self, slot: int, old_cell: int, cell: int) -> None:
        """Same categories, new cell: move the slot between buckets (coarse ones only when the
        parent cell changes too)."""
        packed = _Q.pack(slot)
        buckets = self._buckets
        coarse = self._coarse
        for c in self._cats[slot]:
            cb = buckets[c]
            _take_out(cb, old_cell, packed)
            cb[cell] = cb.get(cell, b"") + packed
            if coarse and c in coarse:
                old_parent, parent = self._parent(old_cell), self._parent(cell)
                if parent != old_parent:
                    cb = coarse[c]
                    _take_out(cb, old_parent, packed)
                    cb[parent] = cb.get(parent, b"") + packed
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
                ets = t if capf > 0 else _NEG_INF
            else:
                if capf >= 0:
                    _Q.pack_into(rec, off + _OFF_CAP, ~capf)
                ets = _NEG_INF
            _POS.pack_into(rec, off, lat, lng, t)
            la = lat * _RAD
            lo = lng * _RAD
            c = math.cos(la)
            _HOT.pack_into(self._hot, slot * _HOT_SIZE, c * math.cos(lo), c * math.sin(lo), math.sin(la), ets)
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
            (_, _, _, rt, ac, cap, old_cell) = _REC.unpack_from(self._rec, off)
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
        _REC.pack_into(self._rec, slot * _REC_SIZE, lat, lng, t, rt, ac, cap if avail else ~cap, cell)
        _HOT.pack_into(self._hot, slot * _HOT_SIZE, *_unit(lat, lng), t if avail and cap > 0 else _NEG_INF)

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
        _HOT.pack_into(self._hot, slot * _HOT_SIZE, 0.0, 0.0, 0.0, _NEG_INF)
        self._free.append(slot)
        return True

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, user: object) -> bool:
        return user in self._slot

    def _state(self, slot: int) -> ProviderState:
        lat, lng, ts, rating, acc, capf, cell = _REC.unpack_from(self._rec, slot * _REC_SIZE)
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
            clat, clng = _cell_to_latlng(cell)
            bnd = _cell_to_boundary(cell)
            n = len(bnd)
            e = min(haversine_m(*bnd[i], *bnd[(i + 1) % n]) for i in range(n))
            safety = _PENTAGON_SAFETY if n == 5 or h3i.is_pentagon(cell) else _EDGE_SAFETY
            if len(self._geom) >= _CACHE_CELLS:  # bounded: a world-wide query pattern cannot leak
                self._geom.clear()
            g = self._geom[cell] = (clat, clng, 0.5 * safety * e)
        return g

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

        The search gathers whole disks (every cell within r rings, one h3 call and one C-level
        pass over the buckets) and picks the next r from the density it has seen; correctness only
        needs "the gathered candidates are everything within disk(r)" and the bound of disk(r).
        """
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):
            raise ValueError(f"invalid coordinates lat={lat!r} lng={lng!r}")
        total = self._cat_count.get(category, 0)
        if k <= 0 or total == 0:
            return []
        if radius_m is not None and not radius_m >= 0:
            return []
        min_ts = (self.clock() if now is None else now) - self.stale_after_s
        fine = self._buckets[category]
        coarse = total < self.coarse_below * len(fine)
        if not coarse and category in self._coarse and total >= 2.0 * self.coarse_below * len(fine):
            del self._coarse[category]  # dense again (hysteresis: no rebuild churn at the edge)
        cell0 = _latlng_to_cell(lat, lng, self.res - 1 if coarse else self.res)
        g = self._geom.get(cell0)
        clat, clng, half_e = self._cell_geom(cell0) if g is None else g
        d0 = haversine_m(lat, lng, clat, clng)
        max_r = self.max_rings
        if radius_m is not None:
            # Smallest r with bound(r) >= radius_m: beyond it nothing can be within the radius.
            need = math.ceil(((radius_m + d0) / half_e - 1.0) / 3.0)
            max_r = min(max_r, max(0, need))
        get = (self._coarse_buckets(category) if coarse else fine).get
        # Area of one cell (regular hexagon with the unscaled shortest edge), used only by the
        # density estimates that choose r; correctness never depends on it.
        cell_area = 2.598 * (half_e * 2.0 / _EDGE_SAFETY) ** 2
        memo: dict[int, bool] = {}
        # hint[0]: a distance the bound must pass before a re-evaluation can succeed (set by a
        # failed evaluation: the k-th candidate found so far can only get nearer).
        hint = [0.0]
        q = _unit(lat, lng)
        level = (category, coarse)
        r = min(max_r, int(self._start_r.get(level, _START_RINGS)))
        while True:
            if r < _CACHED_DISKS:
                cache = self._disks[r]
                cells = cache.get(cell0)
                if cells is None:
                    if len(cache) >= _DISK_CACHE_CELLS:
                        cache.clear()
                    cells = cache[cell0] = _disk(cell0, r)
            else:
                cells = _disk(cell0, r)
            parts: list[bytes] = list(filter(None, map(get, cells)))
            count = sum(map(len, parts)) >> 3
            bound = (3 * r + 1) * half_e - d0
            # Also final once every provider of the category has been gathered (sparse supply).
            final = r >= max_r or count >= total or (radius_m is not None and bound >= radius_m)
            if not final:
                # Disk area, and the radius expected to hold k candidates at the density seen.
                area = (3 * r * r + 3 * r + 1) * cell_area
                expect = math.sqrt(k * area / (math.pi * count)) if count else math.inf
                if count >= k and bound > hint[0] and bound >= expect:
                    res = self._evaluate(lat, lng, q, parts, k, bound, False, radius_m, accept, min_ts, memo, hint)
                    if res:
                        self._learn_start(level, r)
                        return res
                    expect = hint[0]
                if expect < bound or expect == math.inf:  # nothing here, or too few eligible
                    r2 = 2 * r + 1
                else:  # 25 % beyond where the k-th is expected
                    r2 = math.ceil(((1.25 * expect + d0) / half_e - 1.0) / 3.0)
                r = min(max_r, max(r + 1, r2))
                continue
            if count == 0:
                return []
            res = self._evaluate(lat, lng, q, parts, k, bound, True, radius_m, accept, min_ts, memo, hint)
            self._learn_start(level, r)
            return res or []

    def _learn_start(self, level: tuple[str, bool], r: int) -> None:
        """Moving average of the disk radius that answered, where the next search starts."""
        prev = self._start_r.get(level, float(_START_RINGS))
        self._start_r[level] = min(0.75 * prev + 0.25 * r, float(_MAX_START_RINGS))

    def _evaluate(
        self,
        lat: float,
        lng: float,
        q: tuple[float, float, float],
        parts: list[bytes],
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

        Candidates are ranked by the dot product of unit vectors (larger = nearer, exactly the
        great-circle order up to rounding, which _DOT_SLACK covers). Every candidate within the
        slack of the k-th is kept; survivors get the exact haversine distance, and the stop test
        compares the *exact* k-th distance with the conservative ring bound.
        """
        views = self._views
        if views is None:
            views = self._search_views()
        hot, recf = views
        if _rank is None:
            _load_kernels()
        # Candidates below this dot product are outside the radius (up to the slack).
        floor = -2.0 if radius_m is None else _m_to_dot(radius_m) - _DOT_SLACK
        cand = np.frombuffer(b"".join(parts), dtype=np.int64)
        if accept is None:
            slots, dists, kth, n, tie = _nearest_rows(
                hot, recf, cand, lat, lng, q[0], q[1], q[2], min_ts, floor, k, _DOT_SLACK,
                math.inf if radius_m is None else radius_m,
            )
            if not final and (n < k or _dot_to_m(kth + _DOT_SLACK) >= bound):
                if n >= k:  # the k-th can only get nearer: re-evaluate once the bound passes it
                    hint[0] = _dot_to_m(kth + _DOT_SLACK)
                return None
            sl = slots.tolist()
            dl = dists.tolist()
            if tie:  # equal (distance, rating, acceptance): the user id decides
                keyed = sorted((d, -st.rating, -st.acceptance, st.user, slot)
                               for (d, st), slot in zip(self._states(dl, sl), sl, strict=True))
                dl = [e[0] for e in keyed]
                sl = [e[4] for e in keyed]
            if not final and (len(sl) < k or dl[k - 1] >= bound):
                if len(sl) >= k:
                    hint[0] = dl[k - 1]
                return None  # an unsearched cell could still hold something at least as good
            return self._states(dl[:k], sl[:k])
        slots, dots, kth, n = _rank(hot, cand, q[0], q[1], q[2], min_ts, floor, k, _DOT_SLACK, True)
        if n == 0:
            return [] if final else None
        dl = dots.tolist()
        ol = slots.tolist()
        chosen: list[int] = []
        # A candidate nearer than the bound is decidable; past it an unsearched cell may beat it.
        limit = -2.0 if final else _m_to_dot(bound) + _DOT_SLACK
        for dot, slot in zip(dl, ol, strict=True):
            if dot < floor:
                break
            if dot <= limit:
                hint[0] = _dot_to_m(dot + _DOT_SLACK)  # decidable once the bound passes this
                break
            ok = memo.get(slot)
            if ok is None:
                ok = memo[slot] = bool(accept(self._state(slot)))
            if ok:
                chosen.append(slot)
                if len(chosen) == k:  # keep only the candidates that might tie with the k-th
                    floor = max(floor, dot - _DOT_SLACK)
        if len(chosen) < k and not final:
            return None
        return self._finish(self._exact(lat, lng, chosen, radius_m), k, bound, final, hint)

    def _exact(
        self, lat: float, lng: float, slots: list[int], radius_m: float | None
    ) -> list[tuple[float, float, float, str, int]]:
        """Exact sort keys (distance by geo.haversine_m), best first: (distance, -rating,
        -acceptance, user, slot). Used by searches with a predicate (the others rank in
        kernels.nearest_rows)."""
        users = self._users
        rec = self._rec
        unpack = _REC.unpack_from
        lim = math.inf if radius_m is None else radius_m
        keyed = []
        for slot in slots:
            plat, plng, _ts, rating, acc, _capf, _cell = unpack(rec, slot * _REC_SIZE)
            d = haversine_m(lat, lng, plat, plng)
            if d <= lim:
                keyed.append((d, -rating, -acc, users[slot], slot))
        keyed.sort()
        return keyed  # type: ignore[return-value]

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
        return self._states([e[0] for e in keyed[:k]], [e[4] for e in keyed[:k]])

    def _states(self, dists: list[float], slots: list[int]) -> list[tuple[float, ProviderState]]:
        state = self._state
        return [(d, state(slot)) for d, slot in zip(dists, slots, strict=True)]

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
        coarse_below: float = 3.0,
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
            coarse_below=coarse_below,
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
        r["rating"] = np.frombuffer(p["rating"], dtype=np.float64)
        r["acc"] = np.frombuffer(p["acc"], dtype=np.float64)
        r["capf"] = np.where(avail, cap, ~cap)
        r["cell"] = cells
        idx._rec = bytearray(recs.tobytes())
        hot = np.zeros((cap_n, 4), dtype=np.float64)
        hot[n:, 3] = -np.inf
        la = np.radians(lat)
        lo = np.radians(lng)
        hot[:n, 0] = np.cos(la) * np.cos(lo)
        hot[:n, 1] = np.cos(la) * np.sin(lo)
        hot[:n, 2] = np.sin(la)
        hot[:n, 3] = np.where(avail & (cap > 0), ts, -np.inf)
        idx._hot = bytearray(hot.tobytes())
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
            idx._buckets[cat] = _group(slots, cells)
            idx._cat_count[cat] = int(slots.size)
        return idx


def _group(slots: np.ndarray, cells: np.ndarray) -> dict[int, bytes]:
    """Buckets {cell: bytes of slots} for these slots, given every slot's cell."""
    order = np.argsort(cells[slots], kind="stable")
    slots = slots[order]
    sc = cells[slots]
    starts = np.flatnonzero(np.concatenate(([True], sc[1:] != sc[:-1])))
    ends = np.append(starts[1:], slots.size).tolist()
    raw = slots.astype(np.int64).tobytes()
    return {c: raw[8 * s:8 * e] for s, e, c in zip(starts.tolist(), ends, sc[starts].tolist(), strict=True)}
