"""Jobs and calls end to end over real sockets against a real hub (`python manage.py serve`)."""
from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from tests.rooms.test_agora import verify
from tests.support import HubClient, HubServer, http_json, mint, uid


def connect(hub: Any, user: str, role: str, tenant: str) -> HubClient:
    client = HubClient(hub.url, mint(user, role, tenant=tenant))
    client.call("subscribe", channel=f"user:{user}")
    return client


def refused(client: HubClient, cmd: str, **fields: Any) -> str:
    reply = client.request(cmd, **fields)
    assert not reply["ok"], f"{cmd} {fields} was allowed"
    return str(reply["error"]["code"])


def rpc_refused(client: HubClient, method: str, **params: Any) -> str:
    return refused(client, "rpc", method=method, params=params)


def take(client: HubClient, push: str, channel: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
    """The first push of that type on `channel` whose data matches; pushes that do not match are kept
    for later calls (unlike HubClient.next_push), so the order of waiting does not matter."""
    box: list[dict[str, Any]] = client.__dict__.setdefault("_box", [])

    def fits(msg: dict[str, Any]) -> bool:
        data = msg["data"] if isinstance(msg.get("data"), dict) else {}
        return (msg.get("push") == push and msg.get("channel") == channel
                and all(data.get(k) == v for k, v in match.items()))

    deadline = time.time() + timeout
    while True:
        for i, msg in enumerate(box):
            if fits(msg):
                del box[i]
                return msg
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError(f"no {push} {match} on {channel}")
        try:
            box.append(client.pushes.get(timeout=left))
        except queue.Empty:
            continue


def pub(client: HubClient, channel: str, kind: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
    """The data of the next publication of `kind` on `channel` (matching `match`)."""
    data: dict[str, Any] = take(client, "pub", channel, timeout, kind=kind, **match)["data"]
    return data


@pytest.fixture
def tenant() -> str:
    return uid("t")


@pytest.fixture
def closing() -> Iterator[list[HubClient]]:
    clients: list[HubClient] = []
    yield clients
    for c in clients:
        c.close()


def test_job_from_posting_to_completion(live_hub: Any, tenant: str, closing: list[HubClient]) -> None:
    cust_id, p1_id, p2_id, p3_id = uid("cust"), uid("p1"), uid("p2"), uid("p3")
    cust = connect(live_hub, cust_id, "customer", tenant)
    p1 = connect(live_hub, p1_id, "provider", tenant)
    p2 = connect(live_hub, p2_id, "serviceman", tenant)
    p3 = connect(live_hub, p3_id, "enterprise", tenant)
    stranger = connect(live_hub, uid("s"), "provider", tenant)
    nosy = connect(live_hub, uid("x"), "customer", tenant)
    elsewhere = connect(live_hub, uid("o"), "provider", uid("other"))
    closing.extend([cust, p1, p2, p3, stranger, nosy, elsewhere])

    created = cust.rpc("jobs.create", title="Rewire kitchen", description="Six sockets, one spur",
                       category="electrical", lat=51.5072, lng=-0.1276, budget=200000, currency="GBP")
    assert created["status"] == "open"
    job = created["job"]
    rival = cust.rpc("jobs.create", title="Paint fence", description="", category="decorating",
                     lat=51.5, lng=-0.12)["job"]
    channel = f"job:{job}"
    cust.call("subscribe", channel=channel)

    # Not yet on the job: providers cannot follow it; nobody but the server publishes on it.
    assert refused(p1, "subscribe", channel=channel) == "forbidden"
    assert refused(cust, "publish", channel=channel, data={"kind": "bid"}) == "forbidden"
    assert rpc_refused(nosy, "jobs.bid", job=job, amount=100, currency="GBP") == "forbidden"
    assert rpc_refused(p1, "jobs.bid", job=job, amount=150.5, currency="GBP") == "bad_request"
    assert rpc_refused(p1, "jobs.bid", job=job, amount=150, currency="ABC") == "bad_request"
    assert rpc_refused(elsewhere, "jobs.bid", job=job, amount=100, currency="GBP") == "not_found"

    # Bids arrive live: the job's stream says a bid came, the customer's own channel says what it is;
    # a new bid replaces the old one.
    b1 = p1.rpc("jobs.bid", job=job, amount=180000, currency="GBP", note="two days")
    assert b1["replaces"] is None
    assert pub(cust, channel, "bid") == {"kind": "bid", "job": job, "bid": b1["bid"], "count": 1}
    got = pub(cust, f"user:{cust_id}", "bid.placed")
    assert (got["bid"], got["provider"], got["amount"], got["currency"], got["replaces"]) == (
        b1["bid"], p1_id, 180000, "GBP", None)
    b1b = p1.rpc("jobs.bid", job=job, amount=175000, currency="GBP", note="two days, final")
    assert b1b["replaces"] == b1["bid"]
    assert pub(cust, channel, "bid")["bid"] == b1b["bid"]
    assert pub(cust, f"user:{cust_id}", "bid.placed")["replaces"] == b1["bid"]

    # A query and its answer: the asker hears it on their own channel; the job's stream is for bidders.
    q = p2.rpc("jobs.ask", job=job, text="Is the consumer unit recent?")["query"]
    assert pub(cust, channel, "query")["query"] == q
    answer = cust.rpc("jobs.answer", job=job, query=q, text="Yes, 2021")["answer"]
    assert pub(cust, channel, "answer")["answer"] == answer
    assert pub(p2, f"user:{p2_id}", "query.answered")["answer"] == answer
    assert refused(p2, "subscribe", channel=channel) == "forbidden"
    # Once they bid they follow the job and read what they missed.
    b2 = p2.rpc("jobs.bid", job=job, amount=165000, currency="GBP")
    assert pub(cust, channel, "bid")["bid"] == b2["bid"]
    head = p2.call("subscribe", channel=channel)
    kinds = [item["data"]["kind"] for item in p2.call("history", channel=channel)["pubs"]]
    assert kinds == ["bid", "bid", "query", "answer", "bid"]
    b3 = p3.rpc("jobs.bid", job=job, amount=190000, currency="GBP", note="crew of two")
    assert pub(cust, channel, "bid")["bid"] == b3["bid"]
    p1.call("subscribe", channel=channel)
    p3.call("subscribe", channel=channel)

    comment = cust.rpc("jobs.comment", job=job, text="Access from 8am")
    assert comment["comment"]
    assert pub(p2, channel, "comment")["text"] == "Access from 8am"

    # The stranger is refused at every step.
    assert refused(stranger, "subscribe", channel=channel) == "forbidden"
    assert refused(stranger, "history", channel=channel) == "forbidden"
    assert refused(stranger, "publish", channel=channel, data={"kind": "comment"}) == "forbidden"
    assert rpc_refused(stranger, "jobs.comment", job=job, text="hello") == "forbidden"
    assert rpc_refused(stranger, "jobs.accept", job=job, bid=b2["bid"]) == "forbidden"
    assert rpc_refused(stranger, "jobs.answer", job=job, query=q, text="no") == "forbidden"
    assert rpc_refused(stranger, "jobs.start", job=job) == "forbidden"
    assert rpc_refused(stranger, "jobs.complete", job=job) == "forbidden"
    assert rpc_refused(stranger, "jobs.cancel", job=job, reason="mine now") == "forbidden"
    assert rpc_refused(nosy, "jobs.accept", job=job, bid=b2["bid"]) == "forbidden"
    assert rpc_refused(p1, "jobs.accept", job=job, bid=b1b["bid"]) == "forbidden"
    assert rpc_refused(p1, "jobs.start", job=job) == "forbidden"  # nothing accepted yet
    assert rpc_refused(cust, "jobs.start", job=job) == "forbidden"
    assert rpc_refused(cust, "jobs.complete", job=job) == "conflict"  # not started
    assert rpc_refused(cust, "jobs.accept", job=job, bid=b1["bid"]) == "conflict"  # replaced bid

    # The customer picks p2: the winner and the others hear on their user channels.
    accepted = cust.rpc("jobs.accept", job=job, bid=b2["bid"])
    assert accepted == {"job": job, "status": "accepted", "bid": b2["bid"], "provider": p2_id}
    assert pub(p2, f"user:{p2_id}", "bid.accepted")["bid"] == b2["bid"]
    assert pub(p1, f"user:{p1_id}", "bid.rejected")["bid"] == b1b["bid"]
    assert pub(p3, f"user:{p3_id}", "bid.rejected")["bid"] == b3["bid"]
    status = pub(p1, channel, "status")
    assert (status["status"], status["from_status"], status["by"]) == ("accepted", "open", cust_id)
    assert rpc_refused(p1, "jobs.bid", job=job, amount=100, currency="GBP") == "conflict"
    assert rpc_refused(cust, "jobs.accept", job=job, bid=b3["bid"]) == "conflict"
    assert rpc_refused(p1, "jobs.start", job=job) == "forbidden"  # the loser

    # The rival job: bid on, then cancelled with a reason.
    rb = p1.rpc("jobs.bid", job=rival, amount=30000, currency="GBP")["bid"]
    p1.call("subscribe", channel=f"job:{rival}")
    assert rpc_refused(p1, "jobs.cancel", job=rival, reason="no") == "forbidden"
    out = cust.rpc("jobs.cancel", job=rival, reason="Doing it myself")
    assert out == {"job": rival, "status": "cancelled"}
    cancelled = pub(p1, f"job:{rival}", "status")
    assert (cancelled["status"], cancelled["reason"], cancelled["from_status"]) == (
        "cancelled", "Doing it myself", "open")
    assert rpc_refused(cust, "jobs.accept", job=rival, bid=rb) == "conflict"
    assert rpc_refused(p1, "jobs.bid", job=rival, amount=1, currency="GBP") == "conflict"

    # Work starts (the accepted provider) and completes (the owner).
    assert p2.rpc("jobs.start", job=job) == {"job": job, "status": "in_progress"}
    assert pub(cust, channel, "status", status="in_progress")["by"] == p2_id
    assert cust.rpc("jobs.complete", job=job) == {"job": job, "status": "completed"}
    done = pub(p3, channel, "status", status="completed")
    assert (done["from_status"], done["by"]) == ("in_progress", cust_id)
    assert rpc_refused(cust, "jobs.cancel", job=job, reason="late") == "conflict"
    assert rpc_refused(p2, "jobs.comment", job=job, text="thanks") == "conflict"

    # Durable and recoverable: a reconnecting bidder resumes from where it was.
    again = connect(live_hub, p2_id, "serviceman", tenant)
    closing.append(again)
    since = {"offset": head["offset"], "epoch": head["epoch"]}
    resumed = again.call("subscribe", channel=channel, since=since)
    assert resumed["recovered"] is True
    assert [p["data"]["kind"] for p in resumed["pubs"]] == ["bid", "comment", "status", "status", "status"]
    # HTTP serves the same methods.
    status_code, body = http_json("POST", f"{live_hub.http}/api/jobs.get", {"job": job},
                                  token=mint(cust_id, "customer", tenant=tenant))
    assert status_code == 200 and body["result"]["status"] == "completed"
    assert body["result"]["provider"] == p2_id
    status_code, body = http_json("POST", f"{live_hub.http}/api/jobs.get", {"job": job},
                                  token=mint(uid("s"), "provider", tenant=tenant))
    assert status_code == 403 and body["error"]["code"] == "forbidden"


def test_matched_providers_hear_of_new_jobs(live_hub: Any, tenant: str, closing: list[HubClient]) -> None:
    """job.new reaches providers the matcher finds (skipped while the matcher is not in this build)."""
    admin_id = uid("adm")
    category = f"jobs{uid('c')}"
    square = {"type": "Polygon", "coordinates": [[[-0.3, 51.4], [0.1, 51.4], [0.1, 51.6], [-0.3, 51.6],
                                                  [-0.3, 51.4]]]}
    zone = {"name": "London", "categories": [category], "geometry": square}
    code, body = http_json("POST", f"{live_hub.http}/api/zones", zone,
                           token=mint(admin_id, "admin", tenant=tenant))
    assert code == 201, (code, body)
    prov_id = uid("p")
    prov = connect(live_hub, prov_id, "provider", tenant)
    cust = connect(live_hub, uid("c"), "customer", tenant)
    closing.extend([prov, cust])
    reply = prov.request("rpc", method="providers.update",
                         params={"lat": 51.5, "lng": -0.12, "available": True, "categories": [category]})
    assert reply["ok"], reply
    deadline = time.time() + 10
    while True:  # the provider index may settle asynchronously
        out = cust.rpc("jobs.create", title="Unblock drain", description="", category=category, lat=51.5,
                       lng=-0.121, budget=9000)
        if out["notified"] or time.time() > deadline:
            break
        time.sleep(0.5)
    note = pub(prov, f"user:{prov_id}", "job.new", job=out["job"])
    # Not yet chosen: the job's area (a resolution-8 cell's rounded centre), not the customer's point.
    from matching.privacy import job_area

    assert note == {"kind": "job.new", "job": out["job"], "title": "Unblock drain", "category": category,
                    **job_area(51.5, -0.121), "budget": 9000, "currency": "GBP"}


def test_call_started_accepted_renewed_ended(live_hub: Any, tenant: str, closing: list[HubClient]) -> None:
    alice_id, bob_id, eve_id = uid("alice"), uid("bob"), uid("eve")
    alice = connect(live_hub, alice_id, "customer", tenant)
    bob = connect(live_hub, bob_id, "provider", tenant)
    eve = connect(live_hub, eve_id, "customer", tenant)
    closing.extend([alice, bob, eve])
    room = alice.rpc("rooms.create", members=[bob_id], kind="direct")["room"]

    assert rpc_refused(eve, "calls.start", room=room, media="video") == "forbidden"
    assert rpc_refused(alice, "calls.start", room=room, media="hologram") == "bad_request"
    assert rpc_refused(alice, "calls.accept", call="nosuchcall") == "not_found"

    started = alice.rpc("calls.start", room=room, media="video")
    call, ag = started["call"], started["agora"]
    assert set(ag) >= {"app_id", "channel", "uid", "token", "expires_at"}
    assert ag["development"] is True and ag["app_id"] == settings.AGORA_APP_ID
    verify(ag["token"], ag["app_id"], settings.AGORA_APP_CERTIFICATE, ag["channel"], ag["uid"])
    assert ag["expires_at"] > time.time() + 60
    invite = pub(bob, f"user:{bob_id}", "call.invite")
    assert (invite["call"], invite["room"], invite["media"], invite["from"], invite["busy"]) == (
        call, room, "video", alice_id, False)
    channel = f"call:{call}"
    sub = alice.call("subscribe", channel=channel)
    assert sub["offset"] >= 1

    # The stranger: no token, no channel, no signalling, no ending.
    assert refused(eve, "subscribe", channel=channel) == "forbidden"
    assert refused(eve, "signal", channel=channel, data={"sdp": "x"}) == "forbidden"
    assert refused(eve, "publish", channel=channel, data={"kind": "call.ended"}) == "forbidden"
    for method in ("calls.accept", "calls.renew", "calls.decline", "calls.end"):
        assert rpc_refused(eve, method, call=call) == "forbidden", method

    accepted = bob.rpc("calls.accept", call=call)
    assert accepted["call"] == call and accepted["agora"]["channel"] == ag["channel"]
    assert accepted["agora"]["uid"] != ag["uid"]
    verify(accepted["agora"]["token"], ag["app_id"], settings.AGORA_APP_CERTIFICATE, ag["channel"],
           accepted["agora"]["uid"])
    assert pub(alice, channel, "call.accepted")["user"] == bob_id
    assert pub(alice, f"user:{alice_id}", "call.accepted")["user"] == bob_id

    # The apps negotiate over signal on call:<id>; clients never publish there.
    bob.call("subscribe", channel=channel)
    bob.call("signal", channel=channel, data={"type": "offer", "sdp": "v=0"})
    sig = take(alice, "signal", channel)
    assert sig["from"] == bob_id and sig["data"] == {"type": "offer", "sdp": "v=0"}
    assert refused(bob, "publish", channel=channel, data={"kind": "x"}) == "forbidden"

    renewed = bob.rpc("calls.renew", call=call)
    assert renewed["uid"] == accepted["agora"]["uid"]
    assert renewed["expires_at"] >= accepted["agora"]["expires_at"]
    verify(renewed["token"], ag["app_id"], settings.AGORA_APP_CERTIFICATE, ag["channel"], renewed["uid"])

    ended = alice.rpc("calls.end", call=call)
    assert ended["outcome"] == "ended" and ended["duration_s"] >= 0
    for client in (alice, bob):
        got = pub(client, channel, "call.ended")
        assert (got["outcome"], got["by"]) == ("ended", alice_id)
    for method in ("calls.accept", "calls.renew", "calls.end", "calls.decline"):
        assert rpc_refused(bob, method, call=call) == "conflict", method
    record = bob.rpc("calls.get", call=call)
    assert record["outcome"] == "ended" and record["answered_at"] and record["ended_at"]


@pytest.fixture
def quick_ring_hub() -> Iterator[HubServer]:
    server = HubServer(env={"HUB_CALL_RING_S": "2"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_unanswered_call_is_missed(quick_ring_hub: HubServer, tenant: str, closing: list[HubClient]) -> None:
    alice_id, bob_id = uid("alice"), uid("bob")
    alice = connect(quick_ring_hub, alice_id, "provider", tenant)
    bob = connect(quick_ring_hub, bob_id, "customer", tenant)
    closing.extend([alice, bob])
    room = alice.rpc("rooms.create", members=[bob_id], kind="direct")["room"]
    call = alice.rpc("calls.start", room=room, media="voice")["call"]
    assert pub(bob, f"user:{bob_id}", "call.invite")["call"] == call
    alice.call("subscribe", channel=f"call:{call}")
    missed = pub(bob, f"user:{bob_id}", "call.missed", timeout=15)
    assert (missed["call"], missed["from"], missed["user"], missed["reason"]) == (call, alice_id, bob_id,
                                                                                  "timeout")
    assert pub(alice, f"user:{alice_id}", "call.missed", timeout=5)["call"] == call
    assert pub(alice, f"call:{call}", "call.missed", timeout=5)["user"] == bob_id
    assert pub(alice, f"call:{call}", "call.ended", timeout=5)["outcome"] == "missed"
    assert rpc_refused(bob, "calls.accept", call=call) == "conflict"
    assert rpc_refused(alice, "calls.end", call=call) == "conflict"
