"""One user cannot flood providers with offers or jobs, rivals with bids, or a room with call invites.

Two live hub processes share the database and Redis, with small domain budgets; every refusal is
checked to have changed nothing (no row, no push), and to touch only that user in that tenant.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from matching.models import Booking
from rooms.models import Bid, Call, Job
from tests.support import HubClient, HubServer, ReplyError, mint, running_hubs, uid

LIMITS = {
    "HUB_MAX_OPEN_BOOKINGS_PER_USER": "2",
    "HUB_MAX_OPEN_JOBS_PER_USER": "2",
    "HUB_BIDS_PER_MIN": "3",
    "HUB_CALL_INVITES_PER_MIN": "6",
    "HUB_MAX_CALL_PEOPLE": "4",
    "HUB_MATCH_FIND_PER_MIN": "5",
    # These tests send one user's commands through both processes in quick succession; the
    # per-user command budget (tests/security/test_budgets.py) would refuse some of them first.
    "HUB_USER_COMMANDS_PER_S": "0",
}
LAT, LNG = 51.5, -0.12


@pytest.fixture(scope="module")
def hubs() -> Iterator[tuple[HubServer, HubServer]]:
    with running_hubs(2, LIMITS) as (a, b):
        yield a, b


@pytest.fixture()
def closing() -> Iterator[list[HubClient]]:
    clients: list[HubClient] = []
    yield clients
    for c in clients:
        c.close()


def client(closing: list[HubClient], hub: HubServer, user: str, role: str = "customer",
           tenant: str = "t1", follow: bool = True) -> HubClient:
    """A connected client, subscribed to its own user channel unless `follow` is false."""
    c = HubClient(hub.url, mint(user, role, tenant))
    closing.append(c)
    if follow:
        c.call("subscribe", channel=f"user:{user}")
    return c


def refusal(c: HubClient, method: str, **params: Any) -> dict[str, Any]:
    with pytest.raises(ReplyError) as info:
        c.rpc(method, **params)
    return info.value.error


def pubs(c: HubClient, kind: str, wait: float = 1.0) -> list[dict[str, Any]]:
    """Data of every `pub` of that kind that reaches `c` within `wait` seconds (others dropped)."""
    out: list[dict[str, Any]] = []
    deadline = time.time() + wait
    while (left := deadline - time.time()) > 0:
        try:
            msg = c.pushes.get(timeout=left)
        except queue.Empty:
            break
        data = msg.get("data")
        if msg.get("push") == "pub" and isinstance(data, dict) and data.get("kind") == kind:
            out.append(data)
    return out


def at_once(calls: list[tuple[HubClient, str, dict[str, Any]]]) -> Counter[str]:
    """Fire the rpc calls from one thread each, released together; count the outcomes."""
    barrier = threading.Barrier(len(calls))
    codes: list[str] = []
    lock = threading.Lock()

    def go(c: HubClient, method: str, params: dict[str, Any]) -> None:
        barrier.wait()
        try:
            c.rpc(method, **params)
            code = "ok"
        except ReplyError as exc:
            code = str(exc.code)
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=go, args=call) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return Counter(codes)


def square(d: float = 0.05) -> dict[str, Any]:
    ring = [[LNG - d, LAT - d], [LNG + d, LAT - d], [LNG + d, LAT + d], [LNG - d, LAT + d], [LNG - d, LAT - d]]
    return {"type": "Polygon", "coordinates": [ring]}


def served_area(closing: list[HubClient], hubs: tuple[HubServer, HubServer],
                providers: int) -> tuple[str, list[HubClient]]:
    """A fresh category with a zone and available providers (subscribed to their user channels),
    visible to both processes' matchers."""
    a, b = hubs
    cat = uid("cat")
    client(closing, a, uid("ops"), "admin", follow=False).rpc(
        "zones.create", name="budget zone", categories=[cat], geometry=square())
    found: list[HubClient] = []
    for i in range(providers):
        p = client(closing, a, uid("p"), "provider")
        p.rpc("providers.update", lat=LAT + 0.001 * (i + 1), lng=LNG, available=True, categories=[cat])
        found.append(p)
    deadline = time.time() + 15  # generous: the machine may be busy
    for hub in (a, b):  # the other process learns of providers through Redis within a second
        while True:
            seen = client(closing, hub, uid("ops"), "admin", follow=False).rpc(
                "match.find", lat=LAT, lng=LNG, category=cat, k=20)
            if len(seen["providers"]) == providers:
                break
            assert time.time() < deadline, "providers never reached the matcher"
            time.sleep(0.1)
    return cat, found


# --- open bookings per customer -------------------------------------------------------------------

def test_open_bookings_are_capped_per_customer(hubs: tuple[HubServer, HubServer],
                                               closing: list[HubClient]) -> None:
    a, b = hubs
    cat, (p1, p2) = served_area(closing, hubs, 2)
    user = uid("c")
    cust = client(closing, a, user)
    book = {"category": cat, "lat": LAT, "lng": LNG, "mode": "on_demand"}
    made = [cust.rpc("bookings.create", **book) for _ in range(2)]
    assert [m["status"] for m in made] == ["offering", "offering"]

    error = refusal(client(closing, b, user), "bookings.create", **book)
    assert error["code"] == "conflict" and "open bookings" in error["message"]
    # Nothing was stored and no provider heard of a third booking.
    assert Booking.objects.filter(customer=user, tenant="t1").count() == 2
    ids = {m["booking"] for m in made}
    for p in (p1, p2):
        assert {o["booking"] for o in pubs(p, "offer")} == ids

    # Per customer and per tenant: someone else, and the same id in another tenant, still book.
    assert client(closing, a, uid("c")).rpc("bookings.create", **book)["status"] == "offering"
    # (t2 has no providers here: its booking is made, and unfilled, not refused.)
    assert client(closing, b, user, tenant="t2").rpc("bookings.create", **book)["status"] in ("offering", "unfilled")

    # Only open bookings count: once one is assigned, the customer may book again.
    p1.rpc("offers.accept", booking=made[0]["booking"])
    assert cust.rpc("bookings.create", **book)["booking"]
    assert refusal(cust, "bookings.create", **book)["code"] == "conflict"


def test_concurrent_bookings_cannot_pass_the_cap_together(hubs: tuple[HubServer, HubServer],
                                                          closing: list[HubClient]) -> None:
    a, b = hubs
    cat, _providers = served_area(closing, hubs, 1)
    user = uid("c")
    book = {"category": cat, "lat": LAT, "lng": LNG, "mode": "on_demand"}
    sockets = [client(closing, hub, user, follow=False) for hub in (a, b, a, b, a, b)]
    outcomes = at_once([(c, "bookings.create", book) for c in sockets])
    assert outcomes == {"ok": 2, "conflict": 4}
    assert Booking.objects.filter(customer=user, tenant="t1", status="offering").count() == 2


# --- open custom jobs per customer ----------------------------------------------------------------

def test_open_jobs_are_capped_per_customer(hubs: tuple[HubServer, HubServer], closing: list[HubClient]) -> None:
    a, b = hubs
    cat, (p,) = served_area(closing, hubs, 1)
    user = uid("c")
    cust = client(closing, a, user)
    post = {"title": "Fix the fence", "description": "", "category": cat, "lat": LAT, "lng": LNG}
    made = [cust.rpc("jobs.create", **post) for _ in range(2)]
    assert [m["notified"] for m in made] == [1, 1]

    error = refusal(client(closing, b, user), "jobs.create", **post)
    assert error["code"] == "conflict" and "open jobs" in error["message"]
    assert Job.objects.filter(owner=user, tenant="t1").count() == 2
    assert {n["job"] for n in pubs(p, "job.new")} == {m["job"] for m in made}

    assert client(closing, a, uid("c")).rpc("jobs.create", **post)["job"]
    assert client(closing, b, user, tenant="t2").rpc("jobs.create", **post)["job"]

    # A cancelled job no longer counts.
    cust.rpc("jobs.cancel", job=made[0]["job"], reason="changed my mind")
    assert cust.rpc("jobs.create", **post)["status"] == "open"
    assert refusal(cust, "jobs.create", **post)["code"] == "conflict"

    # Two processes at once cannot both take the last place.
    racer = uid("c")
    sockets = [client(closing, hub, racer, follow=False) for hub in (a, b, a, b, a, b)]
    assert at_once([(c, "jobs.create", post) for c in sockets]) == {"ok": 2, "conflict": 4}
    assert Job.objects.filter(owner=racer, status="open").count() == 2


# --- bids per provider per minute -----------------------------------------------------------------

def test_bids_per_provider_per_minute(hubs: tuple[HubServer, HubServer], closing: list[HubClient]) -> None:
    a, b = hubs
    post = {"title": "Paint the hall", "description": "", "category": uid("cat"), "lat": LAT, "lng": LNG}
    owner = client(closing, a, uid("c"))
    job = owner.rpc("jobs.create", **post)["job"]
    owner.call("subscribe", channel=f"job:{job}")
    provider = uid("p")
    on_a, on_b = client(closing, a, provider, "provider"), client(closing, b, provider, "provider")
    for i, c in enumerate((on_a, on_b, on_a)):  # one budget over both processes
        c.rpc("jobs.bid", job=job, amount=1000 + i, currency="GBP")

    error = refusal(on_b, "jobs.bid", job=job, amount=900, currency="GBP")
    assert error["code"] == "rate_limited" and error["retry_after_ms"] > 0
    assert Bid.objects.filter(job_id=job, provider=provider).count() == 3
    assert [d["amount"] for d in pubs(owner, "bid.placed")] == [1000, 1001, 1002]  # the owner heard no fourth
    assert Bid.objects.get(job_id=job, provider=provider, status="live").amount == 1002

    # Another provider, and the same id in another tenant, still bid.
    assert client(closing, a, uid("p"), "provider").rpc("jobs.bid", job=job, amount=950, currency="GBP")["bid"]
    elsewhere = client(closing, b, uid("c"), tenant="t2").rpc("jobs.create", **post)["job"]
    assert client(closing, b, provider, "provider", tenant="t2").rpc(
        "jobs.bid", job=elsewhere, amount=950, currency="GBP")["bid"]


# --- calls: people per call, invites per minute ---------------------------------------------------

def test_a_call_rings_at_most_max_call_people(hubs: tuple[HubServer, HubServer],
                                             closing: list[HubClient]) -> None:
    a, _b = hubs
    alice = uid("a")
    others = [uid("m") for _ in range(4)]
    watchers = [client(closing, a, m) for m in others]
    caller = client(closing, a, alice)
    room = caller.rpc("rooms.create", members=others, kind="booking")["room"]
    error = refusal(caller, "calls.start", room=room, media="voice")
    assert error["code"] == "too_large" and "at most 4 people" in error["message"]
    assert not Call.objects.filter(room_id=room).exists()
    for w in watchers:
        assert pubs(w, "call.invite", wait=0.3) == []
    small = caller.rpc("rooms.create", members=others[:3], kind="booking")["room"]
    assert caller.rpc("calls.start", room=small, media="voice")["call"]


def test_call_invites_per_minute_count_each_person_rung(hubs: tuple[HubServer, HubServer],
                                                        closing: list[HubClient]) -> None:
    a, b = hubs
    alice = uid("a")
    others = [uid("m") for _ in range(3)]
    watchers = [client(closing, a, m) for m in others]
    on_a, on_b = client(closing, a, alice), client(closing, b, alice)
    room = on_a.rpc("rooms.create", members=others, kind="booking")["room"]
    made = [on_a.rpc("calls.start", room=room, media="voice")["call"],
            on_b.rpc("calls.start", room=room, media="voice")["call"]]  # 6 people rung: the budget

    error = refusal(on_a, "calls.start", room=room, media="video")
    assert error["code"] == "rate_limited" and error["retry_after_ms"] > 0
    assert set(Call.objects.filter(room_id=room).values_list("id", flat=True)) == set(made)
    for w in watchers:
        assert sorted(i["call"] for i in pubs(w, "call.invite")) == sorted(made)

    # A member of the same room has their own budget; so has the same id in another tenant.
    assert client(closing, b, others[0]).rpc("calls.start", room=room, media="voice")["call"]
    t2 = client(closing, b, alice, tenant="t2")
    room2 = t2.rpc("rooms.create", members=[uid("m")], kind="direct")["room"]
    assert t2.rpc("calls.start", room=room2, media="voice")["call"]


def test_the_reported_flood_is_refused_by_default(live_hub: HubServer, closing: list[HubClient]) -> None:
    """Three calls.start on a room of 100 made-up ids once rang 300 invites; the default cap
    (8 people) refuses each one and rings nobody."""
    caller = client(closing, live_hub, uid("a"))
    room = caller.rpc("rooms.create", members=[uid("ghost") for _ in range(100)], kind="booking")["room"]
    for _ in range(3):
        assert refusal(caller, "calls.start", room=room, media="video")["code"] == "too_large"
    assert not Call.objects.filter(room_id=room).exists()


# --- match.find per user, shared by processes -----------------------------------------------------

def test_match_find_budget_is_shared_across_processes(hubs: tuple[HubServer, HubServer],
                                                      closing: list[HubClient]) -> None:
    a, b = hubs
    user = uid("c")
    on_a, on_b = client(closing, a, user, follow=False), client(closing, b, user, follow=False)
    find = {"lat": LAT, "lng": LNG, "category": uid("cat")}
    replies = [c.request("rpc", method="match.find", params=find) for _ in range(4) for c in (on_a, on_b)]
    ok = [r for r in replies if r["ok"]]
    refused = [r["error"] for r in replies if not r["ok"]]
    # 5 a minute for the user, not 5 per process (which would have let all 8 through).
    assert len(ok) == 5, replies
    assert all(e["code"] == "rate_limited" and e["retry_after_ms"] > 0 for e in refused)

    assert client(closing, b, uid("c"), follow=False).rpc("match.find", **find)["providers"] == []
    assert client(closing, a, user, tenant="t2", follow=False).rpc("match.find", **find)["providers"] == []
