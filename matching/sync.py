"""Cross-process propagation of zone and provider changes, and the provider snapshot.

With Redis (`core.redis.sync_client()` is not None):
- `matching:zones` carries `{"o": origin, "op": "zone", "id": zone_id}` and
  `{"o": origin, "op": "assign", "t": tenant, "p": provider}`; receivers re-read that row from the database (the
  source of truth; zone changes are rare), so a late or reordered message can only refresh.
- `matching:providers` carries a provider's full state (the form below); receivers apply it
  unless they already hold a newer `ts`. `{"o", "op": "remove", "p": provider}` (an erasure,
  `erase_provider`) makes every process forget the provider: index, pending snapshot writes, the
  snapshot hash entry and table row; later states of that provider are ignored by the process.
- `matching:providers:state` (hash, `<tenant>/<user>` -> msgpack state) is the restart snapshot: dirty providers
  are written every HUB_MATCH_SNAPSHOT_S (5 s) or as soon as 500 are pending.
- One daemon listener thread per process (redis-py sync pubsub), reconnecting with backoff; after
  every (re)subscribe it reconciles zones and assignments with the database and merges newer
  snapshot entries, so messages lost while disconnected are made up for.
Without Redis everything stays in-process and dirty providers go to the `matching_provider_state`
table every 5 s (with Redis that table is refreshed every 60 s as a second line of defence).

Provider state form: {"t": tenant, "u": user, "lat", "lng", "a": available, "c": [categories], "cap": capacity,
"r": rating, "acc": acceptance, "ts": seconds since the epoch, "s": raw schedule or None}.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import msgpack
import redis
from django.conf import settings
from django.db import close_old_connections, connection

from core import redis as hubredis
from hub.auth import DEFAULT_TENANT

if TYPE_CHECKING:
    from matching.matcher import Matcher

log = logging.getLogger("matching.sync")

ZONES_CHANNEL = "matching:zones"
PROVIDERS_CHANNEL = "matching:providers"
STATE_HASH = "matching:providers:state"
FLUSH_BATCH = 500
RECONCILE_S = 30.0


def pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(raw: bytes) -> dict[str, Any]:
    out = msgpack.unpackb(raw, raw=False)
    if not isinstance(out, dict):
        raise ValueError("not a map")
    return out


class Sync:
    def __init__(self, matcher: Matcher, use_redis: bool = True) -> None:
        self.matcher = matcher
        self.use_redis = use_redis
        self.stopping = threading.Event()
        self.subscribed = threading.Event()
        self.listener: threading.Thread | None = None
        self.flusher: threading.Thread | None = None
        self.wake = threading.Event()
        self.dirty_lock = threading.Lock()
        self.dirty_redis: dict[str, dict[str, Any]] = {}
        self.dirty_db: dict[str, dict[str, Any]] = {}
        # Erased providers: never indexed, published or written to the snapshot again by this process.
        self.erased: set[str] = set()
        self.last_reconcile = 0.0

    # -- configuration -------------------------------------------------------------------------
    def client(self) -> redis.Redis | None:
        return hubredis.sync_client() if self.use_redis else None

    @property
    def redis_enabled(self) -> bool:
        return self.use_redis and bool(settings.REDIS_URL)

    @staticmethod
    def snapshot_interval() -> float:
        return float(settings.HUB_MATCH_SNAPSHOT_S)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the listener and wait (briefly) until it is subscribed, so the load misses nothing."""
        if not self.redis_enabled or self.listener is not None:
            return
        self.listener = threading.Thread(target=self._listen, name="matching-sync", daemon=True)
        self.listener.start()
        if not self.subscribed.wait(3.0):
            log.warning("matching: not subscribed to Redis yet; the listener keeps retrying")

    def start_flusher(self) -> None:
        if self.flusher is None:
            self.flusher = threading.Thread(target=self._flush_loop, name="matching-snapshot", daemon=True)
            self.flusher.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        for t in (self.listener, self.flusher):
            if t is not None:
                t.join(timeout=5)
        self.flush(final=True)

    # -- outgoing ------------------------------------------------------------------------------
    def _publish(self, channel: str, payload: dict[str, Any]) -> None:
        client = self.client()
        if client is None:
            return
        try:
            client.publish(hubredis.pubsub_name(channel), pack({"o": self.matcher.origin, **payload}))
        except redis.RedisError as exc:
            # The change is applied here and stored; peers catch up on their next reconcile.
            log.warning("matching: publish on %s failed: %s", channel, exc)

    def zone_changed(self, zone_id: str) -> None:
        self._publish(ZONES_CHANNEL, {"op": "zone", "id": zone_id})

    def assignment_changed(self, tenant: str, provider: str) -> None:
        self._publish(ZONES_CHANNEL, {"op": "assign", "t": tenant, "p": provider})

    def provider_changed(self, state: dict[str, Any]) -> None:
        if state["u"] in self.erased:
            return
        key = _key(state)
        self._publish(PROVIDERS_CHANNEL, {"op": "provider", "st": state})
        with self.dirty_lock:
            if self.redis_enabled:
                self.dirty_redis[key] = state
            self.dirty_db[key] = state
            many = len(self.dirty_redis) >= FLUSH_BATCH or (
                not self.redis_enabled and len(self.dirty_db) >= FLUSH_BATCH)
        if many:
            self.wake.set()

    # -- incoming ------------------------------------------------------------------------------
    def handle(self, raw: bytes, channel: str) -> None:
        try:
            msg = unpack(raw)
        except Exception:  # noqa: BLE001 - a foreign message on our channel is not our crash
            log.warning("matching: undecodable message on %s", channel)
            return
        if msg.get("o") == self.matcher.origin:
            return  # applied locally before publishing
        op = msg.get("op")
        if op == "provider":
            if msg["st"]["u"] not in self.erased:
                self.matcher.apply_state(msg["st"])
        elif op == "remove":
            self.forget(str(msg["p"]))
        elif op == "zone":
            self.matcher.reload_zone(str(msg["id"]))
        elif op == "assign":
            self.matcher.reload_assignments(str(msg.get("t") or DEFAULT_TENANT), str(msg["p"]))

    def _listen(self) -> None:
        backoff = 0.2
        while not self.stopping.is_set():
            pubsub = None
            try:
                # A dedicated connection: pubsub blocks on reads, the shared pool must not.
                client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=10,
                                              health_check_interval=30,
                                              client_name=f"matching-sync-{self.matcher.origin}")
                pubsub = client.pubsub()
                pubsub.subscribe(hubredis.pubsub_name(ZONES_CHANNEL), hubredis.pubsub_name(PROVIDERS_CHANNEL))
                # Wait for both confirmations so nothing published after this point is lost.
                confirmed = 0
                deadline = time.time() + 5
                while confirmed < 2 and time.time() < deadline:
                    msg = pubsub.get_message(timeout=0.5)
                    if msg is not None and msg.get("type") == "subscribe":
                        confirmed += 1
                    elif msg is not None:
                        self._dispatch(msg)
                if confirmed < 2:
                    raise redis.ConnectionError("no subscribe confirmation")
                self.subscribed.set()
                if self.matcher.loaded:
                    self._catch_up()
                backoff = 0.2
                self.last_reconcile = time.time()
                while not self.stopping.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg is not None:
                        self._dispatch(msg)
                    if time.time() - self.last_reconcile > RECONCILE_S:
                        self.last_reconcile = time.time()
                        self._reconcile()
            except redis.RedisError as exc:
                log.warning("matching: Redis listener error (%s); reconnecting in %.1fs", exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("matching: listener crashed; restarting")
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass
        connection.close()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("type") != "message":
            return
        ch = msg["channel"].decode() if isinstance(msg["channel"], bytes) else str(msg["channel"])
        try:
            self.handle(msg["data"], ch)
        except Exception:
            log.exception("matching: applying a %s message failed", ch)
            close_old_connections()

    def _reconcile(self) -> None:
        try:
            self.matcher.reconcile_zones()
            self.matcher.load_assignments()
        except Exception:
            log.warning("matching: zone reconcile failed", exc_info=True)
            close_old_connections()
            connection.close()

    def _catch_up(self) -> None:
        """After a reconnect: zones/assignments from the database, newer provider states from Redis."""
        self._reconcile()
        for st in self._read_hash():
            self.matcher.apply_state(st)

    def forget(self, user: str) -> None:
        """Drop an erased provider from this process: index, pending writes, snapshot hash and row.
        The hash and row go again here (not only where the erasure ran): a flush of this process
        that was under way may have written them back."""
        self.erased.add(user)
        self.matcher.remove_provider(user)  # in every tenant: an erasure knows the user id only
        with self.dirty_lock:
            for dirty in (self.dirty_redis, self.dirty_db):
                for key in [k for k, st in dirty.items() if st["u"] == user]:
                    del dirty[key]
        _drop_snapshot(user)

    # -- snapshot ------------------------------------------------------------------------------
    def _read_hash(self) -> list[dict[str, Any]]:
        client = self.client()
        if client is None:
            return []
        out: list[dict[str, Any]] = []
        try:
            for _user, raw in client.hscan_iter(STATE_HASH, count=1000):
                try:
                    out.append(unpack(raw))
                except Exception:  # noqa: BLE001
                    continue
        except redis.RedisError as exc:
            log.warning("matching: reading the provider snapshot failed: %s", exc)
            return []
        return out

    def load_snapshot(self) -> list[dict[str, Any]]:
        """Redis hash when there is one (and it is not empty), else the database table."""
        states = self._read_hash()
        if states:
            return states
        from matching.matcher import split_provider_key
        from matching.models import ProviderState

        out: list[dict[str, Any]] = []
        for r in ProviderState.objects.exclude(ts=0):
            tenant, user = split_provider_key(r.user)
            out.append({"t": tenant, "u": user, "lat": r.lat, "lng": r.lng, "a": r.available,
                        "c": list(r.categories or ()), "cap": r.capacity, "r": r.rating, "acc": r.acceptance,
                        "ts": r.ts, "s": r.schedule})
        return out

    def _flush_loop(self) -> None:
        last_db = time.time()
        while not self.stopping.is_set():
            self.wake.wait(self.snapshot_interval())
            self.wake.clear()
            if self.stopping.is_set():
                break
            db_due = not self.redis_enabled or time.time() - last_db >= 60.0
            self.flush(db=db_due)
            if db_due:
                last_db = time.time()

    def flush(self, final: bool = False, db: bool = True) -> None:
        """Write pending provider states to the Redis hash and (when due) the database table."""
        with self.dirty_lock:
            to_redis, self.dirty_redis = self.dirty_redis, {}
            to_db: dict[str, dict[str, Any]] = {}
            if db or final:
                to_db, self.dirty_db = self.dirty_db, {}
        if self.erased:
            to_redis = {k: st for k, st in to_redis.items() if st["u"] not in self.erased}
            to_db = {k: st for k, st in to_db.items() if st["u"] not in self.erased}
        if to_redis:
            client = self.client()
            try:
                if client is not None:
                    client.hset(STATE_HASH, mapping={u: pack(st) for u, st in to_redis.items()})
            except redis.RedisError as exc:
                log.warning("matching: snapshot write to Redis failed: %s", exc)
                with self.dirty_lock:
                    for u, st in to_redis.items():
                        self.dirty_redis.setdefault(u, st)
        if to_db:
            try:
                self._write_db(list(to_db.values()))
            except Exception:
                log.warning("matching: snapshot write to the database failed", exc_info=True)
                with self.dirty_lock:
                    for u, st in to_db.items():
                        self.dirty_db.setdefault(u, st)
                try:
                    connection.close()
                except Exception:  # noqa: BLE001
                    pass
            finally:
                if not final:
                    close_old_connections()

    @staticmethod
    def _write_db(states: list[dict[str, Any]]) -> None:
        from matching.models import ProviderState

        rows = [ProviderState(user=_key(st), lat=st["lat"], lng=st["lng"], available=st["a"],
                              categories=list(st.get("c") or ()), capacity=st.get("cap", 1),
                              schedule=st.get("s"), ts=st["ts"])
                for st in sorted(states, key=_key)]  # one lock order: no deadlocks
        # Only the index-owned columns: rating and offer counters belong to the database.
        ProviderState.objects.bulk_create(
            rows, batch_size=500, update_conflicts=True, unique_fields=["user"],
            update_fields=["lat", "lng", "available", "categories", "capacity", "schedule", "ts",
                           "updated_at"])


def _key(st: dict[str, Any]) -> str:
    """A state's snapshot key, `<tenant>/<user>` (states from before tenants: the default tenant)."""
    from matching.matcher import provider_key

    return provider_key(str(st.get("t") or DEFAULT_TENANT), st["u"])


def _drop_snapshot(user: str) -> None:
    """The user's snapshot entries in every tenant (and one written before tenants)."""
    from django.db.models import Q

    from matching.models import ProviderState

    client = hubredis.sync_client()
    if client is not None:
        try:
            # User ids hold no glob characters (hub.auth.USER_ID): the pattern matches this user only.
            keys = [k for k, _v in client.hscan_iter(STATE_HASH, match=f"*/{user}", count=1000)]
            client.hdel(STATE_HASH, user, *keys)
        except redis.RedisError as exc:
            log.warning("matching: removing a provider from the snapshot failed: %s", exc)
    ProviderState.objects.filter(Q(user=user) | Q(user__endswith=f"/{user}")).delete()


def erase_provider(user: str) -> None:
    """An erased provider leaves every process: this one's matcher (when it runs), the snapshot, and,
    through `matching:providers`, every other process's index and pending writes. Call after the
    erasure committed."""
    from matching import matcher

    m = matcher._matcher
    if m is not None:
        m.sync.forget(user)
    else:
        _drop_snapshot(user)
    client = hubredis.sync_client()
    if client is None:
        return  # no other process to tell (the embedded default runs one)
    try:
        client.publish(hubredis.pubsub_name(PROVIDERS_CHANNEL), pack({"o": "erase", "op": "remove", "p": user}))
    except redis.RedisError as exc:
        log.warning("matching: announcing a provider's erasure failed: %s", exc)
