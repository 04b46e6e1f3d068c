"""The process-wide matcher: per-tenant zone and provider indexes, their loading, scoring and search.

One `Matcher` per hub process (`matcher()`), started lazily on first use or by `start()` at
server start-up: it subscribes to the cross-process feed first (matching.sync), then loads zones
and operator assignments from the database and providers from the snapshot (Redis hash, else the
`matching_provider_state` table), so nothing that changes during the load is missed.

Everything here is synchronous (ORM and locks); rpc methods run it in worker threads, except
`find_now`, which the event loop may try first. The indexes are guarded by one lock: updates are
short, and searches are bounded by k and radius. The rules of who may change what are in
matching.actions; this module only holds and searches the state.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from core.errors import bad_request
from hub.auth import DEFAULT_TENANT
from matching import privacy
from matching.index import ProviderIndex
from matching.index import ProviderState as IndexedProvider
from matching.models import ProviderState, Zone, ZoneAssignment, acceptance_rate
from matching.schedules import Window, parse_schedule, schedule_covers
from matching.zoneindex import PreparedZone, ZoneIndex

log = logging.getLogger("matching.matcher")

STALE_AFTER_S = 300.0
# score = distance_km - RATING_WEIGHT * rating - ACCEPTANCE_WEIGHT * acceptance (lower is better).
RATING_WEIGHT = 0.05
ACCEPTANCE_WEIGHT = 0.1
DEFAULT_ACCEPTANCE = acceptance_rate(0, 0, 0)
ZONE_RES = 8  # the zone index's coarse H3 resolution (see matching.zoneindex)
# Coarse answers (customers, enterprises) are ranked over this many more providers than they return.
COARSE_POOL = 20


def match_radius_m() -> float:
    """How far from the job match.find looks (also bounds operator-assigned providers)."""
    return float(settings.HUB_MATCH_RADIUS_M)


def crew_radius_m() -> float:
    """A crew (crew > 1) must all be this close to the job so they arrive together."""
    return float(settings.HUB_CREW_RADIUS_M)


# --- results ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Match:
    user: str
    distance_m: float
    score: float
    # The provider's exact position at the search (never shown to customers; offers measure the
    # provider's distance to the job's area from it).
    lat: float = field(default=0.0, compare=False, repr=False)
    lng: float = field(default=0.0, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"user": self.user, "distance_m": self.distance_m, "score": self.score}


def score(distance_m: float, rating: float, acceptance: float) -> float:
    """Lower is better; ordering itself is by distance (then rating, acceptance, user id)."""
    return round(distance_m / 1000.0 - RATING_WEIGHT * rating - ACCEPTANCE_WEIGHT * acceptance, 4)


@dataclass(frozen=True)
class ZoneMeta:
    name: str
    categories: tuple[str, ...]
    active: bool
    version: int
    tenant: str = DEFAULT_TENANT


def provider_key(tenant: str, user: str) -> str:
    """A provider's key in the snapshot (`matching_provider_state.user`, the Redis hash): the same
    user id in two tenants is two providers."""
    return f"{tenant}/{user}"


def split_provider_key(key: str) -> tuple[str, str]:
    """(tenant, user) of a snapshot key; a key written before tenants is the default tenant's."""
    tenant, sep, user = key.partition("/")
    return (tenant, user) if sep else (DEFAULT_TENANT, key)


# --- the matcher ------------------------------------------------------------------------------

@dataclass
class TenantIndex:
    """One tenant's part of the matcher: its own provider index, zone index, operator assignments
    and schedules. A search in one tenant never sees another's providers or zones (docs/tenancy.md)."""

    providers: ProviderIndex
    zones: ZoneIndex
    assigned: dict[str, frozenset[str]] = field(default_factory=dict)
    schedules: dict[str, tuple[Window, ...]] = field(default_factory=dict)
    raw_schedules: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict)


def _state_tenant(st: dict[str, Any]) -> str:
    """The tenant of a provider state; states written before tenants carry none: the default one."""
    t = st.get("t")
    return t if isinstance(t, str) and t else DEFAULT_TENANT


@dataclass
class Matcher:
    """Per-tenant indexes plus the bookkeeping the index does not hold (assignments, schedules, zone versions)."""

    h3_res: int = 9
    origin: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    use_redis: bool = True

    def __post_init__(self) -> None:
        from matching.sync import Sync

        self.lock = threading.RLock()
        self.tenants: dict[str, TenantIndex] = {}
        # zone id -> (tenant, meta); zone ids are server-made, unique over all tenants.
        self.zone_meta: dict[str, ZoneMeta] = {}
        # Stored zones the index could not load (id -> version): skipped, logged, shown on /readyz.
        self.bad_zones: dict[str, int] = {}
        self.loaded = False
        self._start_lock = threading.Lock()
        self.sync = Sync(self, use_redis=self.use_redis)

    def _new_provider_index(self) -> ProviderIndex:
        # Ring cap large enough that radius_m (not the ring cap) bounds every search.
        return ProviderIndex(res=self.h3_res, stale_after_s=STALE_AFTER_S, max_rings=1000)

    @staticmethod
    def _new_zone_index() -> ZoneIndex:
        return ZoneIndex(res=ZONE_RES, max_cells=settings.HUB_ZONE_MAX_CELLS)

    def tenant(self, name: str) -> TenantIndex:
        """The tenant's indexes, made empty on first use (call with the lock held)."""
        t = self.tenants.get(name)
        if t is None:
            t = self.tenants[name] = TenantIndex(self._new_provider_index(), self._new_zone_index())
        return t

    def providers_of(self, tenant: str = DEFAULT_TENANT) -> ProviderIndex:
        """The tenant's provider index (tests and tools read it)."""
        with self.lock:
            return self.tenant(tenant).providers

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Matcher:
        with self._start_lock:
            if self.loaded:
                return self
            from matching import kernels  # numba: loaded here, by processes that serve searches

            kernels.warm_up()  # compile or load the search kernels now, not on the first query
            # Subscribe first, then load: a change racing the load is applied twice, never missed.
            self.sync.start()
            self.load_zones()
            self.load_assignments()
            self.restore_providers()
            self.loaded = True
            self.sync.start_flusher()
        return self

    def stop(self) -> None:
        self.sync.stop()

    # -- zones -------------------------------------------------------------------------------
    def load_zones(self) -> None:
        """Index every stored zone in its tenant. One the index cannot load is logged and skipped
        (listed on /readyz): the others load and serve."""
        rows = list(Zone.objects.all())
        with self.lock:
            fresh: dict[str, ZoneIndex] = {}
            meta: dict[str, ZoneMeta] = {}
            bad: dict[str, int] = {}
            for z in rows:
                index = fresh.get(z.tenant)
                if index is None:
                    index = fresh[z.tenant] = self._new_zone_index()
                try:
                    index.put(z.id, z.geometry, list(z.categories), active=z.active)
                except Exception:  # one bad zone must not stop the others loading
                    log.exception("zone %s (version %s) cannot be indexed; skipped", z.id, z.version)
                    bad[z.id] = z.version
                    continue
                meta[z.id] = ZoneMeta(z.name, tuple(z.categories), z.active, z.version, z.tenant)
            for name, t in self.tenants.items():
                t.zones = fresh.pop(name) if name in fresh else self._new_zone_index()
            for name, index in fresh.items():
                self.tenant(name).zones = index
            self.zone_meta = meta
            self.bad_zones = bad
        log.info("matching: %d zones loaded, %d skipped", len(meta), len(bad))

    def reload_zone(self, zone_id: str) -> None:
        """Apply the database's current row for one zone (a broadcast said it changed)."""
        z = Zone.objects.filter(id=zone_id).first()
        with self.lock:
            if z is None:
                self._drop_zone(zone_id)
                return
            known = self.zone_meta.get(zone_id)
            if known is not None and known.version > z.version:
                return
            self._put_zone(z)

    def reconcile_zones(self) -> None:
        """Cheap safety net for a missed broadcast: compare versions, reload what differs."""
        current = dict(Zone.objects.values_list("id", "version"))
        with self.lock:
            known = {zid: m.version for zid, m in self.zone_meta.items()}
            known.update(self.bad_zones)  # a bad zone is retried when its version changes, not every time
        for zid in set(known) - set(current):
            with self.lock:
                self._drop_zone(zid)
        for zid, version in current.items():
            if known.get(zid) != version:
                self.reload_zone(zid)

    def _put_zone(self, z: Zone, prepared: PreparedZone | None = None) -> bool:
        """Index one zone row in its tenant; False (logged, listed on /readyz, out of the index) if it cannot be."""
        zones = self.tenant(z.tenant).zones
        try:
            zones.put(z.id, z.geometry, list(z.categories), active=z.active, prepared=prepared)
        except Exception:  # a stored zone that cannot be indexed must not break its callers
            log.exception("zone %s (version %s) cannot be indexed; skipped", z.id, z.version)
            if self.zone_meta.pop(z.id, None) is not None:
                zones.remove(z.id)  # its previous version no longer matches the database
            self.bad_zones[z.id] = z.version
            return False
        self.bad_zones.pop(z.id, None)
        self.zone_meta[z.id] = ZoneMeta(z.name, tuple(z.categories), z.active, z.version, z.tenant)
        return True

    def zone_saved(self, z: Zone, prepared: PreparedZone | None = None) -> None:
        """A zone row committed here: index it now and tell the other processes."""
        with self.lock:
            self._put_zone(z, prepared)
        self.sync.zone_changed(z.id)

    def zone_deleted(self, zone_id: str) -> None:
        """A zone deleted here: out of the index now, and the other processes told."""
        with self.lock:
            self._drop_zone(zone_id)
        self.sync.zone_changed(zone_id)

    def _drop_zone(self, zone_id: str) -> None:
        self.bad_zones.pop(zone_id, None)
        meta = self.zone_meta.pop(zone_id, None)
        if meta is not None:
            t = self.tenant(meta.tenant)
            t.zones.remove(zone_id)
            for user, zs in list(t.assigned.items()):
                if zone_id in zs:
                    t.assigned[user] = zs - {zone_id}

    # -- assignments -------------------------------------------------------------------------
    def load_assignments(self) -> None:
        out: dict[tuple[str, str], set[str]] = {}
        for provider, zone_id, tenant in ZoneAssignment.objects.values_list("provider", "zone_id", "zone__tenant"):
            out.setdefault((tenant, provider), set()).add(zone_id)
        with self.lock:
            for t in self.tenants.values():
                t.assigned = {}
            for (tenant, provider), zs in out.items():
                self.tenant(tenant).assigned[provider] = frozenset(zs)

    def reload_assignments(self, tenant: str, provider: str) -> None:
        zs = frozenset(ZoneAssignment.objects.filter(provider=provider, zone__tenant=tenant)
                       .values_list("zone_id", flat=True))
        with self.lock:
            self.tenant(tenant).assigned[provider] = zs

    def assignments_saved(self, tenant: str, provider: str, zones: Iterable[str]) -> None:
        """A provider's zone assignments committed here: apply them now and tell the other processes."""
        with self.lock:
            self.tenant(tenant).assigned[provider] = frozenset(zones)
        self.sync.assignment_changed(tenant, provider)

    # -- providers ---------------------------------------------------------------------------
    def restore_providers(self) -> None:
        states = self.sync.load_snapshot()
        with self.lock:
            for st in states:
                self.apply_state(st)
        log.info("matching: %d providers restored", len(states))

    def state_of(self, tenant: str, user: str) -> dict[str, Any] | None:
        """The full wire/snapshot form of a provider (see matching.sync)."""
        with self.lock:
            t = self.tenants.get(tenant)
            p = t.providers.get(user) if t is not None else None
            if t is None or p is None:
                return None
            return {"t": tenant, "u": p.user, "lat": p.lat, "lng": p.lng, "a": p.available,
                    "c": list(p.categories), "cap": p.capacity, "r": p.rating, "acc": p.acceptance, "ts": p.ts,
                    "s": t.raw_schedules.get(user)}

    def apply_state(self, st: dict[str, Any], only_newer: bool = True) -> bool:
        """Apply a full provider state from another process or the snapshot; older ones are ignored."""
        user = st["u"]
        with self.lock:
            t = self.tenant(_state_tenant(st))
            cur = t.providers.get(user)
            if only_newer and cur is not None and cur.ts > float(st["ts"]):
                return False
            try:
                windows = parse_schedule(st["s"]) if st.get("s") else ()
            except Exception:  # noqa: BLE001 - a bad stored schedule must not block the location
                windows = ()
            t.providers.update(user, float(st["lat"]), float(st["lng"]), bool(st["a"]),
                               categories=list(st.get("c") or ()), capacity=int(st.get("cap", 1)),
                               rating=float(st.get("r", 0.0)),
                               acceptance=float(st.get("acc", DEFAULT_ACCEPTANCE)), ts=float(st["ts"]))
            t.raw_schedules[user] = st.get("s")
            t.schedules[user] = windows
        return True

    def update_provider(self, user: str, lat: float, lng: float, available: bool,
                        categories: list[str] | None = None, capacity: int | None = None,
                        schedule: list[dict[str, Any]] | None = None, ts: float | None = None, *,
                        tenant: str = DEFAULT_TENANT) -> str:
        windows = parse_schedule(schedule) if schedule is not None else None
        if categories is not None:
            categories = sorted(set(categories))
        with self.lock:
            known = user in self.tenant(tenant).providers
        rating = acceptance = None
        if not known:
            # First sight in this process: take operator rating and offer history from the database.
            row = ProviderState.objects.filter(user=provider_key(tenant, user)).first()
            rating = row.rating if row else 0.0
            acceptance = row.acceptance if row else DEFAULT_ACCEPTANCE
            if row is not None and schedule is None and row.schedule:
                schedule, windows = row.schedule, parse_schedule(row.schedule)
        with self.lock:
            t = self.tenant(tenant)
            try:
                cell = t.providers.update(user, lat, lng, available, categories=categories,
                                          capacity=capacity, rating=rating, acceptance=acceptance,
                                          ts=time.time() if ts is None else ts)
            except ValueError as exc:
                raise bad_request(str(exc)) from exc
            if windows is not None:
                t.schedules[user] = windows
                t.raw_schedules[user] = schedule if schedule else None
            st = self.state_of(tenant, user)
        assert st is not None
        self.sync.provider_changed(st)
        return cell

    def set_stats(self, user: str, rating: float | None = None, acceptance: float | None = None, *,
                  tenant: str = DEFAULT_TENANT) -> None:
        """Rating / acceptance changed in the database: refresh the index and tell other processes."""
        with self.lock:
            t = self.tenants.get(tenant)
            p = t.providers.get(user) if t is not None else None
            if t is None or p is None:
                return
            # Keep ts: a stats change is not a sign of life from the provider.
            t.providers.update(user, p.lat, p.lng, p.available, rating=rating, acceptance=acceptance,
                               ts=p.ts + 1e-6)
            st = self.state_of(tenant, user)
        assert st is not None
        self.sync.provider_changed(st)

    def remove_provider(self, user: str, tenant: str | None = None) -> None:
        """Forget the provider in `tenant`, or in every tenant (an erasure knows the user id only)."""
        with self.lock:
            for name, t in self.tenants.items():
                if tenant is not None and name != tenant:
                    continue
                t.providers.remove(user)
                t.schedules.pop(user, None)
                t.raw_schedules.pop(user, None)

    # -- search ------------------------------------------------------------------------------
    @staticmethod
    def serves(t: TenantIndex, p: IndexedProvider, zone_id: str) -> bool:
        """Provider's zones = zones covering their location, plus the zones operators assigned them."""
        return zone_id in t.assigned.get(p.user, ()) or t.zones.covers(zone_id, p.lat, p.lng)

    def lookup_zone(self, lat: float, lng: float, category: str, tenant: str = DEFAULT_TENANT) -> str | None:
        with self.lock:
            return self.tenant(tenant).zones.lookup(lat, lng, category)

    def search(self, lat: float, lng: float, category: str, k: int = 10, crew: int = 1, *,
               at: datetime | None = None, exclude: Iterable[str] = (), now: float | None = None,
               zone: str | None = None, radius_m: float | None = None,
               coarse: bool = False, tenant: str = DEFAULT_TENANT) -> tuple[str | None, list[Match]]:
        """(zone, matches best first) within `tenant`. crew > 1: exactly `crew` providers within the
        crew radius, or none.

        A provider is within the radius when the centre of their resolution-8 cell is (so where the
        search's edge falls says nothing finer than a cell). `coarse` (what customers and
        enterprises get, see matching.privacy): distances are to that centre, rounded to 100 m, the
        score is computed from them, and the order is by them (then rating, acceptance, user)."""
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):
            raise bad_request("lat must be in -90..90 and lng in -180..180")
        skip = frozenset(exclude)
        with self.lock:
            t = self.tenant(tenant)
            zone_id = zone if zone is not None else t.zones.lookup(lat, lng, category)
            if zone_id is None:
                return None, []
            schedules = t.schedules
            serves = self.serves

            def accept(p: IndexedProvider) -> bool:
                if p.user in skip or not serves(t, p, zone_id):
                    return False
                return at is None or schedule_covers(schedules.get(p.user), at)

            if crew > 1:
                radius, want = crew_radius_m(), crew
            else:
                radius, want = (match_radius_m() if radius_m is None else radius_m), k
            # Coarse answers rank a pool larger than the answer by cell centre, so which `want` of
            # them come back does not follow the exact order (docs/matching.md has what remains).
            pool = min(want + COARSE_POOL, 200) if coarse else want
            rows = self._within(t, lat, lng, category, pool, radius, accept, now, coarse)
        if coarse:
            shown = [(privacy.round_distance(cd), p) for _d, cd, p in rows]
            shown.sort(key=lambda r: (r[0], -r[1].rating, -r[1].acceptance, r[1].user))
            out = [Match(p.user, sd, score(sd, p.rating, p.acceptance), p.lat, p.lng) for sd, p in shown[:want]]
        else:
            out = [Match(p.user, round(d, 1), score(d, p.rating, p.acceptance), p.lat, p.lng)
                   for d, _cd, p in rows[:want]]
        if crew > 1 and len(out) < crew:
            out = []
        return zone_id, out

    @staticmethod
    def _within(t: TenantIndex, lat: float, lng: float, category: str, k: int, radius: float,
                accept: Any, now: float | None, coarse: bool) -> list[tuple[float, float, IndexedProvider]]:
        """Up to k (exact distance, distance to cell centre, provider), nearest first, whose cell
        centre is within the radius. Only providers near the edge need their centre unless `coarse`."""
        ask = k
        sure = radius - privacy.COARSE_SLACK_M  # nearer than this, the cell centre is inside too
        while True:
            found = t.providers.nearest(lat, lng, category, k=ask, radius_m=radius + privacy.COARSE_SLACK_M,
                                        accept=accept, now=now)
            rows: list[tuple[float, float, IndexedProvider]] = []
            for d, p in found:
                cd = privacy.coarse_distance_m(lat, lng, p.lat, p.lng) if coarse or d > sure else d
                if cd <= radius:
                    rows.append((d, cd, p))
            if len(rows) >= k or len(found) < ask:
                return rows[:k]
            ask *= 2  # some near the edge fell out: farther ones may still be inside


_matcher: Matcher | None = None
_matcher_lock = threading.Lock()


def matcher() -> Matcher:
    """This process's matcher, started on first use."""
    global _matcher
    m = _matcher
    if m is None:
        with _matcher_lock:
            if _matcher is None:
                _matcher = Matcher()
            m = _matcher
    if not m.loaded:
        m.start()
    return m


def start() -> Matcher:
    """Server start-up: load zones (DB) and providers (snapshot), start sync threads."""
    return matcher()


def stop() -> None:
    """Server shutdown: flush the provider snapshot and stop the sync threads."""
    if _matcher is not None:
        _matcher.stop()


# Why match.find answered no provider (its "reason"; null when there are providers).
OUTSIDE_ZONES = "outside_zones"  # no active zone serving the category covers the point
NO_PROVIDER_AVAILABLE = "no_provider_available"  # a zone, but nobody (or no full crew) can go


def find(lat: float, lng: float, category: str, k: int = 10, crew: int = 1,
         exact: bool = False, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
    """match.find's answer in `tenant`; coarse (cell centres, 100 m) unless `exact` (matching.privacy.sees_exact)."""
    zone_id, found = matcher().search(lat, lng, category, k=k, crew=crew, coarse=not exact, tenant=tenant)
    reason = None if found else (OUTSIDE_ZONES if zone_id is None else NO_PROVIDER_AVAILABLE)
    return {"zone": zone_id, "providers": [m.as_dict() for m in found], "reason": reason}


def find_now(lat: float, lng: float, category: str, k: int = 10, crew: int = 1,
             exact: bool = False, tenant: str = DEFAULT_TENANT) -> dict[str, Any] | None:
    """`find` without waiting: None when the matcher is not loaded yet or its lock is held (an
    update, a zone load), so the caller can take the slow path (a worker thread) instead. A search is
    tens of microseconds in memory: callers on the event loop run it here rather than pay a thread
    hop that costs more than the search."""
    m = _matcher
    if m is None or not m.loaded or not m.lock.acquire(blocking=False):
        return None
    try:
        return find(lat, lng, category, k=k, crew=crew, exact=exact, tenant=tenant)
    finally:
        m.lock.release()


def zones_ready() -> tuple[bool, dict[str, Any]]:
    """Readiness check (hub.ready): passes when this process has loaded its zones and none was
    skipped; `bad_zones` lists the stored zones the index could not load."""
    m = _matcher
    if m is None or not m.loaded:
        return False, {"bad_zones": []}
    bad = sorted(list(m.bad_zones))  # no lock: readyz runs on the event loop; list(dict) is atomic
    return not bad, {"bad_zones": bad}


def candidates_for_job(lat: float, lng: float, category: str, limit: int = 50,
                       tenant: str = DEFAULT_TENANT) -> tuple[list[str], str | None]:
    """Provider ids of `tenant` who could take a custom job here (same filters as match.find),
    nearest first, and when there are none, why (match.find's reason)."""
    zone, found = matcher().search(lat, lng, category, k=limit, tenant=tenant)
    if found:
        return [m.user for m in found], None
    return [], OUTSIDE_ZONES if zone is None else NO_PROVIDER_AVAILABLE


