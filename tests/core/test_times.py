"""Times on the wire: every time the hub sends is readable as integer milliseconds since the epoch.

Fields that predate the rule keep their unit (seconds, or ISO 8601 strings) and carry a `<name>_ms`
sibling for the same instant; this walks each of them on a live hub.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from core.times import epoch_ms
from tests.support import HubClient, mint, uid


def iso_to_ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def now_ms() -> int:
    return int(time.time() * 1000)


def assert_ms_sibling(obj: dict[str, Any], name: str, unit: str) -> None:
    """`name_ms` is an int naming the same instant as `name` (seconds or ISO), or both are null."""
    value, ms = obj[name], obj[f"{name}_ms"]
    if value is None:
        assert ms is None, name
        return
    assert type(ms) is int, name
    if unit == "s":
        assert ms == value * 1000, name
    else:
        assert abs(ms - iso_to_ms(value)) <= 1, (name, value, ms)  # ISO strings may drop sub-ms digits
    assert abs(ms - now_ms()) < 48 * 3600 * 1000, (name, ms)  # milliseconds, not seconds or microseconds


def test_epoch_ms() -> None:
    assert epoch_ms(None) is None
    assert epoch_ms(datetime(2026, 1, 1, tzinfo=UTC)) == 1767225600000
    assert epoch_ms(datetime(2026, 1, 1, 0, 0, 0, 1500, tzinfo=UTC)) == 1767225600001


def square(lat: float, lng: float, d: float = 0.02) -> dict[str, Any]:
    ring = [[lng - d, lat - d], [lng + d, lat - d], [lng + d, lat + d], [lng - d, lat + d], [lng - d, lat - d]]
    return {"type": "Polygon", "coordinates": [ring]}


def next_kind(client: HubClient, channel: str, kind: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        push = client.next_push("pub", channel=channel, timeout=max(0.01, deadline - time.time()))
        if push["data"].get("kind") == kind:
            return push


def test_connection_times(live_hub) -> None:
    user = uid()
    c = HubClient(live_hub.url, mint(user, ttl=600))
    assert c.hello is not None
    assert_ms_sibling(c.hello, "expires_at", "s")
    assert_ms_sibling(c.call("refresh", token=mint(user, ttl=900)), "expires_at", "s")
    # Publications and rooms are milliseconds already (no sibling).
    room = c.rpc("rooms.create", members=[uid()], kind="booking")["room"]
    c.call("subscribe", channel=f"chat:{room}")
    c.call("publish", channel=f"chat:{room}", data={"t": 1})
    push = c.next_push("pub", channel=f"chat:{room}")
    assert type(push["ts"]) is int and abs(push["ts"] - now_ms()) < 60_000
    listed = c.rpc("rooms.list")["rooms"][0]
    assert type(listed["created_at"]) is int and abs(listed["created_at"] - now_ms()) < 60_000


def test_call_times(live_hub) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = HubClient(live_hub.url, mint(alice))
    b = HubClient(live_hub.url, mint(bob))
    room = a.rpc("rooms.create", members=[bob], kind="booking")["room"]
    started = a.rpc("calls.start", room=room, media="voice")
    assert_ms_sibling(started["agora"], "expires_at", "s")
    assert_ms_sibling(b.rpc("calls.accept", call=started["call"])["agora"], "expires_at", "s")
    assert_ms_sibling(a.rpc("calls.renew", call=started["call"]), "expires_at", "s")
    a.rpc("calls.end", call=started["call"])
    record = a.rpc("calls.get", call=started["call"])
    for name in ("started_at", "answered_at", "ended_at"):
        assert_ms_sibling(record, name, "iso")
    assert record["started_at_ms"] <= record["answered_at_ms"] <= record["ended_at_ms"]


def test_zone_booking_and_offer_times(live_hub) -> None:
    cat = uid("cat")
    lat, lng = 51.51, -0.13
    ops = HubClient(live_hub.url, mint(uid("ops"), "admin"))
    zone = ops.rpc("zones.create", name="Times", categories=[cat], geometry=square(lat, lng))
    for name in ("created_at", "updated_at"):
        assert_ms_sibling(zone, name, "iso")
    provider = uid("p")
    p = HubClient(live_hub.url, mint(provider, "provider"))
    p.call("subscribe", channel=f"user:{provider}")
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    window = {"from": (at - timedelta(hours=1)).isoformat(), "to": (at + timedelta(hours=1)).isoformat()}
    p.rpc("providers.update", lat=lat + 0.001, lng=lng, available=True, categories=[cat], schedule=[window])
    customer = uid("c")
    c = HubClient(live_hub.url, mint(customer))
    deadline = time.time() + 5
    while not c.rpc("match.find", lat=lat, lng=lng, category=cat)["providers"]:
        assert time.time() < deadline, "the provider never became matchable"
        time.sleep(0.05)
    booking = c.rpc("bookings.create", category=cat, lat=lat, lng=lng, mode="scheduled",
                    at=at.isoformat().replace("+00:00", "Z"))["booking"]
    offer = next_kind(p, f"user:{provider}", "offer")["data"]
    assert_ms_sibling(offer, "expires_at", "iso")
    assert_ms_sibling(offer, "at", "iso")
    assert offer["at_ms"] == int(at.timestamp() * 1000)
    assert_ms_sibling(p.rpc("bookings.get", booking=booking)["offer"], "expires_at", "iso")
    p.rpc("offers.accept", booking=booking)
    seen = c.rpc("bookings.get", booking=booking)
    assert seen["status"] == "assigned"
    for name in ("at", "created_at", "assigned_at", "unfilled_at"):
        assert_ms_sibling(seen, name, "iso")
