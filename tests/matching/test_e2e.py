"""End to end over real hub processes: two `manage.py serve` on one database (and Redis when set).

Providers report over one process, a customer books over the other (with Redis; the same one
without), offers arrive as `user:` pubs, and a dozen accepts fired at the same instant on both
processes admit exactly `crew`.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from tests.support import HubClient, HubServer, ReplyError, http_json, mint, own_database


def uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def next_pub(c: HubClient, kind: str, timeout: float) -> dict[str, Any]:
    """The next `pub` push whose data.kind is `kind` (others are skipped)."""
    deadline = time.time() + timeout
    while True:
        push = c.next_push("pub", timeout=max(0.01, deadline - time.time()))
        if isinstance(push.get("data"), dict) and push["data"].get("kind") == kind:
            return push


def wait_pub(c: HubClient, channel: str, kind: str, timeout: float) -> dict[str, Any]:
    """A pub of that kind: pushed (with Redis every process fans out every pub), else from history.

    The embedded default has no cross-process fan-out, and with two processes the sweep or the
    winning accept may run in the other one; the pub is still stored durably, so read it back.
    """
    if settings.REDIS_URL:
        return next_pub(c, kind, timeout)
    deadline = time.time() + timeout
    while time.time() < deadline:
        hist = c.call("history", channel=channel)
        for p in hist["pubs"]:
            if isinstance(p.get("data"), dict) and p["data"].get("kind") == kind:
                return p
        time.sleep(0.1)
    raise TimeoutError(f"no {kind} pub on {channel}")


def square(lat: float, lng: float, d: float = 0.05) -> dict[str, Any]:
    ring = [[lng - d, lat - d], [lng + d, lat - d], [lng + d, lat + d], [lng - d, lat + d], [lng - d, lat - d]]
    return {"type": "Polygon", "coordinates": [ring]}


@pytest.fixture(scope="module")
def hubs() -> Iterator[tuple[HubServer, HubServer]]:
    # Their own database: the session hub (default 30 s offer TTL) would otherwise sweep these
    # bookings too, and an offer it re-made would outlive this module's 2 s TTL.
    with own_database() as db:
        env = {"HUB_OFFER_FANOUT": "4", "HUB_OFFER_TTL_S": "2", "DATABASE_URL": db}
        a, b = HubServer(env=env), HubServer(env=env)
        a.start()
        try:
            b.start()
        except Exception:
            a.stop()
            raise
        yield a, b
        a.stop()
        b.stop()


def test_zones_rest_and_cross_process_accept_race(hubs: tuple[HubServer, HubServer]) -> None:
    a, b = hubs
    cat = uid("cat")
    lat, lng = 51.50, -0.12
    with HubClient(a.url, mint("ops", "admin")) as ops:
        zone = ops.rpc("zones.create", name="Westminster", categories=[cat], geometry=square(lat, lng))

    users = [uid("p") for _ in range(12)]
    clients: list[HubClient] = []
    try:
        for i, u in enumerate(users):
            c = HubClient(a.url, mint(u, "provider"))
            clients.append(c)
            c.call("subscribe", channel=f"user:{u}")
            c.rpc("providers.update", lat=lat + 0.0005 * (i + 1), lng=lng, available=True, categories=[cat])
        # With Redis the other process sees them (within a second); without, book where they are.
        book_on = b if settings.REDIS_URL else a
        customer = uid("c")
        with HubClient(book_on.url, mint(customer, "customer")) as cust:
            cust.call("subscribe", channel=f"user:{customer}")
            deadline = time.time() + 3
            found: dict[str, Any] = {}
            while time.time() < deadline:
                found = cust.rpc("match.find", lat=lat, lng=lng, category=cat, k=20)
                if len(found["providers"]) == 12:
                    break
                time.sleep(0.05)
            # A customer sees cell-centre distances (rounded to 100 m) and their order, not the exact one.
            assert found["zone"] == zone["id"] and sorted(p["user"] for p in found["providers"]) == sorted(users)
            assert all(p["distance_m"] % 100 == 0 for p in found["providers"])
            booking = cust.rpc("bookings.create", category=cat, lat=lat, lng=lng, mode="on_demand", crew=3)
            assert booking["status"] == "offering"
            for c in clients:
                push = next_pub(c, "offer", 5)
                assert push["data"]["booking"] == booking["booking"]
                assert push["from"] is None
            # Half the accepts on each process, all released at once.
            accepters = [HubClient((a if i % 2 else b).url, mint(u, "provider")) for i, u in enumerate(users)]
            try:
                barrier = threading.Barrier(len(accepters))
                outcomes: list[str] = []
                lock = threading.Lock()

                def go(c: HubClient) -> None:
                    barrier.wait()
                    try:
                        c.rpc("offers.accept", booking=booking["booking"])
                        result = "ok"
                    except ReplyError as exc:
                        result = str(exc.code)
                    with lock:
                        outcomes.append(result)

                threads = [threading.Thread(target=go, args=(c,)) for c in accepters]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(30)
            finally:
                for c in accepters:
                    c.close()
            assert Counter(outcomes) == {"ok": 3, "conflict": 9}
            assigned = wait_pub(cust, f"user:{customer}", "booking.assigned", 5)
            assert len(assigned["data"]["providers"]) == 3
            assert set(assigned["data"]["providers"]) <= set(users)
    finally:
        for c in clients:
            c.close()


def test_offer_expiry_reoffers_via_server_sweep(hubs: tuple[HubServer, HubServer]) -> None:
    a, _b = hubs
    cat = uid("cat")
    lat, lng = 51.40, -0.30
    status, _zone = http_json("POST", a.http + "/api/zones.create",
                              {"name": "Kingston", "categories": [cat], "geometry": square(lat, lng)},
                              token=mint("ops", "admin"))
    assert status == 200
    users = [uid("p") for _ in range(5)]
    clients = [HubClient(a.url, mint(u, "serviceman")) for u in users]
    try:
        for i, (u, c) in enumerate(zip(users, clients, strict=True)):
            c.call("subscribe", channel=f"user:{u}")
            c.rpc("providers.update", lat=lat + 0.001 * (i + 1), lng=lng, available=True, categories=[cat])
        customer = uid("c")
        with HubClient(a.url, mint(customer, "customer")) as cust:
            cust.call("subscribe", channel=f"user:{customer}")
            booking = cust.rpc("bookings.create", category=cat, lat=lat, lng=lng, mode="on_demand")
            assert booking["offered"] == 4
            # Nobody answers: after the 2 s TTL the sweep offers the fifth, then gives up.
            push = wait_pub(clients[4], f"user:{users[4]}", "offer", 8)
            assert push["data"]["booking"] == booking["booking"]
            with pytest.raises(ReplyError) as err:
                clients[0].rpc("offers.accept", booking=booking["booking"])
            assert err.value.code == "conflict"
            unfilled = wait_pub(cust, f"user:{customer}", "booking.unfilled", 8)
            assert unfilled["data"]["booking"] == booking["booking"]
    finally:
        for c in clients:
            c.close()


def test_zones_rest_routes_on_a_real_server(hubs: tuple[HubServer, HubServer]) -> None:
    a, b = hubs
    admin = mint("ops", "admin")
    status, body = http_json("GET", a.http + "/api/zones", token=admin)
    assert status == 200 and "zones" in body
    cat = uid("cat")
    status, zone = http_json("POST", a.http + "/api/zones",
                             {"name": "Lambeth", "categories": [cat], "geometry": square(51.47, -0.12)}, token=admin)
    assert status == 201, zone
    status, got = http_json("GET", b.http + f"/api/zones/{zone['id']}", token=admin)
    assert status == 200 and got["name"] == "Lambeth"
    status, err = http_json("POST", a.http + "/api/zones",
                            {"name": "Bad", "categories": [cat], "geometry": {"type": "Point", "coordinates": [0, 0]}},
                            token=admin)
    assert status == 400 and err["error"]["code"] == "bad_request"
    status, _ = http_json("DELETE", b.http + f"/api/zones/{zone['id']}", token=admin)
    assert status == 200


BOWTIE = {"type": "Polygon", "coordinates": [[[0.0, 51.0], [1.0, 52.0], [1.0, 51.0], [0.0, 52.0], [0.0, 51.0]]]}


def test_a_bad_stored_zone_is_skipped_at_start_up_and_reported_on_readyz() -> None:
    from matching.models import Zone

    cat = uid("cat")
    good = Zone.objects.create(name="Good", categories=[cat], geometry=square(51.45, -0.2), tenant="t1")
    bad = Zone.objects.create(name="Bad", categories=[cat], geometry=BOWTIE, tenant="t1")  # bypasses validation
    server = HubServer()
    try:
        server.start()
        status, body = http_json("GET", server.http + "/readyz")
        # Reported, not fatal: every process would skip the same zone, so none leaves the balancer.
        assert status == 200 and body["ok"] is True, body
        assert body["checks"]["zones"] is False and bad.id in body["bad_zones"]
        with HubClient(server.url, mint(uid("c"), "customer")) as c:
            assert c.rpc("match.find", lat=51.45, lng=-0.2, category=cat) == {
                "zone": good.id, "providers": [], "reason": "no_provider_available"}
        assert f"zone {bad.id} (version 1) cannot be indexed; skipped" in server.log()
    finally:
        server.stop()
        Zone.objects.filter(id__in=[good.id, bad.id]).delete()
