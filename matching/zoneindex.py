"""Service-zone geometry validation and exact point-in-zone lookup (pure: shapely + h3, no Django).

Lookup structure
----------------
Points are located with one ``latlng_to_cell`` at the lookup resolution (fine_res + 1, default
res + 3). Coarser ancestors are derived from it with bit operations (an H3 parent is the same index
with the resolution field changed and the finer digits set to 7). Each zone is classified per
coarse cell (``res``) as FULL (every point whose lookup cell descends from it is inside), or
refined: near the zone boundary the cell's children at ``fine_res`` are classified, and children
that the boundary still crosses are refined once more, down to the lookup resolution, where a
cell is FULL, PART (touches the boundary) or OUT. Every level is one dict.

Only PART lookup cells need geometry: shapely's prepared ``intersects_xy`` (for a point and a
polygon, intersects == covers, boundary included). Everything else is a dict lookup, so the hot
path is one ``latlng_to_cell`` plus one to three dict lookups, and the answer always equals
``geometry.covers(pt)``. The extra level makes PART cells ~2.6x thinner than at fine_res, so
about 2.5x fewer points reach shapely.

Why the classification is safe: H3 children do not exactly tile their parent, so a cell above
the lookup level "owns" the union of its lookup-level descendants, which sticks out of its
hexagon by at most ~0.13 of its edge (measured). Such a cell is therefore only declared uniform
when the zone boundary is farther than half its size (longest edge or centre-vertex distance)
from its region. Lookup-level cells are declared FULL/OUT only when the boundary is farther than
1e-6 degrees (~0.1 m) from their region. Candidate coarse cells are h3's 'overlap' polyfill plus
the cells along the densely sampled zone boundary, plus one ring of neighbours, so a cell whose
descendants reach into the zone cannot be missed.

Anywhere on Earth: zones are plain lng/lat polygons (GeoJSON; one across the antimeridian is a
MultiPolygon cut at +-180), and a cell's region is drawn in the same plane from its boundary:
any number of vertices (pentagons; cells cut by an icosahedron edge get extra vertices), both
copies of a cell that crosses the antimeridian, the whole cap beyond the lowest vertex for a cell
around a pole. Cell edges are great-circle arcs: the margin grows by twice their measured bulge
off the straight segments, and edges that bulge a lot (cells near a pole, very large cells) are
first split along the arcs. h3's polyfill only sees pieces at most 90 degrees wide, which it reads
as the same lng/lat polygons (never as crossing the antimeridian). The property test in
tests/matching/test_zoneindex.py checks all this against shapely.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import h3
import numpy as np
import shapely
import shapely.affinity
from h3.api import basic_int as h3i
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

__all__ = ["GeometryError", "PreparedZone", "ZoneIndex", "validate_geometry", "estimate_cells", "MAX_VERTICES",
           "MAX_CELLS"]

try:  # the compiled function directly: h3's int API wraps it in an identity Python function
    from h3._cy import latlng_to_cell as _latlng_to_cell
except ImportError:  # pragma: no cover - other h3 builds
    _latlng_to_cell = h3i.latlng_to_cell

MAX_VERTICES = 10_000
# What one zone may cost the index (estimate_cells): about a 150 km square at resolution 8, a few
# seconds of classification. Larger zones are refused before they are stored, so no zone can make
# every process spend minutes and gigabytes loading it at start-up.
MAX_CELLS = 40_000
KM_PER_DEGREE = 111.32
# Boundary margin (degrees) for declaring a fine cell FULL/OUT; see module docstring.
_FINE_EPS_DEG = 1e-6
# A cell's great-circle edges bulge off straight lng/lat segments by up to ``dev`` (measured at the
# edge midpoints). While dev is under this fraction of the cell size the arcs are shallow, nearly
# circular, and deviate most at their midpoints, so twice dev is added to the margin; beyond it
# (cells near a pole, very large cells) the edges are first split along the arcs, at most
# _MAX_SPLIT times. Splitting k times leaves about dev / k^2.
_ARC_FLATNESS = 0.02
_MAX_SPLIT = 32
# Coarse-cell margin as a fraction of its longest edge (descendant overhang measured at <= 0.13).
_COARSE_MARGIN = 0.5
_FULL = True
_PART = False
_REFINE = object()  # coarse-dict marker: look in the fine dict
_MISS = object()
_RES_MASK = 0xF << 52
# Finer lookup levels below fine_res, used only along zone boundaries (see ZoneIndex.__init__).
_EXTRA_LEVELS = 1


class GeometryError(ValueError):
    """A zone geometry was refused; the message names the problem."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_ring(ring: Any, where: str) -> list[tuple[float, float]]:
    if not isinstance(ring, (list, tuple)):
        raise GeometryError(f"{where}: a ring must be an array of positions, got {type(ring).__name__}")
    out: list[tuple[float, float]] = []
    for i, pos in enumerate(ring):
        if not isinstance(pos, (list, tuple)) or len(pos) not in (2, 3):
            raise GeometryError(f"{where} position {i}: a position must be [lng, lat] (2 or 3 numbers)")
        if not all(_is_number(v) for v in pos):
            raise GeometryError(f"{where} position {i}: coordinates must be numbers, got {pos!r}")
        x, y = float(pos[0]), float(pos[1])
        if not (math.isfinite(x) and math.isfinite(y)):
            raise GeometryError(f"{where} position {i}: non-finite coordinate {pos!r}")
        if not (-180.0 <= x <= 180.0 and -90.0 <= y <= 90.0):
            if abs(x) <= 90.0 and 90.0 < abs(y) <= 180.0:
                raise GeometryError(
                    f"{where} position {i}: coordinates look swapped: GeoJSON is [lng, lat], got {pos!r}"
                )
            raise GeometryError(
                f"{where} position {i}: coordinate out of range {pos!r} "
                "(longitude must be within [-180, 180] and latitude within [-90, 90]; GeoJSON is [lng, lat])"
            )
        out.append((x, y))
    if len(out) < 4:
        raise GeometryError(f"{where}: a ring needs at least 4 positions (first == last), got {len(out)}")
    if out[0] != out[-1]:
        raise GeometryError(f"{where}: ring is not closed (first position {out[0]} != last {out[-1]})")
    return out


def _looks_uk_swapped(rings: list[list[tuple[float, float]]]) -> bool:
    # [lat, lng] UK data passes the range check (lat ~50-60 is a valid longitude) but would put
    # the zone in the Indian Ocean / Somalia. For a UK marketplace that is always a swap.
    return all(49.0 <= x <= 61.0 and -9.0 <= y <= 3.0 for ring in rings for x, y in ring)


def validate_geometry(geojson: Mapping[str, Any], uk_swap_check: bool = True) -> BaseGeometry:
    """Validate a GeoJSON Polygon/MultiPolygon and return the shapely geometry.

    Raises GeometryError for: other types, missing/ill-typed coordinates, unclosed or too-short
    rings, out-of-range or non-finite coordinates (with a hint when lng/lat look swapped),
    self-intersections or other invalidity, and more than MAX_VERTICES vertices. Holes are fine.
    """
    if not isinstance(geojson, Mapping):
        raise GeometryError(f"geometry must be a GeoJSON object, got {type(geojson).__name__}")
    gtype = geojson.get("type")
    if gtype not in ("Polygon", "MultiPolygon"):
        raise GeometryError(f"unsupported geometry type {gtype!r}: expected 'Polygon' or 'MultiPolygon'")
    if "coordinates" not in geojson or geojson["coordinates"] is None:
        raise GeometryError(f"{gtype} is missing 'coordinates'")
    coords = geojson["coordinates"]
    if not isinstance(coords, (list, tuple)) or not coords:
        raise GeometryError(f"{gtype} 'coordinates' must be a non-empty array")
    polys_in = [coords] if gtype == "Polygon" else list(coords)
    total = sum(
        len(r) for p in polys_in if isinstance(p, (list, tuple)) for r in p if isinstance(r, (list, tuple))
    )
    if total > MAX_VERTICES:
        raise GeometryError(f"too many vertices: {total} > {MAX_VERTICES}")
    polys: list[list[list[tuple[float, float]]]] = []
    for pi, poly in enumerate(polys_in):
        label = "polygon" if gtype == "Polygon" else f"polygon {pi}"
        if not isinstance(poly, (list, tuple)) or not poly:
            raise GeometryError(f"{label}: must be a non-empty array of rings")
        rings = [
            _check_ring(ring, f"{label} {'exterior ring' if ri == 0 else f'hole {ri}'}")
            for ri, ring in enumerate(poly)
        ]
        polys.append(rings)
    if uk_swap_check and _looks_uk_swapped([r for p in polys for r in p]):
        raise GeometryError(
            "coordinates look swapped: GeoJSON is [lng, lat] (these read as UK [lat, lng] pairs)"
        )
    shapes = [Polygon(p[0], p[1:]) for p in polys]
    geom: BaseGeometry = shapes[0] if gtype == "Polygon" else MultiPolygon(shapes)
    if not geom.is_valid:
        raise GeometryError(f"invalid geometry: {explain_validity(geom)}")
    if geom.area <= 0.0:
        raise GeometryError("invalid geometry: zero area")
    return geom


class PreparedZone:
    """A validated, classified geometry (ZoneIndex.prepare), ready to be put under any zone id."""

    __slots__ = ("geom", "cells", "levels")

    def __init__(self, geom: BaseGeometry, cells: dict[int, Any], levels: tuple[int, ...]) -> None:
        self.geom = geom
        self.cells = cells
        self.levels = levels


class _Zone:
    __slots__ = ("zone_id", "geom", "area", "categories", "active", "cells")

    def __init__(
        self, zone_id: str, geom: BaseGeometry, categories: frozenset[str], active: bool,
        cells: dict[int, Any],
    ) -> None:
        self.zone_id = zone_id
        self.geom = geom  # prepared in place (shapely.prepare)
        self.area = float(geom.area)  # degrees^2: only used to rank overlapping zones
        self.categories = categories
        self.active = active
        # coarse cell -> _FULL, or dict fine cell -> _FULL/_PART (OUT cells are absent)
        self.cells = cells

    def covers_xy(self, lng: float, lat: float) -> bool:
        return bool(shapely.intersects_xy(self.geom, lng, lat))


def _to_xyz(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    la, ln = np.radians(lat), np.radians(lng)
    return np.stack([np.cos(la) * np.cos(ln), np.cos(la) * np.sin(ln), np.sin(la)], axis=-1)


def _to_latlng(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    return np.degrees(np.arctan2(z, np.hypot(x, y))), np.degrees(np.arctan2(y, x))


def _chord_deviation(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    """Per cell (rows), the largest lng/lat distance from a great-circle edge's midpoint to the
    straight segment between its ends: how far the true cell strays from the straight-edged polygon."""
    lat2, lng2 = np.roll(lat, -1, axis=1), np.roll(lng, -1, axis=1)
    mlat, mlng = _to_latlng(_to_xyz(lat, lng) + _to_xyz(lat2, lng2))
    mlng = lng + (mlng - lng + 180.0) % 360.0 - 180.0  # same side of the antimeridian as lng
    ex, ey = lng2 - lng, lat2 - lat
    cross = np.abs(ex * (mlat - lat) - ey * (mlng - lng))
    return np.asarray((cross / np.maximum(np.hypot(ex, ey), 1e-300)).max(axis=1))


def _splits(dev: np.ndarray, size: np.ndarray) -> np.ndarray:
    """How many pieces to split each cell's edges into along the arcs (1, 2, 4, ... _MAX_SPLIT)."""
    need = np.sqrt(dev / np.maximum(_ARC_FLATNESS * size, 1e-300))
    return np.where(need <= 1.0, 1, 2 ** np.ceil(np.log2(np.clip(need, 1.0, _MAX_SPLIT)))).astype(np.int64)


def _densify(lat: np.ndarray, lng: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ring with k - 1 extra points along each great-circle edge (lng not unwrapped)."""
    a = _to_xyz(lat, lng)
    b = np.roll(a, -1, axis=0)
    t = np.arange(k) / k
    pts = a[:, None, :] * (1 - t)[None, :, None] + b[:, None, :] * t[None, :, None]  # chords, then
    pts /= np.linalg.norm(pts, axis=-1, keepdims=True)  # projected onto the sphere (on the arc)
    dlat, dlng = _to_latlng(pts.reshape(-1, 3))
    return dlat, dlng


def _unwrap(lng: np.ndarray) -> np.ndarray:
    """Longitudes made continuous along the ring (consecutive steps within 180 degrees)."""
    step = np.diff(lng)
    step = (step + 180.0) % 360.0 - 180.0
    return np.concatenate([lng[:1], lng[0] + np.cumsum(step)])


def _odd_cell(boundary: tuple[tuple[float, float], ...]) -> tuple[BaseGeometry, float, float]:
    """Region (lng/lat), size and extra margin of a cell the vectorised path does not handle:
    pentagons and cells with distortion vertices (icosahedron edges), cells across the antimeridian,
    cells around a pole, and cells so large that straight edges would be too far from the arcs."""
    lat = np.array([p[0] for p in boundary])
    lng = np.array([p[1] for p in boundary])
    vlng = _unwrap(np.append(lng, lng[0]))[:-1]
    dev = float(_chord_deviation(lat[None, :], vlng[None, :])[0])
    size = float(max(np.hypot(np.diff(np.append(vlng, vlng[0])), np.diff(np.append(lat, lat[0]))).max(),
                     np.hypot(vlng - vlng.mean(), lat - lat.mean()).max()))
    k = int(_splits(np.array([dev]), np.array([size]))[0])
    dlat, dlng = _densify(lat, lng, k)
    ulng = _unwrap(np.append(dlng, dlng[0]))
    if abs(ulng[-1] - ulng[0]) > 180.0:  # the ring winds around a pole: the cap beyond its lowest point
        if lat.mean() > 0:
            return shapely.box(-180.0, float(dlat.min()), 180.0, 90.0), 360.0, 0.0
        return shapely.box(-180.0, -90.0, 180.0, float(dlat.max())), 360.0, 0.0
    ring = np.column_stack([ulng[:-1], dlat])
    region: BaseGeometry = Polygon(ring)
    if ulng.min() < -180.0 or ulng.max() > 180.0:  # across the antimeridian: both copies
        shift = 360.0 if ulng.min() < -180.0 else -360.0
        region = MultiPolygon([region, shapely.affinity.translate(region, xoff=shift)])
    # A k-fold split leaves about dev / k^2 of arc deviation; count it twice.
    return region, size, 2.0 * dev / (k * k)


def _hexes(cells: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: region (lng/lat shapely geometry), size (longest edge or centre-vertex distance,
    degrees), extra margin for the great-circle edges (degrees), and centre lng, lat."""
    n = len(cells)
    polys = np.empty(n, dtype=object)
    sizes, extra = np.zeros(n), np.zeros(n)
    if not n:
        return polys, sizes, extra, np.empty(0), np.empty(0)
    bounds = [h3i.cell_to_boundary(c) for c in cells]
    plain = np.asarray([i for i, b in enumerate(bounds) if len(b) == 6], dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    if len(plain):  # usual case: hexagons, vectorised
        pts = np.asarray([bounds[i] for i in plain], dtype=np.float64)[:, :, ::-1]  # (m, 6, [lng, lat])
        lng, lat = pts[:, :, 0], pts[:, :, 1]
        narrow = lng.max(axis=1) - lng.min(axis=1) <= 90.0  # else across the antimeridian or a pole
        pts, lng, lat, plain = pts[narrow], lng[narrow], lat[narrow], plain[narrow]
        dev = _chord_deviation(lat, lng)
        seg = np.roll(pts, -1, axis=1) - pts
        centre = pts.mean(axis=1, keepdims=True)
        sizes[plain] = np.maximum(np.hypot(seg[:, :, 0], seg[:, :, 1]).max(axis=1),
                                  np.hypot(*(pts - centre).transpose(2, 0, 1)).max(axis=1))
        ks = _splits(dev, sizes[plain])
        for k in np.unique(ks).astype(int).tolist():
            sel = ks == k
            ring = pts[sel] if k == 1 else _densify_rings(lat[sel], lng[sel], k)
            polys[plain[sel]] = shapely.polygons(ring)
            extra[plain[sel]] = 2.0 * dev[sel] / (k * k)
        done[plain] = True
    for i in np.flatnonzero(~done).tolist():
        polys[i], sizes[i], extra[i] = _odd_cell(bounds[i])
    centres = np.asarray([h3i.cell_to_latlng(c) for c in cells], dtype=np.float64)
    return polys, sizes, extra, centres[:, 1], centres[:, 0]


def _densify_rings(lat: np.ndarray, lng: np.ndarray, k: int) -> np.ndarray:
    """(m, 6k, [lng, lat]): rings (rows) with k - 1 extra points along each great-circle edge,
    longitudes kept on the side of each ring's first vertex."""
    a = _to_xyz(lat, lng)
    b = np.roll(a, -1, axis=1)
    t = (np.arange(k) / k)[None, None, :, None]
    p = a[:, :, None, :] * (1 - t) + b[:, :, None, :] * t
    p /= np.linalg.norm(p, axis=-1, keepdims=True)
    dlat, dlng = _to_latlng(p.reshape(len(lat), -1, 3))
    dlng = lng[:, :1] + (dlng - lng[:, :1] + 180.0) % 360.0 - 180.0
    return np.stack([dlng, dlat], axis=-1)


def _bands(geom: BaseGeometry) -> list[BaseGeometry]:
    """The zone cut into polygons at most 90 degrees of longitude wide."""
    x0, _, x1, _ = geom.bounds
    if x1 - x0 <= 90.0:
        return [geom]
    out: list[BaseGeometry] = []
    for west in (-180.0, -90.0, 0.0, 90.0):
        part = geom.intersection(shapely.box(west, -90.0, west + 90.0, 90.0))
        out.extend(g for g in getattr(part, "geoms", [part]) if isinstance(g, Polygon) and not g.is_empty)
    return out


def _boundary_cells(geom: BaseGeometry, res: int) -> set[int]:
    """Cells at ``res`` of points at most a quarter of a cell edge apart (on the ground) along every
    ring of the zone. A segment's ground length is at most 111.32 km per degree of its lng/lat
    length with the longitude part scaled by the largest cos(latitude) on it."""
    step_km = h3.average_hexagon_edge_length(res, unit="km") / 4.0
    out: set[int] = set()
    parts = getattr(geom, "geoms", [geom])
    for ring in [r for p in parts for r in (p.exterior, *p.interiors)]:
        xy = np.asarray(ring.coords)[:, :2]
        seg = np.diff(xy, axis=0)
        lat0, lat1 = xy[:-1, 1], xy[1:, 1]
        low = np.where(lat0 * lat1 <= 0.0, 0.0, np.minimum(np.abs(lat0), np.abs(lat1)))
        km = 111.32 * np.hypot(seg[:, 1], seg[:, 0] * np.cos(np.radians(low)))
        counts = np.maximum(1, np.ceil(km / step_km)).astype(np.int64)
        which = np.repeat(np.arange(len(seg)), counts)
        t = (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)) / counts[which]
        pts = xy[which] + seg[which] * t[:, None]
        for x, y in pts.tolist():
            out.add(_latlng_to_cell(y, x, res))
    return out

def estimate_cells(geom: BaseGeometry, res: int, fine_res: int) -> int:
    """Cells a zone costs the index: its area in cells at ``res`` plus its boundary in cells at
    ``fine_res`` (where classification work and memory go). Measured in an equal-area (sinusoidal)
    projection of the densified outline, so it holds anywhere, poles included, within a few %."""
    dense = shapely.segmentize(geom, 0.5)
    projected = shapely.transform(dense, lambda xy: np.column_stack((
        xy[:, 0] * np.cos(np.radians(xy[:, 1])) * KM_PER_DEGREE, xy[:, 1] * KM_PER_DEGREE)))
    area_cells = projected.area / h3.average_hexagon_area(res, "km^2")
    edge_cells = projected.length / h3.average_hexagon_edge_length(fine_res, "km")
    return int(area_cells + edge_cells)


class ZoneIndex:
    """Exact point-in-zone lookup over many (possibly overlapping) service zones."""

    def __init__(self, res: int = 8, fine_res: int | None = None, max_cells: int = MAX_CELLS) -> None:
        fine = res + 2 if fine_res is None else fine_res
        if not (0 <= res <= fine <= 15):
            raise ValueError("need 0 <= res <= fine_res <= 15")
        self.res = res
        self.fine_res = fine
        self.max_cells = max_cells
        # Lookup levels: res, fine_res, then up to _EXTRA_LEVELS finer ones used only next to zone
        # boundaries (each level refines only the cells of the previous one that the boundary
        # crosses, so geometry is needed for ever fewer points). Points are located at the last.
        levels = [res]
        for r in range(fine, min(15, fine + _EXTRA_LEVELS) + 1):
            if r > levels[-1]:
                levels.append(r)
        self._levels = levels
        self.lookup_res = levels[-1]
        self._masks = [self._mask(r) for r in levels]
        self._keep, self._or = self._masks[0]
        self._zones: dict[str, _Zone] = {}
        self._cell_zones: dict[int, set[str]] = {}
        # One dict per level: cell -> entry | _REFINE (look one level deeper).
        # entry = (fast answers, candidates); see _entry.
        self._maps: list[dict[int, Any]] = [{} for _ in levels]
        self._coarse = self._maps[0]
        self._fine = self._maps[1] if len(levels) > 1 else {}
        self._deeper = [(m, keep, or_) for m, (keep, or_) in zip(self._maps[1:], self._masks[1:], strict=True)]
        self._entry_cache: dict[tuple[Any, ...], Any] = {}

    @staticmethod
    def _mask(res: int) -> tuple[int, int]:
        """(and-mask, or-bits) turning any finer H3 cell into its ancestor at ``res``."""
        digits = (1 << (3 * (15 - res))) - 1
        return ~(_RES_MASK | digits) & 0xFFFFFFFFFFFFFFFF, (res << 52) | digits

    # ------------------------------------------------------------------ maintenance
    def __len__(self) -> int:
        return len(self._zones)

    def __contains__(self, zone_id: object) -> bool:
        return zone_id in self._zones

    def zone_ids(self) -> list[str]:
        return list(self._zones)

    def _parent(self, fine_cell: int) -> int:
        return (fine_cell & self._keep) | self._or

    def prepare(self, geometry_geojson: Mapping[str, Any]) -> PreparedZone:
        """Validate and classify a geometry for this index: the heavy half of put, which touches no
        state (safe outside any lock, e.g. before the zone is committed). Raises GeometryError."""
        geom = validate_geometry(geometry_geojson)
        cost = estimate_cells(geom, self.res, self.fine_res)
        if self.max_cells and cost > self.max_cells:
            raise GeometryError(f"zone too large for the index: about {cost:,} cells at resolution {self.res} "
                                f"(at most {self.max_cells:,}); split it into smaller zones")
        cells = self._classify(geom)
        shapely.prepare(geom)
        return PreparedZone(geom, cells, tuple(self._levels))

    def put(
        self,
        zone_id: str,
        geometry_geojson: Mapping[str, Any],
        categories: Iterable[str],
        active: bool = True,
        prepared: PreparedZone | None = None,
    ) -> None:
        """Add or replace a zone (``prepared``: from prepare() with this geometry, which then is not
        classified again). Raises GeometryError (nothing changes) for bad geometry."""
        if prepared is None or prepared.levels != tuple(self._levels):
            prepared = self.prepare(geometry_geojson)
        cells = prepared.cells
        zone = _Zone(zone_id, prepared.geom, frozenset(categories), bool(active), cells)
        old = self._zones.get(zone_id)
        affected = set(cells)
        if old is not None:
            affected.update(old.cells)
            for c in old.cells:
                self._cell_zones[c].discard(zone_id)
        self._zones[zone_id] = zone
        for c in cells:
            self._cell_zones.setdefault(c, set()).add(zone_id)
        self._rebuild_all(affected)

    def remove(self, zone_id: str) -> bool:
        zone = self._zones.pop(zone_id, None)
        if zone is None:
            return False
        for c in zone.cells:
            self._cell_zones[c].discard(zone_id)
        self._rebuild_all(zone.cells)
        return True

    def set_active(self, zone_id: str, active: bool) -> None:
        zone = self._zones[zone_id]
        if zone.active != bool(active):
            zone.active = bool(active)
            self._rebuild_all(zone.cells)

    def _rebuild_all(self, cells: Iterable[int]) -> None:
        self._entry_cache.clear()  # entries are shared between cells only within one operation
        try:
            for c in cells:
                self._rebuild(c)
        finally:
            self._entry_cache.clear()

    def _classify(self, geom: BaseGeometry) -> dict[int, Any]:
        boundary = geom.boundary
        shapely.prepare(geom)
        shapely.prepare(boundary)  # prepared dwithin is much faster than a full distance
        return self._classify_level(geom, boundary, self._candidates(geom), 0)

    def _candidates(self, geom: BaseGeometry) -> list[int]:
        """Coarse cells that may hold part of the zone: h3's 'overlap' polyfill (fed pieces at most
        90 degrees wide, which h3 reads as plain lng/lat polygons like shapely does, never as
        crossing the antimeridian), the cells along the densely sampled boundary, then one ring of
        neighbours around all of them."""
        base: set[int] = set()
        for piece in _bands(geom):
            shape = h3.geo_to_h3shape(shapely.geometry.mapping(piece))
            base.update(h3i.h3shape_to_cells_experimental(shape, self.res, contain="overlap"))
        base.update(_boundary_cells(geom, self.res))
        cand: set[int] = set()
        for c in base:
            cand.update(h3i.grid_disk(c, 1))
        return sorted(cand)

    def _classify_level(self, geom: BaseGeometry, boundary: BaseGeometry, cells: list[int], lvl: int) -> dict[int, Any]:
        """cell -> _FULL | _PART (last level only) | dict child -> (same, one level deeper); OUT absent.

        A cell owns every lookup-level cell descending from it, which sticks out of its hexagon
        by <= ~0.13 edge: above the last level it is uniform only if the boundary is farther than
        half an edge; at the last level the point's own cell is exact, so 1e-6 degrees suffice."""
        last = lvl == len(self._levels) - 1
        hexes, sizes, extra, clng, clat = _hexes(cells)
        margin = (_FINE_EPS_DEG if last else _COARSE_MARGIN * sizes) + extra
        near = shapely.dwithin(boundary, hexes, margin).tolist()
        inside = shapely.intersects_xy(geom, clng, clat).tolist()
        out: dict[int, Any] = {}
        refine: list[int] = []
        for i, c in enumerate(cells):
            if not near[i]:
                if inside[i]:
                    out[c] = _FULL
            elif last:
                out[c] = _PART
            else:
                refine.append(c)
        if refine:
            child_res = self._levels[lvl + 1]
            children = [h3i.cell_to_children(c, child_res) for c in refine]
            sub = self._classify_level(geom, boundary, [f for ch in children for f in ch], lvl + 1)
            for c, ch in zip(refine, children, strict=True):
                d = {f: sub[f] for f in ch if f in sub}
                if not d:
                    continue
                if len(d) == len(ch) and all(v is _FULL for v in d.values()):
                    out[c] = _FULL
                else:
                    out[c] = d
        return out

    def _entry(self, cands: list[tuple[_Zone, bool]]) -> tuple[dict[str | None, str | None], tuple[Any, ...]]:
        """(fast answers, candidates): fast[category or None] is the lookup result whenever it is
        decided without geometry, i.e. the smallest zone serving it here covers the whole cell."""
        cands.sort(key=lambda t: (t[0].area, t[0].zone_id))
        key = tuple((id(z), full) for z, full in cands)
        got = self._entry_cache.get(key)
        if got is not None:
            return got  # type: ignore[no-any-return]
        fast: dict[str | None, str | None] = {}
        if cands and cands[0][1]:
            fast[None] = cands[0][0].zone_id
        decided: set[str] = set()
        for zone, full in cands:
            for cat in zone.categories:
                if cat in decided:
                    continue
                decided.add(cat)
                if full:
                    fast[cat] = zone.zone_id
        got = self._entry_cache[key] = (fast, tuple(cands))
        return got

    def _drop(self, lvl: int, cell: int) -> None:
        if self._maps[lvl].pop(cell, None) is _REFINE:
            for f in h3i.cell_to_children(cell, self._levels[lvl + 1]):
                self._drop(lvl + 1, f)

    def _rebuild(self, coarse: int) -> None:
        """Recompute the lookup entries of one coarse cell from its zones' classifications."""
        self._drop(0, coarse)
        ids = self._cell_zones.get(coarse)
        if not ids:
            self._cell_zones.pop(coarse, None)
            return
        zones = [z for z in (self._zones[i] for i in ids) if z.active]
        if zones:
            self._merge(0, coarse, [(z, z.cells[coarse]) for z in zones])

    def _merge(self, lvl: int, cell: int, items: list[tuple[_Zone, Any]]) -> None:
        """Write the entry of ``cell`` (level ``lvl``) from each zone's classification node there."""
        if all(node is _FULL or node is _PART for _, node in items):
            self._maps[lvl][cell] = self._entry([(z, node is _FULL) for z, node in items])
            return
        per_child: dict[int, list[tuple[_Zone, Any]]] = {}
        full = [z for z, node in items if node is _FULL]
        for z, node in items:
            if node is not _FULL:
                for f, v in node.items():
                    per_child.setdefault(f, []).append((z, v))
        if full:
            for f in h3i.cell_to_children(cell, self._levels[lvl + 1]):
                per_child.setdefault(f, []).extend((z, _FULL) for z in full)
        for f, sub in per_child.items():
            self._merge(lvl + 1, f, sub)
        self._maps[lvl][cell] = _REFINE

    # ------------------------------------------------------------------ queries
    def _locate(self, lat: float, lng: float) -> Any:
        h = _latlng_to_cell(lat, lng, self.lookup_res)
        e = self._coarse.get((h & self._keep) | self._or)
        if e is _REFINE:
            for m, keep, or_ in self._deeper:
                e = m.get((h & keep) | or_)
                if e is not _REFINE:
                    break
        return e

    def lookup(self, lat: float, lng: float, category: str | None = None) -> str | None:
        """Smallest-area active zone covering the point that serves ``category`` (None: any)."""
        h = _latlng_to_cell(lat, lng, self.lookup_res)
        e: Any = self._coarse.get((h & self._keep) | self._or)
        if e is None:
            return None
        if e is _REFINE:
            for m, keep, or_ in self._deeper:
                e = m.get((h & keep) | or_)
                if e is not _REFINE:
                    break
            if e is None:
                return None
        ans = e[0].get(category, _MISS)
        if ans is not _MISS:
            return ans  # type: ignore[no-any-return]
        for zone, full in e[1]:
            if (category is None or category in zone.categories) and (full or zone.covers_xy(lng, lat)):
                return zone.zone_id  # type: ignore[no-any-return]
        return None

    def zones_covering(self, lat: float, lng: float) -> list[str]:
        """All active zones covering the point, smallest area first."""
        e = self._locate(lat, lng)
        if e is None:
            return []
        return [zone.zone_id for zone, full in e[1] if full or zone.covers_xy(lng, lat)]

    def covers(self, zone_id: str, lat: float, lng: float) -> bool:
        """Whether the zone's geometry covers the point (boundary included), active or not."""
        zone = self._zones.get(zone_id)
        if zone is None:
            return False
        h = _latlng_to_cell(lat, lng, self.lookup_res)
        st = zone.cells.get((h & self._keep) | self._or)
        for keep, or_ in self._masks[1:]:
            if st is None or st is _FULL or st is _PART:
                break
            st = st.get((h & keep) | or_)
        if st is None:
            return False
        if st is _PART:
            return zone.covers_xy(lng, lat)
        return True

    def geometry(self, zone_id: str) -> BaseGeometry | None:
        zone = self._zones.get(zone_id)
        return None if zone is None else zone.geom
