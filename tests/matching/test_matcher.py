"""matching.matcher: `find` against a brute-force scan, ties, zones, crews, coarse answers, schedules,
bad stored zones, readiness, and the snapshot restore."""
from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from shapely.geometry import Point, shape

from hub.rpc import Caller
from matching import privacy
from matching.actions.providers import update_provider
from matching.actions.zones import create_zone, delete_zone
from matching.geo import haversine_m
from matching.matcher import (
    NO_PROVIDER_AVAILABLE,
    OUTSIDE_ZONES,
    Matcher,
    ZoneMeta,
    candidates_for_job,
    find,
    find_now,
    match_radius_m,
    matcher,
    score,
    zones_ready,
)
from matching.models import ProviderState, Zone
from matching.schedules import parse_schedule
from matching.zoneindex import ZoneIndex

NOW = 1_750_000_000.0
ADMIN = Caller("system", "admin", "")
CATS = ("plumbing", "electrics", "cleaning")
RATINGS = (0.0, 4.0, 4.5, 5.0)
ACCEPTANCES = (0.25, 0.5, 1.0)


def rect(lat0: float, lng0: float, lat1: float, lng1: float) -> list[list[float]]:
    return [[lng0, lat0], [lng1, lat0], [lng1, lat1], [lng0, lat1], [lng0, lat0]]


@dataclass
class P:
    user: str
    lat: float
    lng: float
    available: bool
    cats: list[str]
    capacity: int
    rating: float
    acceptance: float
    ts: float
    assigned: frozenset[str]


@dataclass
class Z:
    id: str
    geometry: dict[str, Any]
    cats: list[str]
    active: bool


def random_world(rng: random.Random) -> tuple[list[Z], list[P], list[tuple[float, float]]]:
    zones: list[Z] = []
    edges: list[tuple[float, float]] = []
    for i in range(rng.randint(0, 7)):
        lat0, lng0 = rng.uniform(51.30, 51.60), rng.uniform(-0.50, 0.10)
        lat1, lng1 = lat0 + rng.uniform(0.02, 0.25), lng0 + rng.uniform(0.02, 0.35)
        shell = rect(lat0, lng0, lat1, lng1)
        kind = rng.random()
        if kind < 0.25:  # a hole in the middle
            mlat, mlng = (lat0 + lat1) / 2, (lng0 + lng1) / 2
            hole = rect(mlat - 0.005, mlng - 0.005, mlat + 0.005, mlng + 0.005)
            geometry: dict[str, Any] = {"type": "Polygon", "coordinates": [shell, hole[::-1]]}
        elif kind < 0.45:  # two disjoint parts
            far = rect(lat0 - 0.1, lng0 - 0.2, lat0 - 0.05, lng0 - 0.1)
            geometry = {"type": "MultiPolygon", "coordinates": [[shell], [far]]}
        else:
            geometry = {"type": "Polygon", "coordinates": [shell]}
        zones.append(Z(f"z{i}", geometry, rng.sample(CATS, rng.randint(1, 3)), rng.random() > 0.15))
        # Points exactly on this zone's boundary (edge midpoint and a corner).
        edges.append((lat0, (lng0 + lng1) / 2))
        edges.append((lat1, lng1))
    providers: list[P] = []
    for i in range(rng.randint(0, 250)):
        roll = rng.random()
        if roll < 0.1 and providers:  # same spot as someone else: ties on distance
            q = rng.choice(providers)
            lat, lng = q.lat, q.lng
        elif roll < 0.2 and edges:
            lat, lng = rng.choice(edges)
        else:
            lat, lng = rng.uniform(51.25, 51.90), rng.uniform(-0.70, 0.50)
        assigned = frozenset(z.id for z in zones if rng.random() < 0.05)
        providers.append(P(
            user=f"p{i:03d}", lat=lat, lng=lng, available=rng.random() > 0.15,
            cats=rng.sample(CATS, rng.randint(0, 2)), capacity=rng.choice((0, 1, 1, 2)),
            rating=rng.choice(RATINGS), acceptance=rng.choice(ACCEPTANCES),
            ts=NOW - rng.choice((1.0, 10.0, 100.0, 299.0, 301.0, 1000.0)), assigned=assigned))
    points = [(rng.uniform(51.25, 51.90), rng.uniform(-0.70, 0.50)) for _ in range(15)] + edges[:6]
    if providers:
        points += [(p.lat, p.lng) for p in rng.sample(providers, min(4, len(providers)))]
    return zones, providers, points


def build(zones: list[Z], providers: list[P]) -> Matcher:
    m = Matcher(use_redis=False)
    for z in zones:
        m.tenant("default").zones.put(z.id, z.geometry, z.cats, active=z.active)
        m.zone_meta[z.id] = ZoneMeta(z.id, tuple(z.cats), z.active, 1)
    for p in providers:
        m.tenant("default").providers.update(p.user, p.lat, p.lng, p.available, categories=p.cats, capacity=p.capacity,
                           rating=p.rating, acceptance=p.acceptance, ts=p.ts)
        if p.assigned:
            m.tenant("default").assigned[p.user] = p.assigned
    return m


def brute_zone(zones: list[Z], lat: float, lng: float, cat: str) -> str | None:
    pt = Point(lng, lat)
    covering = [(shape(z.geometry).area, z.id) for z in zones
                if z.active and cat in z.cats and shape(z.geometry).covers(pt)]
    return min(covering)[1] if covering else None


def brute_find(zones: list[Z], providers: list[P], lat: float, lng: float, cat: str, k: int,
               radius: float) -> tuple[str | None, list[tuple[str, float]]]:
    zone = brute_zone(zones, lat, lng, cat)
    if zone is None:
        return None, []
    geom = shape(next(z.geometry for z in zones if z.id == zone))
    rows = []
    for p in providers:
        if not (p.available and p.capacity > 0 and cat in p.cats and p.ts >= NOW - 300):
            continue
        if zone not in p.assigned and not geom.covers(Point(p.lng, p.lat)):
            continue
        d = haversine_m(lat, lng, p.lat, p.lng)
        if privacy.coarse_distance_m(lat, lng, p.lat, p.lng) > radius:
            continue  # within the radius = the provider's cell centre is
        rows.append((d, -p.rating, -p.acceptance, p.user))
    rows.sort()
    return zone, [(r[3], round(r[0], 1)) for r in rows[:k]]


@pytest.mark.parametrize("seed", range(40))
def test_find_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    zones, providers, points = random_world(rng)
    m = build(zones, providers)
    radius = match_radius_m()
    for lat, lng in points:
        for cat in CATS:
            k = rng.choice((1, 3, 10, 100))
            zone, found = m.search(lat, lng, cat, k=k, now=NOW)
            want_zone, want = brute_find(zones, providers, lat, lng, cat, k, radius)
            assert zone == want_zone, (seed, lat, lng, cat)
            assert [(f.user, f.distance_m) for f in found] == want, (seed, lat, lng, cat, k)
            if zone is None:
                assert found == []


def test_ties_break_by_rating_then_acceptance_then_user() -> None:
    z = Z("zt", {"type": "Polygon", "coordinates": [rect(51.0, -1.0, 52.0, 1.0)]}, ["plumbing"], True)
    same = dict(lat=51.5, lng=0.0, available=True, cats=["plumbing"], capacity=1, ts=NOW, assigned=frozenset())
    ps = [P("b", rating=4.0, acceptance=0.5, **same), P("a", rating=4.0, acceptance=0.5, **same),  # type: ignore[arg-type]
          P("c", rating=5.0, acceptance=0.1, **same), P("d", rating=4.0, acceptance=0.9, **same)]  # type: ignore[arg-type]
    m = build([z], ps)
    zone, found = m.search(51.5, 0.01, "plumbing", k=10, now=NOW)
    assert zone == "zt"
    assert [f.user for f in found] == ["c", "d", "a", "b"]
    d = found[0].distance_m
    assert found[0].score == score(haversine_m(51.5, 0.01, 51.5, 0.0), 5.0, 0.1)
    assert abs(found[0].score - (d / 1000 - 0.05 * 5.0 - 0.1 * 0.1)) < 1e-3


def test_empty_zone_and_k_larger_than_supply() -> None:
    z = Z("ze", {"type": "Polygon", "coordinates": [rect(51.0, -1.0, 52.0, 1.0)]}, ["plumbing"], True)
    m = build([z], [])
    assert m.search(51.5, 0.0, "plumbing", k=100, now=NOW) == ("ze", [])
    assert m.search(51.5, 0.0, "electrics", k=100, now=NOW) == (None, [])
    p = P("only", 51.5, 0.0, True, ["plumbing"], 1, 0.0, 0.5, NOW, frozenset())
    m = build([z], [p])
    zone, found = m.search(51.5, 0.0, "plumbing", k=100, now=NOW)
    assert [f.user for f in found] == ["only"] and found[0].distance_m == 0.0


def test_assigned_provider_serves_zone_from_outside() -> None:
    inner = Z("zi", {"type": "Polygon", "coordinates": [rect(51.50, -0.10, 51.52, -0.08)]}, ["plumbing"], True)
    out = P("outside", 51.55, -0.09, True, ["plumbing"], 1, 0.0, 0.5, NOW, frozenset())
    m = build([inner], [out])
    assert m.search(51.51, -0.09, "plumbing", now=NOW)[1] == []
    m.tenant("default").assigned["outside"] = frozenset({"zi"})
    assert [f.user for f in m.search(51.51, -0.09, "plumbing", now=NOW)[1]] == ["outside"]


def test_smallest_zone_wins_and_filters_providers() -> None:
    big = Z("big", {"type": "Polygon", "coordinates": [rect(51.0, -1.0, 52.0, 1.0)]}, ["plumbing"], True)
    small = Z("small", {"type": "Polygon", "coordinates": [rect(51.50, -0.10, 51.52, -0.08)]},
              ["plumbing"], True)
    ps = [P("in_small", 51.51, -0.09, True, ["plumbing"], 1, 0.0, 0.5, NOW, frozenset()),
          P("in_big", 51.51, -0.11, True, ["plumbing"], 1, 0.0, 0.5, NOW, frozenset())]
    m = build([big, small], ps)
    zone, found = m.search(51.51, -0.095, "plumbing", now=NOW)
    assert zone == "small" and [f.user for f in found] == ["in_small"]
    zone, found = m.search(51.51, -0.15, "plumbing", now=NOW)
    assert zone == "big" and {f.user for f in found} == {"in_small", "in_big"}


def test_crew_needs_full_crew_within_radius() -> None:
    z = Z("zc", {"type": "Polygon", "coordinates": [rect(51.0, -1.0, 52.0, 1.0)]}, ["cleaning"], True)
    near = [P(f"n{i}", 51.5 + i * 0.001, 0.0, True, ["cleaning"], 1, 0.0, 0.5, NOW, frozenset())
            for i in range(3)]
    far = P("far", 51.9, 0.0, True, ["cleaning"], 1, 0.0, 0.5, NOW, frozenset())  # ~44 km: beyond 20 km
    m = build([z], [*near, far])
    assert [f.user for f in m.search(51.5, 0.0, "cleaning", crew=3, now=NOW)[1]] == ["n0", "n1", "n2"]
    assert m.search(51.5, 0.0, "cleaning", crew=4, now=NOW)[1] == []
    assert len(m.search(51.5, 0.0, "cleaning", k=10, now=NOW)[1]) == 4


def test_coarse_search_shows_cell_centres_and_ranks_by_them() -> None:
    """What customers get: distances to cell centres in 100 m steps, ordered by them (then rating,
    acceptance, user), the score made of them; the radius is tested on the cell centre for everyone."""
    import h3

    z = Z("zp", {"type": "Polygon", "coordinates": [rect(51.0, -1.0, 52.0, 1.0)]}, ["plumbing"], True)
    clat, clng = h3.cell_to_latlng(h3.latlng_to_cell(51.5, 0.0, 8))
    vlat, vlng = h3.cell_to_boundary(h3.latlng_to_cell(51.5, 0.0, 8))[0]
    near = (clat + 0.8 * (vlat - clat), clng + 0.8 * (vlng - clng))
    # Same cell: "b" is exactly nearer the query point, "a" sorts first once both are cell centres.
    ps = [P("b", near[0], near[1], True, ["plumbing"], 1, 0.0, 0.5, NOW, frozenset()),
          P("a", clat, clng, True, ["plumbing"], 1, 0.0, 0.5, NOW, frozenset())]
    m = build([z], ps)
    q = (near[0] + (near[0] - clat), near[1] + (near[1] - clng))
    exact = m.search(q[0], q[1], "plumbing", now=NOW)[1]
    assert [f.user for f in exact] == ["b", "a"] and exact[0].distance_m == round(haversine_m(*q, *near), 1)
    coarse = m.search(q[0], q[1], "plumbing", now=NOW, coarse=True)[1]
    shown = privacy.round_distance(haversine_m(q[0], q[1], clat, clng))
    assert [(f.user, f.distance_m) for f in coarse] == [("a", shown), ("b", shown)]
    assert coarse[0].score == score(shown, 0.0, 0.5)
    assert [f.user for f in m.search(q[0], q[1], "plumbing", k=1, now=NOW, coarse=True)[1]] == ["a"]
    # A radius that reaches the provider's exact point but not its cell centre does not find them.
    d_exact, d_centre = haversine_m(*q, *near), haversine_m(q[0], q[1], clat, clng)
    assert d_exact < d_centre
    solo = build([z], ps[:1])
    for coarse_flag in (False, True):
        assert solo.search(q[0], q[1], "plumbing", now=NOW, radius_m=(d_exact + d_centre) / 2,
                           coarse=coarse_flag)[1] == []
        assert [f.user for f in solo.search(q[0], q[1], "plumbing", now=NOW, radius_m=d_centre + 1,
                                            coarse=coarse_flag)[1]] == ["b"]


def test_scheduled_search_uses_schedule() -> None:
    z = Z("zs", {"type": "Polygon", "coordinates": [rect(51.0, -1.0, 52.0, 1.0)]}, ["plumbing"], True)
    m = build([z], [P(u, 51.5, 0.0, True, ["plumbing"], 1, 0.0, 0.5, NOW, frozenset()) for u in ("s1", "s2")])
    m.tenant("default").schedules["s1"] = parse_schedule([{"days": ["mon"], "from": "09:00", "to": "17:00"}])
    at = datetime(2030, 1, 7, 10, 0, tzinfo=ZoneInfo("Europe/London"))
    assert [f.user for f in m.search(51.5, 0.0, "plumbing", at=at, now=NOW)[1]] == ["s1"]


# --- with the database -------------------------------------------------------------------------

def square(lat: float, lng: float, d: float = 0.05) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [rect(lat - d, lng - d, lat + d, lng + d)]}


def test_provider_state_flushes_to_db_and_restores() -> None:
    cat = f"c{uuid.uuid4().hex[:8]}"
    zone = create_zone(ADMIN, "Z", [cat], square(51.5, -0.1))
    user = f"p{uuid.uuid4().hex[:8]}"
    cell = update_provider(user, 51.5, -0.1, True, categories=[cat], capacity=2,
                                   schedule=[{"days": ["mon"], "from": "08:00", "to": "12:00"}])
    assert isinstance(cell, str) and len(cell) == 15
    m = matcher()
    m.sync.flush()
    row = ProviderState.objects.get(user="default/" + user)
    assert (row.lat, row.lng, row.capacity, row.categories) == (51.5, -0.1, 2, [cat])
    assert row.schedule == [{"days": ["mon"], "from": "08:00", "to": "12:00"}]
    # A new process (fresh matcher, no Redis) restores from the snapshot.
    fresh = Matcher(use_redis=m.use_redis)
    try:
        fresh.start()
        got = fresh.tenant("default").providers.get(user)
        assert got is not None and got.capacity == 2 and got.categories == (cat,)
        assert fresh.tenant("default").schedules[user]
        zid, found = fresh.search(51.5, -0.1, cat, now=time.time())
        assert zid == zone["id"] and [f.user for f in found] == [user]
    finally:
        fresh.stop()


def test_candidates_for_job() -> None:
    cat = f"c{uuid.uuid4().hex[:8]}"
    create_zone(ADMIN, "Z", [cat, f"{cat}-empty"], square(51.3, -0.3))
    users = [f"p{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for i, u in enumerate(users):
        update_provider(u, 51.3 + 0.001 * i, -0.3, True, categories=[cat])
    assert candidates_for_job(51.3, -0.3, cat, limit=2) == (users[:2], None)
    assert candidates_for_job(10.0, 10.0, cat) == ([], OUTSIDE_ZONES)
    assert candidates_for_job(51.3, -0.3, f"{cat}-empty") == ([], NO_PROVIDER_AVAILABLE)


BOWTIE = {"type": "Polygon", "coordinates": [[[0.0, 51.0], [1.0, 52.0], [1.0, 51.0], [0.0, 52.0], [0.0, 51.0]]]}


def test_a_stored_zone_the_index_cannot_load_is_skipped_and_reported() -> None:
    cat = f"c{uuid.uuid4().hex[:8]}"
    good = create_zone(ADMIN, "Good", [cat], square(51.45, -0.2))
    bad = Zone.objects.create(name="Bad", categories=[cat], geometry=BOWTIE)  # bypasses validation
    try:
        m = Matcher(use_redis=False)
        m.load_zones()
        assert m.bad_zones == {bad.id: 1} and bad.id not in m.zone_meta
        assert m.lookup_zone(51.45, -0.2, cat) == good["id"]
        assert m.search(51.45, -0.2, cat)[0] == good["id"]  # searching works, nothing raises
        # Reconciling does not retry an unchanged bad zone; a fixed version is loaded.
        m.reconcile_zones()
        assert m.bad_zones == {bad.id: 1}
        Zone.objects.filter(id=bad.id).update(geometry=square(51.7, -0.2), version=2)
        m.reconcile_zones()
        assert m.bad_zones == {} and m.lookup_zone(51.7, -0.2, cat) == bad.id
        # A broadcast of a bad new version takes the old one out of the index (it no longer matches
        # the database) and reports it.
        Zone.objects.filter(id=bad.id).update(geometry=BOWTIE, version=3)
        m.reload_zone(bad.id)
        assert m.bad_zones == {bad.id: 3} and m.lookup_zone(51.7, -0.2, cat) is None
        # Deleted: no longer reported.
        Zone.objects.filter(id=bad.id).delete()
        m.reconcile_zones()
        assert m.bad_zones == {}
    finally:
        Zone.objects.filter(id=bad.id).delete()
        delete_zone(ADMIN, good["id"])


def test_zones_ready_reports_bad_zones(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Matcher(use_redis=False)
    monkeypatch.setattr("matching.matcher._matcher", m)
    assert zones_ready() == (False, {"bad_zones": []})  # not loaded yet
    m.loaded = True
    assert zones_ready() == (True, {"bad_zones": []})
    m.bad_zones = {"zb": 2, "za": 1}
    assert zones_ready() == (False, {"bad_zones": ["za", "zb"]})


def test_find_says_why_it_is_empty() -> None:
    cat = f"c{uuid.uuid4().hex[:8]}"
    assert find(10.0, 10.0, cat) == {"zone": None, "providers": [], "reason": "outside_zones"}
    zone = create_zone(ADMIN, "Z", [cat], square(51.2, -0.4))
    assert find(51.2, -0.4, cat) == {"zone": zone["id"], "providers": [], "reason": "no_provider_available"}
    user = f"p{uuid.uuid4().hex[:8]}"
    update_provider(user, 51.2, -0.4, True, categories=[cat])
    got = find(51.2, -0.4, cat)
    assert got["reason"] is None and [p["user"] for p in got["providers"]] == [user]
    assert find(51.2, -0.4, cat, crew=2)["reason"] == "no_provider_available"


def test_any_index_failure_on_a_stored_zone_skips_only_that_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not only refused geometry: whatever the index raises for one zone (before this was fixed, a
    # ValueError from cells with more than six vertices) leaves the others loaded.
    cat = f"c{uuid.uuid4().hex[:8]}"
    good = create_zone(ADMIN, "Good", [cat], square(51.40, -0.3))
    other = create_zone(ADMIN, "Other", [cat], square(51.65, -0.3))
    real_put = ZoneIndex.put

    def put(self: Any, zone_id: str, *args: Any, **kwargs: Any) -> None:
        if zone_id == other["id"]:
            raise ValueError("setting an array element with a sequence")
        real_put(self, zone_id, *args, **kwargs)

    monkeypatch.setattr(ZoneIndex, "put", put)
    try:
        m = Matcher(use_redis=False)
        m.load_zones()
        assert m.bad_zones == {other["id"]: 1}
        assert m.lookup_zone(51.40, -0.3, cat) == good["id"] and m.lookup_zone(51.65, -0.3, cat) is None
    finally:
        monkeypatch.undo()
        delete_zone(ADMIN, good["id"])
        delete_zone(ADMIN, other["id"])


def test_find_now_steps_aside_while_the_index_is_busy() -> None:
    """The event loop searches in place only when nobody holds the index: it never waits on a lock
    an update or a zone load holds (the rpc then searches in a worker thread)."""
    import threading

    cat = f"c{uuid.uuid4().hex[:8]}"
    create_zone(ADMIN, "Z", [cat], square(51.3, -0.3))
    m = matcher()
    assert find_now(51.3, -0.3, cat) == find(51.3, -0.3, cat)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with m.lock:
            held.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    held.wait(10)
    try:
        assert find_now(51.3, -0.3, cat) is None
    finally:
        release.set()
        worker.join()
    assert find_now(51.3, -0.3, cat) is not None
