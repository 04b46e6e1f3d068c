"""matching.sync: two matchers in one test process stand in for two hub processes sharing Redis."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from django.test import override_settings

from core import redis as hubredis
from hub.rpc import Caller
from matching.actions.providers import assign_zone, update_provider
from matching.actions.zones import create_zone, delete_zone, replace_zone
from matching.matcher import Matcher, matcher
from matching.models import Zone, ZoneAssignment
from matching.sync import STATE_HASH

# Redis is part of the suite (make test): these fail, never skip, without it.
needs_redis = pytest.mark.services


def uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def square(lat: float, lng: float, d: float = 0.05) -> dict[str, Any]:
    ring = [[lng - d, lat - d], [lng + d, lat - d], [lng + d, lat + d], [lng - d, lat + d], [lng - d, lat - d]]
    return {"type": "Polygon", "coordinates": [ring]}


def eventually(check: Callable[[], bool], within: float = 1.0) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


@pytest.fixture()
def peer() -> Iterator[Matcher]:
    """Another 'process': its own indexes, origin and listener."""
    m = Matcher()
    m.start()
    yield m
    m.stop()


@needs_redis
def test_provider_update_reaches_other_process_within_a_second(peer: Matcher) -> None:
    cat, user = uid("c"), uid("p")
    zone = create_zone(Caller("system", "admin", ""), "Z", [cat], square(51.5, -0.1))
    assert eventually(lambda: peer.lookup_zone(51.5, -0.1, cat) == zone["id"])
    t0 = time.time()
    update_provider(user, 51.5, -0.1, True, categories=[cat], capacity=3,
                            schedule=[{"days": ["sat"], "from": "10:00", "to": "12:00"}])
    assert eventually(lambda: peer.tenant("default").providers.get(user) is not None)
    assert time.time() - t0 < 1.0
    got = peer.tenant("default").providers.get(user)
    assert got is not None and got.capacity == 3 and got.categories == (cat,)
    assert peer.tenant("default").schedules[user]
    assert [f.user for f in peer.search(51.5, -0.1, cat)[1]] == [user]
    update_provider(user, 51.5, -0.1, False)
    assert eventually(lambda: peer.search(51.5, -0.1, cat)[1] == [])


@needs_redis
def test_zone_changes_and_assignments_propagate(peer: Matcher) -> None:
    cat, user = uid("c"), uid("p")
    actor = Caller("ops", "admin", "")
    zone = create_zone(actor, "Z", [cat], square(51.6, -0.2))
    assert eventually(lambda: peer.lookup_zone(51.6, -0.2, cat) == zone["id"])
    replace_zone(actor, zone["id"], "Z2", [cat], square(51.7, -0.2))
    assert eventually(lambda: peer.lookup_zone(51.7, -0.2, cat) == zone["id"])
    assert peer.lookup_zone(51.6, -0.2, cat) is None
    assign_zone(actor, user, zone["id"])
    assert eventually(lambda: zone["id"] in peer.tenant("default").assigned.get(user, ()))
    assign_zone(actor, user, zone["id"], remove=True)
    assert eventually(lambda: zone["id"] not in peer.tenant("default").assigned.get(user, ()))
    delete_zone(actor, zone["id"])
    assert eventually(lambda: peer.lookup_zone(51.7, -0.2, cat) is None)
    assert zone["id"] not in peer.zone_meta


@needs_redis
def test_snapshot_hash_restores_a_new_process() -> None:
    cat, user = uid("c"), uid("p")
    update_provider(user, 51.4, -0.3, True, categories=[cat], capacity=2,
                            schedule=[{"days": ["mon"], "from": "09:00", "to": "10:00"}])
    matcher().sync.flush(db=False)
    client = hubredis.sync_client()
    assert client is not None
    raw = client.hget(STATE_HASH, f"default/{user}")  # keyed <tenant>/<user>
    assert raw is not None
    st = msgpack.unpackb(raw, raw=False)
    assert st["u"] == user and st["cap"] == 2 and st["c"] == [cat] and st["s"]
    restarted = Matcher()
    try:
        restarted.start()
        got = restarted.tenant("default").providers.get(user)
        assert got is not None and (got.lat, got.lng, got.capacity) == (51.4, -0.3, 2)
        assert restarted.tenant("default").schedules[user]
    finally:
        restarted.stop()


@needs_redis
@override_settings(HUB_MATCH_SNAPSHOT_S=0.2)
def test_flusher_writes_the_hash_periodically() -> None:
    m = Matcher()
    m.start()
    try:
        user = uid("p")
        m.update_provider(user, 51.4, -0.3, True, categories=["x"])
        client = hubredis.sync_client()
        assert client is not None
        assert eventually(lambda: client.hexists(STATE_HASH, f"default/{user}"), within=3.0)
    finally:
        m.stop()


@needs_redis
def test_listener_reconnects_and_catches_up(peer: Matcher) -> None:
    client = hubredis.sync_client()
    assert client is not None
    cat = uid("c")
    # Drop the peer's pubsub connection (only it: found by its client name) ...
    name = f"matching-sync-{peer.origin}"
    ids = [c["id"] for c in client.client_list() if c.get("name") == name]
    assert ids, "the listener names its connection"
    # ... and change a zone straight in the database while it is gone (no broadcast at all).
    z = Zone.objects.create(name="quiet", categories=[cat], geometry=square(51.3, 0.1))
    for cid in ids:
        client.client_kill_filter(_id=cid)
    assert eventually(lambda: peer.lookup_zone(51.3, 0.1, cat) == z.id, within=5.0)
    # After the reconnect, broadcasts flow again.
    user = uid("p")
    update_provider(user, 51.3, 0.1, True, categories=[cat])
    assert eventually(lambda: peer.tenant("default").providers.get(user) is not None, within=2.0)
    z.delete()


def test_older_state_is_ignored() -> None:
    m = Matcher(use_redis=False)
    base = {"u": "x", "lat": 51.0, "lng": 0.0, "a": True, "c": ["k"], "cap": 1, "r": 0.0, "acc": 0.5, "s": None}
    assert m.apply_state({**base, "ts": 100.0})
    assert not m.apply_state({**base, "lat": 52.0, "ts": 99.0})
    got = m.tenant("default").providers.get("x")
    assert got is not None and got.lat == 51.0


def test_without_redis_changes_stay_local_and_snapshot_is_the_table() -> None:
    m = Matcher(use_redis=False)
    m.start()
    try:
        user = uid("p")
        m.update_provider(user, 51.2, -0.2, True, categories=["k"])
        m.sync.flush()
        other = Matcher(use_redis=False)
        other.start()
        try:
            got = other.tenant("default").providers.get(user)
            assert got is not None and got.lat == 51.2
        finally:
            other.stop()
    finally:
        m.stop()


def test_assignment_rows_load_at_start() -> None:
    zone = create_zone(Caller("system", "admin", ""), "Z", [uid("c")], square(51.1, 0.2))
    user = uid("p")
    ZoneAssignment.objects.create(zone_id=zone["id"], provider=user)
    m = Matcher(use_redis=False)
    m.start()
    try:
        assert m.tenant("default").assigned[user] == frozenset({zone["id"]})
        assert m.zone_meta[zone["id"]].version == 1
    finally:
        m.stop()
