"""Hostile clients on one socket: pipelined subscribes, token guessing through `refresh`."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from core.models import AuditLog
from tests.support import HubClient, HubServer, mint, running_hubs, uid


@pytest.fixture(scope="module")
def small_cap_hub() -> Iterator[HubServer]:
    with running_hubs(1, {"HUB_MAX_SUBSCRIPTIONS": "5"}) as (server,):
        yield server


def test_pipelined_subscribes_cannot_pass_the_cap(small_cap_hub: HubServer) -> None:
    user = uid()
    with HubClient(small_cap_hub.url, mint(user)) as c:
        rooms = [c.rpc("rooms.create", members=[uid()], kind="booking")["room"] for _ in range(10)]
        channels = [f"user:{user}", f"user:{user}"] + [f"chat:{r}" for r in rooms]
        # All sent before any reply comes back: each subscribe is still checking permissions when
        # the next arrives.
        ids = [c.send("subscribe", channel=ch) for ch in channels]
        replies = [c.wait_reply(i, timeout=20) for i in ids]
    codes = [r["error"]["code"] if not r["ok"] else "ok" for r in replies]
    assert sorted(codes[:2]) == ["conflict", "ok"]  # the same channel twice: one subscription
    assert codes.count("ok") == 5 and codes.count("too_large") == 6


def test_unsubscribe_during_subscribe_leaves_no_ghost(live_hub) -> None:
    """Unsubscribe sent while the subscribe is still checking permissions: whichever way the race
    goes, presence and delivery agree with the replies the client got."""
    owner, peer = uid(), uid()
    with HubClient(live_hub.url, mint(owner)) as a, HubClient(live_hub.url, mint(peer)) as b:
        room = a.rpc("rooms.create", members=[peer], kind="booking")["room"]
        channel = f"chat:{room}"
        b.call("subscribe", channel=channel)
        for delay in (0, 0.001, 0.002, 0.004, 0.008):
            sub = a.send("subscribe", channel=channel)
            time.sleep(delay)
            unsub = a.send("unsubscribe", channel=channel)
            assert a.wait_reply(sub)["ok"]
            subscribed = not a.wait_reply(unsub)["ok"]  # not_found: it came before the subscribe
            time.sleep(0.2)
            members = {m["user"] for m in b.call("presence", channel=channel)["members"]}
            assert (owner in members) == subscribed
            if subscribed:
                a.call("unsubscribe", channel=channel)
                time.sleep(0.2)
        a.pushes.queue.clear()
        b.call("publish", channel=channel, data={"text": "hi"})
        time.sleep(0.3)
        assert all(p.get("push") != "pub" for p in list(a.pushes.queue))


def test_refresh_guessing_is_cut_off(live_hub) -> None:
    user = uid()
    with HubClient(live_hub.url, mint(user)) as c:
        for _ in range(3):
            assert c.request("refresh", token="forged." + uid())["error"]["code"] == "unauthorized"
        assert c.request("refresh", token="forged." + uid())["error"]["code"] == "unauthorized"
        assert c.wait_closed()[0] == 4001
    # Each refused attempt before the cut-off is audited; the ones after it are not answered at all.
    time.sleep(0.5)
    assert AuditLog.objects.filter(actor=user, action="token.refresh_failed").count() == 3


def test_a_member_cannot_swallow_anothers_publish_by_guessing_its_key(live_hub) -> None:
    owner, peer = uid(), uid()
    with HubClient(live_hub.url, mint(owner)) as a, HubClient(live_hub.url, mint(peer)) as b:
        room = a.rpc("rooms.create", members=[peer], kind="booking")["room"]
        channel = f"chat:{room}"
        first = b.call("publish", channel=channel, data={"text": "squatting"}, key="msg-1")["offset"]
        mine = a.call("publish", channel=channel, data={"text": "real"}, key="msg-1")["offset"]
        assert mine != first  # the owner's publish happened
        assert a.call("publish", channel=channel, data={"text": "retry"}, key="msg-1")["offset"] == mine
        texts = [p["data"]["text"] for p in a.call("history", channel=channel)["pubs"]]
        assert texts == ["squatting", "real"]


@pytest.fixture(scope="module")
def backlogged_hub() -> Iterator[HubServer]:
    server = HubServer(env={"HUB_MAX_PENDING_PUBLICATIONS": "5", "HUB_COMMANDS_PER_S": "10000",
                            "HUB_COMMAND_BURST": "10000"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_publishes_past_the_commit_backlog_are_refused_not_queued(backlogged_hub: HubServer) -> None:
    owner = uid()
    with HubClient(backlogged_hub.url, mint(owner)) as a:
        room = a.rpc("rooms.create", members=[uid()], kind="booking")["room"]
        channel = f"chat:{room}"
        a.call("publish", channel=channel, data={"n": -1})  # the channel is known: later publishes go inline
        ids = [a.send("publish", channel=channel, data={"n": i}) for i in range(300)]
        replies = [a.wait_reply(i) for i in ids]
    busy = [r["error"] for r in replies if not r["ok"]]
    acked = [r["result"]["offset"] for r in replies if r["ok"]]
    assert busy and all(e["code"] == "unavailable" and e["retry_after_ms"] > 0 for e in busy)
    # What was acknowledged is stored, in order; what was refused is not.
    with HubClient(backlogged_hub.url, mint(owner)) as b:
        stored = [p["offset"] for p in b.call("history", channel=channel, after=1, limit=100)["pubs"]]
    assert stored == acked[:100] and len(acked) + len(busy) == 300
