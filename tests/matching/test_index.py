"""ProviderIndex behaviour plus a property test against a brute-force scan (no Django, no network)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import h3
import pytest
from h3.api import basic_int as h3i
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching.geo import EARTH_RADIUS_M, haversine_m
from matching.index import ProviderIndex, ProviderState

LAT = (51.28, 51.70)
LNG = (-0.51, 0.33)
Q = (51.5074, -0.1278)  # Charing Cross


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(**kw: object) -> tuple[ProviderIndex, FakeClock]:
    clock = FakeClock()
    return ProviderIndex(clock=clock, **kw), clock  # type: ignore[arg-type]


def users(result: list[tuple[float, ProviderState]]) -> list[str]:
    return [s.user for _, s in result]


def offset(lat: float, lng: float, north_m: float, east_m: float) -> tuple[float, float]:
    dlat = north_m / (EARTH_RADIUS_M * math.pi / 180)
    dlng = east_m / (EARTH_RADIUS_M * math.pi / 180 * math.cos(math.radians(lat)))
    return lat + dlat, lng + dlng


# ---------------------------------------------------------------------------- behaviour
def test_empty_index() -> None:
    idx, _ = make()
    assert len(idx) == 0
    assert idx.nearest(*Q, "plumbing") == []
    assert idx.get("nobody") is None
    assert idx.remove("nobody") is False


def test_update_returns_cell_and_defaults() -> None:
    idx, clock = make()
    cell = idx.update("u1", *Q, True)
    assert cell == h3.latlng_to_cell(*Q, 9)
    s = idx.get("u1")
    assert s is not None
    assert (s.user, s.lat, s.lng, s.available, s.cell) == ("u1", Q[0], Q[1], True, cell)
    assert (s.categories, s.capacity, s.rating, s.acceptance, s.zones, s.ts) == ((), 1, 0.0, 0.0, (), clock.t)
    # No categories yet: never matched.
    assert idx.nearest(*Q, "plumbing") == []


def test_update_keeps_previous_values_when_none() -> None:
    idx, _ = make()
    idx.update("u1", *Q, True, ["plumbing", "heating"], capacity=3, rating=4.5, acceptance=0.9, zones=["z1"])
    idx.update("u1", Q[0] + 0.0001, Q[1], False, ts=5.0)
    s = idx.get("u1")
    assert s is not None
    assert s.categories == ("heating", "plumbing")
    assert (s.capacity, s.rating, s.acceptance, s.zones) == (3, 4.5, 0.9, ("z1",))
    assert (s.available, s.ts) == (False, 5.0)
    assert s.lat == Q[0] + 0.0001
    idx.update("u1", *Q, True, categories=["cleaning"], zones=[])
    s = idx.get("u1")
    assert s is not None and s.categories == ("cleaning",) and s.zones == ()
    assert idx.nearest(*Q, "plumbing") == []
    assert users(idx.nearest(*Q, "cleaning")) == ["u1"]


def test_moves_between_cells() -> None:
    idx, _ = make()
    a = idx.update("u1", *Q, True, ["x"])
    far = offset(*Q, 2000, 0)
    b = idx.update("u1", *far, True)
    assert a != b and len(idx) == 1
    res = idx.nearest(*far, "x", k=5)
    assert users(res) == ["u1"] and res[0][0] == pytest.approx(0.0, abs=1e-6)
    assert idx.nearest(*Q, "x", radius_m=1000) == []
    # Small in-cell moves update the stored position too.
    near = offset(*far, 1, 1)
    assert idx.update("u1", *near, True) == b
    assert idx.nearest(*far, "x")[0][0] == pytest.approx(haversine_m(*far, *near))


def test_many_moves_keep_buckets_consistent() -> None:
    idx, _ = make(coarse_below=math.inf)  # sparse by definition: coarse buckets kept too
    rng = random.Random(11)
    pos = {}
    for step in range(3000):
        u = f"u{rng.randrange(60)}"
        lat, lng = rng.uniform(51.50, 51.52), rng.uniform(-0.14, -0.11)
        cats = rng.choice([None, ["a"], ["a", "b"], ["b"]]) if step % 7 == 0 else None
        idx.update(u, lat, lng, True, cats)
        pos[u] = (lat, lng)
        if step in (100, 2000):  # searches build the coarse buckets; later moves must keep them
            idx.nearest(51.51, -0.12, "a")
            idx.nearest(51.51, -0.12, "b")
        if step % 97 == 0:
            idx.remove(rng.choice(sorted(pos)))
            pos = {k: v for k, v in pos.items() if k in idx}
    total = sum(len(e) // 8 for b in idx._buckets.values() for e in b.values())
    assert total == sum(len(idx.get(u).categories) for u in pos)  # type: ignore[union-attr]
    assert sum(idx._cat_count.values()) == total
    # The coarse level holds the same entries, each under the parent of its cell.
    assert set(idx._coarse) == {"a", "b"}
    for cat, cells in idx._buckets.items():
        fine = sorted((h3i.cell_to_parent(c, idx.res - 1), s) for c, e in cells.items()
                      for s in memoryview(e).cast("q").tolist())
        coarse = sorted((c, s) for c, e in idx._coarse[cat].items() for s in memoryview(e).cast("q").tolist())
        assert fine == coarse
    for u, (lat, lng) in pos.items():
        s = idx.get(u)
        assert s is not None and (s.lat, s.lng) == (lat, lng)


def test_staleness() -> None:
    idx, clock = make(stale_after_s=300)
    idx.update("old", *Q, True, ["x"])
    clock.t += 200
    idx.update("new", *offset(*Q, 50, 0), True, ["x"])
    assert users(idx.nearest(*Q, "x")) == ["old", "new"]
    clock.t += 150  # "old" is now 350 s old
    assert users(idx.nearest(*Q, "x")) == ["new"]
    assert users(idx.nearest(*Q, "x", now=clock.t - 150)) == ["old", "new"]
    idx.update("old", *Q, True)  # a fresh ping revives it
    assert users(idx.nearest(*Q, "x")) == ["old", "new"]


def test_capacity_zero_and_unavailable_excluded() -> None:
    idx, _ = make()
    idx.update("full", *Q, True, ["x"], capacity=0)
    idx.update("off", *Q, False, ["x"])
    idx.update("ok", *offset(*Q, 500, 0), True, ["x"])
    assert users(idx.nearest(*Q, "x")) == ["ok"]
    idx.update("full", *Q, True, capacity=2)
    idx.update("off", *Q, True)
    assert users(idx.nearest(*Q, "x")) == ["full", "off", "ok"]
    idx.update("ok", *offset(*Q, 500, 0), True, capacity=0)
    assert users(idx.nearest(*Q, "x")) == ["full", "off"]
    with pytest.raises(ValueError):
        idx.update("neg", *Q, True, capacity=-1)


def test_category_filter() -> None:
    idx, _ = make()
    idx.update("s", *offset(*Q, 20, 0), True, "plumbing", zones="z9")  # bare strings are one item
    assert idx.get("s").categories == ("plumbing",) and idx.get("s").zones == ("z9",)  # type: ignore[union-attr]
    idx.remove("s")
    idx.update("p", *Q, True, ["plumbing"])
    idx.update("e", *Q, True, ["electrical"])
    idx.update("pe", *offset(*Q, 10, 0), True, ["plumbing", "electrical"])
    assert users(idx.nearest(*Q, "plumbing")) == ["p", "pe"]
    assert users(idx.nearest(*Q, "electrical")) == ["e", "pe"]
    assert idx.nearest(*Q, "gardening") == []


def test_k_larger_than_supply_and_k_zero() -> None:
    idx, _ = make()
    for i in range(5):
        idx.update(f"u{i}", *offset(*Q, 100 * i, 0), True, ["x"])
    assert users(idx.nearest(*Q, "x", k=50)) == [f"u{i}" for i in range(5)]
    assert idx.nearest(*Q, "x", k=0) == []


def test_ties_by_rating_then_acceptance_then_user() -> None:
    idx, _ = make()
    spot = offset(*Q, 300, 300)
    idx.update("d", *spot, True, ["x"], rating=4.0, acceptance=0.9)
    idx.update("c", *spot, True, ["x"], rating=5.0, acceptance=0.5)
    idx.update("b", *spot, True, ["x"], rating=5.0, acceptance=0.8)
    idx.update("a", *spot, True, ["x"], rating=5.0, acceptance=0.5)
    idx.update("z", *Q, True, ["x"], rating=0.0)
    assert users(idx.nearest(*Q, "x")) == ["z", "b", "a", "c", "d"]
    assert users(idx.nearest(*Q, "x", k=3)) == ["z", "b", "a"]


def test_radius_limit() -> None:
    idx, _ = make()
    for i, d in enumerate([100, 900, 1500, 2999, 3001, 8000]):
        idx.update(f"u{i}", *offset(*Q, 0, d), True, ["x"])
    res = idx.nearest(*Q, "x", k=10, radius_m=3000)
    assert users(res) == ["u0", "u1", "u2", "u3"]
    assert all(d <= 3000 for d, _ in res)
    assert users(idx.nearest(*Q, "x", k=2, radius_m=3000)) == ["u0", "u1"]
    assert idx.nearest(*Q, "x", radius_m=50) == []
    assert users(idx.nearest(*Q, "x", k=10)) == [f"u{i}" for i in range(6)]


def test_accept_predicate() -> None:
    idx, _ = make()
    for i in range(30):
        idx.update(f"u{i:02d}", *offset(*Q, 40 * i, 0), True, ["x"], zones=["north" if i % 3 else "south"])
    calls: list[str] = []

    def in_south(s: ProviderState) -> bool:
        calls.append(s.user)
        return "south" in s.zones

    res = idx.nearest(*Q, "x", k=4, accept=in_south)
    assert users(res) == ["u00", "u03", "u06", "u09"]
    assert len(calls) == len(set(calls))  # memoised per query
    assert idx.nearest(*Q, "x", accept=lambda s: False) == []


def test_empty_area_terminates_quickly() -> None:
    idx, _ = make(max_rings=30)
    idx.update("far", 55.95, -3.19, True, ["x"])  # Edinburgh
    idx.update("near", *Q, True, ["y"])
    assert idx.nearest(*Q, "x") == []  # beyond the ring cap: not found, but returns
    assert idx.nearest(*Q, "x", radius_m=5000) == []
    # With only one provider of the category everything gathered => stops even without a cap hit.
    big, _ = make(max_rings=10_000)
    big.update("far", 55.95, -3.19, True, ["x"])
    big.update("mid", *offset(*Q, 0, 200), True, ["x"])
    assert users(big.nearest(*Q, "x", k=1)) == ["mid"]


def test_invalid_coordinates() -> None:
    idx, _ = make()
    with pytest.raises(ValueError):
        idx.update("u", 91.0, 0.0, True)
    with pytest.raises(ValueError):
        idx.update("u", float("nan"), 0.0, True)
    with pytest.raises(ValueError):
        idx.nearest(0.0, 200.0, "x")


def test_remove_and_slot_reuse() -> None:
    idx, _ = make()
    idx.update("a", *Q, True, ["x"])
    idx.update("b", *Q, True, ["x"])
    assert idx.remove("a") is True and len(idx) == 1
    idx.update("c", *offset(*Q, 5, 0), True, ["y"])
    assert users(idx.nearest(*Q, "x")) == ["b"]
    assert users(idx.nearest(*Q, "y")) == ["c"]
    assert idx.get("a") is None


def test_growth_beyond_initial_capacity() -> None:
    idx, _ = make(initial_capacity=16)
    rng = random.Random(2)
    for i in range(500):
        idx.update(f"u{i}", rng.uniform(51.50, 51.51), rng.uniform(-0.13, -0.12), True, ["x"], rating=i / 100)
    assert len(idx) == 500
    assert idx.get("u499").rating == 4.99  # type: ignore[union-attr]
    assert len(idx.nearest(*Q, "x", k=500)) == 500


def test_snapshot_restore_round_trip() -> None:
    idx, clock = make(stale_after_s=120)
    rng = random.Random(4)
    for i in range(300):
        idx.update(
            f"u{i}", rng.uniform(*LAT), rng.uniform(*LNG), rng.random() > 0.2,
            rng.sample(["a", "b", "c"], rng.randint(0, 3)), capacity=rng.randint(0, 2),
            rating=rng.choice([3.0, 4.5]), acceptance=rng.random(), zones=[f"z{i % 4}"],
            ts=clock.t - rng.uniform(0, 200),
        )
    idx.remove("u7")
    data = idx.snapshot()
    assert isinstance(data, bytes)
    back = ProviderIndex.restore(data, clock=clock)
    assert len(back) == len(idx) == 299 and back.stale_after_s == 120 and back.res == idx.res
    for u in idx.users():
        assert back.get(u) == idx.get(u)
    for _ in range(30):
        q = (rng.uniform(*LAT), rng.uniform(*LNG))
        for cat in "abc":
            assert back.nearest(*q, cat, k=7) == idx.nearest(*q, cat, k=7)
    other = ProviderIndex.restore(data, clock=clock, res=7)
    s = other.get("u1")
    assert s is not None and s.cell == h3.latlng_to_cell(s.lat, s.lng, 7)
    # Restored index stays writable.
    back.update("u1", *Q, True, ["a"], capacity=1)
    assert back.nearest(*Q, "a", k=1)[0][1].user == "u1"
    with pytest.raises(ValueError):
        ProviderIndex.restore(b"\x80")


@pytest.mark.parametrize("res", [7, 9, 10])
def test_ring_bound_is_conservative(res: int) -> None:
    """bound(r) never exceeds the true distance from q to any cell in ring r+1."""
    idx = ProviderIndex(res=res)
    rng = random.Random(res)

    def seg_dist(q: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        kx = math.cos(math.radians(q[0])) * math.pi / 180 * EARTH_RADIUS_M
        ky = math.pi / 180 * EARTH_RADIUS_M
        ax, ay = (a[1] - q[1]) * kx, (a[0] - q[0]) * ky
        bx, by = (b[1] - q[1]) * kx, (b[0] - q[0]) * ky
        dx, dy = bx - ax, by - ay
        t = max(0.0, min(1.0, -(ax * dx + ay * dy) / (dx * dx + dy * dy)))
        return math.hypot(ax + t * dx, ay + t * dy)

    points = [(rng.uniform(*LAT), rng.uniform(*LNG)) for _ in range(25)]
    points += [(rng.uniform(-60, 70), rng.uniform(-179, 179)) for _ in range(10)]
    for lat, lng in points:
        c0 = h3i.latlng_to_cell(lat, lng, res)
        clat, clng, half_e = idx._cell_geom(c0)
        d0 = haversine_m(lat, lng, clat, clng)
        for r in range(4):
            bound = (3 * r + 1) * half_e - d0
            true_min = min(
                seg_dist((lat, lng), bnd[i], bnd[(i + 1) % len(bnd)])
                for c in h3i.grid_ring(c0, r + 1)
                for bnd in [h3i.cell_to_boundary(c)]
                for i in range(len(bnd))
            )
            assert bound < true_min


# ---------------------------------------------------------------------------- property test
def brute_force(
    providers: dict[str, dict], lat: float, lng: float, cat: str, k: int, radius: float | None,
    accept: Callable[[ProviderState], bool] | None, now: float, stale: float, idx: ProviderIndex,
) -> list[tuple[float, str]]:
    rows = []
    for u, p in providers.items():
        if not p["available"] or p["capacity"] <= 0 or cat not in p["cats"] or p["ts"] < now - stale:
            continue
        d = haversine_m(lat, lng, p["lat"], p["lng"])
        if radius is not None and d > radius:
            continue
        if accept is not None and not accept(idx.get(u)):  # type: ignore[arg-type]
            continue
        rows.append((d, -p["rating"], -p["acceptance"], u))
    rows.sort()
    return [(r[0], r[3]) for r in rows[:k]]


def random_location(
    rng: random.Random, centres: list[tuple[float, float]], placed: list[tuple[float, float]]
) -> tuple[float, float]:
    """Uniform, clustered, duplicate (ties) or on/just off an H3 cell edge near a centre."""
    kind = rng.choice(["uniform", "cluster", "cluster", "same", "edge"])
    if kind == "uniform":
        return rng.uniform(*LAT), rng.uniform(*LNG)
    if kind == "same" and placed:
        return rng.choice(placed)
    c = rng.choice(centres)
    if kind == "edge":
        cell = h3i.latlng_to_cell(*c, rng.randint(7, 10))
        ring = h3i.cell_to_boundary(rng.choice(h3i.grid_disk(cell, 1)))
        i = rng.randrange(len(ring))
        a, b = ring[i], ring[(i + 1) % len(ring)]
        t = rng.random()
        jitter = rng.choice([0.0, 1e-9, -1e-9, 1e-7, -1e-7])
        return (a[0] + t * (b[0] - a[0]) + jitter, a[1] + t * (b[1] - a[1]) - jitter)
    return offset(*c, rng.uniform(-1500, 1500), rng.uniform(-1500, 1500))


@st.composite
def scenario(draw: st.DrawFn) -> dict:
    # Hypothesis drives the structure; bulk coordinates come from a drawn seed so that generating
    # 80 providers stays cheap (per-field draws made this test ~10x slower).
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    centres = [(rng.uniform(*LAT), rng.uniform(*LNG)) for _ in range(draw(st.integers(1, 3)))]
    placed: list[tuple[float, float]] = []
    providers: dict[str, dict] = {}
    for i in range(draw(st.integers(0, 80))):
        lat, lng = random_location(rng, centres, placed)
        placed.append((lat, lng))
        providers[f"u{i:03d}"] = {
            "lat": lat, "lng": lng,
            "cats": set(rng.sample(["a", "b", "c"], rng.randint(0, 3))),
            "rating": rng.choice([0.0, 4.0, 4.5, 5.0]),
            "acceptance": rng.choice([0.0, 0.5, 1.0]),
            "capacity": rng.choice([0, 1, 1, 1, 2]),
            "available": rng.random() < 0.8,
            "ts": 1_000_000.0 - rng.choice([0.0, 10.0, 299.0, 301.0, 5000.0]),
        }
    q = random_location(rng, centres, placed)
    res = draw(st.sampled_from([7, 8, 9, 9, 10]))
    # radius=None at res 10 over all of London means hundreds of rings: keep the test fast.
    radius = draw(st.floats(0, 5000) if res == 10 else st.one_of(st.none(), st.floats(0, 5000)))
    moves = [(rng.randrange(80), rng.uniform(-400, 400), rng.uniform(-400, 400))
             for _ in range(draw(st.integers(0, 10)))]
    return {
        "res": res,
        "providers": providers,
        "q": q,
        "cat": draw(st.sampled_from(["a", "b", "c"])),
        "k": draw(st.integers(1, 15)),
        "radius": radius,
        "accept": draw(st.sampled_from([None, "odd", "zone"])),
        "moves": moves,
        # Searched at res - 1 (always), at res (never) or by the density rule.
        "coarse_below": draw(st.sampled_from([0.0, math.inf, 3.0])),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_nearest_matches_brute_force(sc: dict) -> None:
    now = 1_000_000.0
    # Enough rings to span Greater London at any tested res, so radius=None is exact too.
    idx = ProviderIndex(res=sc["res"], stale_after_s=300.0, clock=lambda: now, max_rings=2000,
                        coarse_below=sc["coarse_below"])
    provs = sc["providers"]
    for u, p in provs.items():
        idx.update(u, p["lat"], p["lng"], p["available"], p["cats"], p["capacity"], p["rating"],
                   p["acceptance"], zones=["z1" if int(u[1:]) % 2 else "z2"], ts=p["ts"])
    names = sorted(provs)
    for i, dn, de in sc["moves"]:  # moves exercise bucket maintenance before the query
        if names:
            u = names[i % len(names)]
            p = provs[u]
            p["lat"], p["lng"] = offset(p["lat"], p["lng"], dn, de)
            idx.update(u, p["lat"], p["lng"], p["available"], ts=p["ts"])
    accept = {
        None: None,
        "odd": lambda s: int(s.user[1:]) % 2 == 1,
        "zone": lambda s: "z2" in s.zones,
    }[sc["accept"]]
    lat, lng = sc["q"]
    got = idx.nearest(lat, lng, sc["cat"], k=sc["k"], radius_m=sc["radius"], accept=accept, now=now)
    want = brute_force(provs, lat, lng, sc["cat"], sc["k"], sc["radius"], accept, now, 300.0, idx)
    assert [(d, s.user) for d, s in got] == want


@pytest.mark.parametrize("coarse_below", [0.0, math.inf])
def test_dense_random_matches_brute_force(coarse_below: float) -> None:
    """Larger uniform + clustered population, many queries (fixed seed, fast), at both levels."""
    rng = random.Random(99)
    now = 5_000.0
    idx = ProviderIndex(clock=lambda: now, coarse_below=coarse_below)
    provs: dict[str, dict] = {}
    hubs = [(rng.uniform(*LAT), rng.uniform(*LNG)) for _ in range(5)]
    for i in range(6000):
        if i % 3:
            lat, lng = rng.uniform(51.45, 51.56), rng.uniform(-0.25, 0.0)
        else:
            lat, lng = offset(*rng.choice(hubs), rng.gauss(0, 150), rng.gauss(0, 150))
        p = {"lat": lat, "lng": lng, "cats": set(rng.sample("abcdefgh", rng.randint(1, 3))),
             "rating": rng.choice([4.0, 5.0]), "acceptance": rng.choice([0.5, 1.0]), "capacity": 1,
             "available": True, "ts": now}
        provs[f"u{i}"] = p
        idx.update(f"u{i}", lat, lng, True, p["cats"], rating=p["rating"], acceptance=p["acceptance"])
    for _ in range(300):
        if rng.random() < 0.5:
            lat, lng = rng.uniform(51.45, 51.56), rng.uniform(-0.25, 0.0)
        else:
            lat, lng = offset(*rng.choice(hubs), rng.gauss(0, 300), rng.gauss(0, 300))
        cat = rng.choice("abcdefgh")
        radius = rng.choice([None, 3000.0, 500.0])
        got = idx.nearest(lat, lng, cat, k=10, radius_m=radius)
        assert [(d, s.user) for d, s in got] == brute_force(
            provs, lat, lng, cat, 10, radius, None, now, 300.0, idx
        )


@pytest.mark.parametrize(
    ("lat", "lng", "spread"),
    [(80.6, 20.0, 0.3), (-85.5, 60.0, 0.3), (-17.8, 179.97, 0.06), (64.1, -21.9, 0.2)],
)
def test_exact_fallback_regions_match_brute_force(lat: float, lng: float, spread: float) -> None:
    """High latitudes and the antimeridian take the exact (non-planar) ranking path."""
    rng = random.Random(int(lat * 10))
    now = 10.0
    idx = ProviderIndex(res=8, clock=lambda: now, max_rings=400)
    provs: dict[str, dict] = {}
    for i in range(400):
        plat = max(-89.9, min(89.9, lat + rng.uniform(-spread, spread) / 3))
        plng = lng + rng.uniform(-spread, spread)
        plng = (plng + 540.0) % 360.0 - 180.0  # wrap across the antimeridian
        p = {"lat": plat, "lng": plng, "cats": {"a"}, "rating": rng.choice([1.0, 2.0]), "acceptance": 0.0,
             "capacity": 1, "available": True, "ts": now}
        provs[f"u{i}"] = p
        idx.update(f"u{i}", plat, plng, True, ["a"], rating=p["rating"])
    for _ in range(40):
        qlng = (lng + rng.uniform(-spread, spread) + 540.0) % 360.0 - 180.0
        q = (lat + rng.uniform(-spread, spread) / 3, qlng)
        for radius in (None, 2000.0):
            for accept in (None, lambda s: int(s.user[1:]) % 3 == 0):
                got = idx.nearest(*q, "a", k=7, radius_m=radius, accept=accept)
                want = brute_force(provs, *q, "a", 7, radius, accept, now, 300.0, idx)
                assert [(d, s.user) for d, s in got] == want


def test_hot_path_toggles_availability_and_keeps_capacity() -> None:
    """In-cell pings (no attribute arguments) flip availability without losing the capacity."""
    idx, _ = make()
    idx.update("u", *Q, True, ["x"], capacity=0)
    for avail in (False, True, False, True):
        idx.update("u", *offset(*Q, 1, 1), avail)
        s = idx.get("u")
        assert s is not None and (s.available, s.capacity) == (avail, 0)
        assert idx.nearest(*Q, "x") == []  # capacity 0: never matched
    idx.update("u", *Q, False, capacity=3)
    idx.update("u", *offset(*Q, 2, 0), True)
    s = idx.get("u")
    assert s is not None and (s.available, s.capacity) == (True, 3)
    assert users(idx.nearest(*Q, "x")) == ["u"]
    back = ProviderIndex.restore(idx.snapshot(), clock=idx.clock)
    assert back.get("u") == s


def test_per_cell_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import matching.index as mi

    monkeypatch.setattr(mi, "_DISK_CACHE_CELLS", 5)
    idx, _ = make()
    idx.update("u1", 51.5, -0.1, True, ["a"])
    for i in range(40):  # 40 query points ~1 km apart: 40 different cells
        assert idx.nearest(51.3 + 0.01 * i, -0.1, "a", k=1)
    assert all(len(c) <= 5 for c in idx._disks)


def test_parent_cell_arithmetic_matches_h3() -> None:
    from matching.index import _parent_cell

    rng = random.Random(3)
    for _ in range(300):
        lat, lng = rng.uniform(-89, 89), rng.uniform(-180, 180)
        res = rng.randint(1, 15)
        cell = h3i.latlng_to_cell(lat, lng, res)
        for p in range(res):
            assert _parent_cell(cell, p) == h3i.cell_to_parent(cell, p)


def test_density_rule_picks_the_level() -> None:
    idx, _ = make()
    for i in range(20):  # sparse: one provider per cell, far apart
        idx.update(f"s{i}", 51.3 + 0.01 * i, -0.1, True, ["sparse"])
    for i in range(200):  # dense: 200 providers in a few cells
        idx.update(f"d{i}", 51.5 + 0.00001 * i, -0.1, True, ["dense"])
    idx.nearest(51.4, -0.1, "sparse", k=3)
    idx.nearest(51.5, -0.1, "dense", k=3)
    assert ("sparse", True) in idx._start_r and ("dense", False) in idx._start_r
    assert set(idx._coarse) == {"sparse"}  # built for the sparse category only
    for i in range(200):  # the sparse category becomes dense: its coarse buckets go
        idx.update(f"s{i + 100}", 51.3 + 0.00001 * i, -0.1, True, ["sparse"])
    idx.nearest(51.3, -0.1, "sparse", k=3)
    assert idx._coarse == {}
