"""Bid privacy (protocol revision 1.1): a bid's amount and note reach the job's owner and the provider
who made it, nobody else, through every path: pushes, `subscribe` with `since`, `history`,
`jobs.get` over the socket and over HTTP. Rivals and the job's other participants learn only that
bids exist; a provider who only asked a question does not follow the job at all.

Over real sockets against the session's live hub.
"""
from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import HubClient, ReplyError, http_json, mint, uid


@pytest.fixture
def tenant() -> str:
    return uid("t")


@pytest.fixture
def closing() -> Iterator[list[HubClient]]:
    clients: list[HubClient] = []
    yield clients
    for c in clients:
        c.close()


class Person:
    """A connected user following their own `user:` channel, who remembers every push it got."""

    def __init__(self, hub: Any, role: str, tenant: str, closing: list[HubClient], name: str = "u") -> None:
        self.hub, self.role, self.tenant, self.closing = hub, role, tenant, closing
        self.user = uid(name)
        self.token = mint(self.user, role, tenant=tenant)
        self.sock = self.open()
        self.sock.call("subscribe", channel=f"user:{self.user}")
        self.seen: list[dict[str, Any]] = []

    def open(self) -> HubClient:
        sock = HubClient(self.hub.url, self.token)
        self.closing.append(sock)
        return sock

    def rpc(self, method: str, **params: Any) -> Any:
        return self.sock.rpc(method, **params)

    def refused(self, cmd: str, **fields: Any) -> str:
        with pytest.raises(ReplyError) as info:
            self.sock.call(cmd, **fields)
        return str(info.value.code)

    def wait(self, channel: str, kind: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        """The data of a pub of `kind` on `channel` (matching `match`), from what came or comes."""
        deadline = time.time() + timeout
        while True:
            for msg in self.seen:
                data = msg.get("data")
                if (msg.get("push") == "pub" and msg.get("channel") == channel and isinstance(data, dict)
                        and data.get("kind") == kind and all(data.get(k) == v for k, v in match.items())):
                    return data
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError(f"{self.user}: no {kind} {match} on {channel}")
            try:
                self.seen.append(self.sock.pushes.get(timeout=left))
            except queue.Empty:
                continue

    def drain(self, quiet: float = 0.5) -> list[dict[str, Any]]:
        """Every push so far, after `quiet` seconds with nothing new."""
        while True:
            try:
                self.seen.append(self.sock.pushes.get(timeout=quiet))
            except queue.Empty:
                return self.seen


def values(obj: Any) -> Iterator[Any]:
    """Every scalar inside a frame or a result, keys included."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from values(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from values(v)
    else:
        yield obj


def leaks(obj: Any, secrets: set[Any]) -> set[Any]:
    # Amounts are ints and notes unique strings: an equal scalar anywhere is the secret itself.
    return {v for v in values(obj) if not isinstance(v, bool) and v in secrets}


def post_job(owner: Person) -> str:
    # A category nobody serves: no provider is told, the test chooses who takes part.
    out = owner.rpc("jobs.create", title="Rewire the loft", description="", category=uid("cat"),
                    lat=51.5072, lng=-0.1276, budget=90_000, currency="GBP")
    return str(out["job"])


def test_a_rival_bidder_never_sees_another_bid(live_hub: Any, tenant: str, closing: list[HubClient]) -> None:
    owner = Person(live_hub, "customer", tenant, closing, "own")
    rival = Person(live_hub, "provider", tenant, closing, "riv")
    bidder = Person(live_hub, "serviceman", tenant, closing, "bid")
    admin = Person(live_hub, "admin", tenant, closing, "adm")
    job = post_job(owner)
    channel = f"job:{job}"
    owner.sock.call("subscribe", channel=channel)

    mine = rival.rpc("jobs.bid", job=job, amount=731_913, currency="GBP", note=uid("rival-note"))
    rival.sock.call("subscribe", channel=channel)  # a bidder follows the job's public events
    amount, note = 842_027, uid("secret-note")
    theirs = bidder.rpc("jobs.bid", job=job, amount=amount, currency="GBP", note=note)
    secret = {amount, note, bidder.user}

    # Live: the rival hears that a bid came, no more.
    assert rival.wait(channel, "bid", bid=theirs["bid"]) == {"kind": "bid", "job": job, "bid": theirs["bid"],
                                                              "count": 2}
    owner.wait(f"user:{owner.user}", "bid.placed", bid=theirs["bid"])  # delivered by now
    assert not leaks(rival.drain(), secret)

    # Recovery from the start of the stream, on another socket of the rival.
    again = rival.open()
    head = again.call("history", channel=channel)
    recovered = again.call("subscribe", channel=channel, since={"offset": 0, "epoch": head["epoch"]})
    assert recovered["recovered"] and [p["data"]["kind"] for p in recovered["pubs"]] == ["bid", "bid"]
    assert all(p["from"] is None for p in recovered["pubs"])
    assert not leaks(recovered, secret) and not leaks(head, secret)
    assert not leaks(again.call("history", channel=channel, after=0, limit=100), secret)

    # rpc and HTTP: the rival's own bid only.
    got = rival.rpc("jobs.get", job=job)
    assert [(b["bid"], b["amount"]) for b in got["bids"]] == [(mine["bid"], 731_913)]
    assert not leaks(got, secret)
    code, body = http_json("POST", f"{live_hub.http}/api/jobs.get", {"job": job}, token=rival.token)
    assert code == 200 and [b["bid"] for b in body["result"]["bids"]] == [mine["bid"]]
    assert not leaks(body, secret)

    # An admin reading the job's stream (audited) sees the public events too; jobs.get shows them all.
    assert not leaks(admin.sock.call("history", channel=channel), secret)
    assert sorted(b["amount"] for b in admin.rpc("jobs.get", job=job)["bids"]) == [731_913, amount]

    # The outcome: the rival loses and still learns nothing of the winning bid's amount or note.
    owner.rpc("jobs.accept", job=job, bid=theirs["bid"])
    assert rival.wait(f"user:{rival.user}", "bid.rejected") == {
        "kind": "bid.rejected", "job": job, "bid": mine["bid"], "title": "Rewire the loft"}
    rival.wait(channel, "status", status="accepted")
    assert not leaks(rival.drain(), {amount, note})
    assert not leaks(again.call("history", channel=channel), {amount, note})


def test_a_provider_who_only_asked_cannot_follow_the_job(live_hub: Any, tenant: str,
                                                         closing: list[HubClient]) -> None:
    owner = Person(live_hub, "customer", tenant, closing, "own")
    bidder = Person(live_hub, "provider", tenant, closing, "bid")
    asker = Person(live_hub, "provider", tenant, closing, "ask")
    job = post_job(owner)
    channel = f"job:{job}"
    amount, note = 655_321, uid("secret-note")
    bidder.rpc("jobs.bid", job=job, amount=amount, currency="GBP", note=note)
    query = asker.rpc("jobs.ask", job=job, text="Is there loft access?")["query"]

    assert asker.refused("subscribe", channel=channel) == "forbidden"
    assert asker.refused("subscribe", channel=channel, since={"offset": 0, "epoch": "x"}) == "forbidden"
    assert asker.refused("history", channel=channel) == "forbidden"
    assert asker.refused("presence", channel=channel) == "forbidden"

    # The owner's answer reaches the asker on their own channel.
    answer = owner.rpc("jobs.answer", job=job, query=query, text="Yes, a hatch on the landing")["answer"]
    assert asker.wait(f"user:{asker.user}", "query.answered", query=query) == {
        "kind": "query.answered", "job": job, "query": query, "answer": answer, "by": owner.user,
        "text": "Yes, a hatch on the landing"}

    # jobs.get, socket and HTTP: the job, no bid.
    got = asker.rpc("jobs.get", job=job)
    assert got["bids"] == [] and not leaks(got, {amount, note, bidder.user})
    code, body = http_json("POST", f"{live_hub.http}/api/jobs.get", {"job": job}, token=asker.token)
    assert code == 200 and body["result"]["bids"] == []
    assert not leaks(asker.drain(), {amount, note, bidder.user})

    # Bidding is what opens the job's stream.
    asker.rpc("jobs.bid", job=job, amount=700_000, currency="GBP")
    recovered = asker.sock.call("subscribe", channel=channel, since={"offset": 0, "epoch": "x"})
    history = asker.sock.call("history", channel=channel)
    assert [p["data"]["kind"] for p in history["pubs"]] == ["bid", "query", "answer", "bid"]
    assert not leaks(recovered, {amount, note, bidder.user}) and not leaks(history, {amount, note, bidder.user})


def test_the_owner_hears_every_bid_and_each_bidder_their_own(live_hub: Any, tenant: str,
                                                              closing: list[HubClient]) -> None:
    owner = Person(live_hub, "enterprise", tenant, closing, "own")
    a = Person(live_hub, "provider", tenant, closing, "pa")
    b = Person(live_hub, "provider", tenant, closing, "pb")
    job = post_job(owner)
    bid_a = a.rpc("jobs.bid", job=job, amount=510_000, currency="GBP", note="a's note")
    bid_b = b.rpc("jobs.bid", job=job, amount=490_000, currency="GBP", note="b's note")
    bid_a2 = a.rpc("jobs.bid", job=job, amount=480_000, currency="GBP", note="a's second")

    want = {bid_a["bid"]: {"kind": "bid.placed", "job": job, "bid": bid_a["bid"], "provider": a.user,
                           "amount": 510_000, "currency": "GBP", "note": "a's note", "replaces": None},
            bid_b["bid"]: {"kind": "bid.placed", "job": job, "bid": bid_b["bid"], "provider": b.user,
                           "amount": 490_000, "currency": "GBP", "note": "b's note", "replaces": None},
            bid_a2["bid"]: {"kind": "bid.placed", "job": job, "bid": bid_a2["bid"], "provider": a.user,
                            "amount": 480_000, "currency": "GBP", "note": "a's second",
                            "replaces": bid_a["bid"]}}
    for bid, data in want.items():
        assert owner.wait(f"user:{owner.user}", "bid.placed", bid=bid) == data
    for bid in (bid_a["bid"], bid_a2["bid"]):
        assert a.wait(f"user:{a.user}", "bid.placed", bid=bid) == want[bid]
    assert b.wait(f"user:{b.user}", "bid.placed", bid=bid_b["bid"]) == want[bid_b["bid"]]
    assert not leaks(a.drain(), {490_000, "b's note", b.user})
    assert not leaks(b.drain(), {510_000, 480_000, "a's note", "a's second", a.user})

    # Durable: a fresh socket recovers the owner's notifications from the start.
    again = owner.open()
    head = again.call("history", channel=f"user:{owner.user}")
    recovered = again.call("subscribe", channel=f"user:{owner.user}",
                           since={"offset": 0, "epoch": head["epoch"]})
    assert recovered["recovered"]
    assert [p["data"] for p in recovered["pubs"] if p["data"]["kind"] == "bid.placed"] == list(want.values())

    # jobs.get: the owner sees every live bid with its amount and note, over the socket and HTTP.
    live = {(x["provider"], x["amount"], x["note"]) for x in owner.rpc("jobs.get", job=job)["bids"]}
    assert live == {(a.user, 480_000, "a's second"), (b.user, 490_000, "b's note")}
    code, body = http_json("POST", f"{live_hub.http}/api/jobs.get", {"job": job}, token=owner.token)
    assert code == 200 and {x["amount"] for x in body["result"]["bids"]} == {480_000, 490_000}
