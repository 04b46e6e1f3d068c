"""Chat rooms (rooms.actions.chat) over a live socket: members are told of new rooms, rooms.list, one direct
room per pair."""
from __future__ import annotations

import threading
from typing import Any

from rooms.models import Room, pair_key
from tests.support import HubClient, http_json, mint, uid


def user_pubs(client: HubClient, user: str) -> list[dict[str, Any]]:
    return [p["data"] for p in client.call("history", channel=f"user:{user}", limit=100)["pubs"]]


def test_other_members_are_told_of_a_new_room(live_hub):
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    b = HubClient(live_hub.url, mint(bob))
    b.call("subscribe", channel=f"user:{bob}")
    a = HubClient(live_hub.url, mint(alice))
    made = a.rpc("rooms.create", members=[bob, carol], kind="booking", ref="bk-1")
    assert made["created"] is True
    push = b.next_push("pub", channel=f"user:{bob}")
    assert push["from"] is None
    data = push["data"]
    assert data["kind"] == "room.new" and data["room"] == made["room"] and data["room_kind"] == "booking"
    assert data["members"] == sorted([alice, bob, carol]) and data["by"] == alice and data["ref"] == "bk-1"
    assert isinstance(data["created_at"], int) and data["created_at"] > 1_700_000_000_000
    # Durable: carol was offline and finds it on her channel; the creator is not told of her own room.
    c = HubClient(live_hub.url, mint(carol))
    assert [d["room"] for d in user_pubs(c, carol) if d["kind"] == "room.new"] == [made["room"]]
    assert user_pubs(a, alice) == []
    # ...and, being a member now, may follow the room.
    assert c.call("subscribe", channel=f"chat:{made['room']}")["offset"] == 0


def test_direct_room_is_one_per_pair_in_either_order(live_hub):
    alice, bob = uid("alice"), uid("bob")
    a = HubClient(live_hub.url, mint(alice))
    b = HubClient(live_hub.url, mint(bob))
    first = a.rpc("rooms.create", members=[bob], kind="direct")
    again = a.rpc("rooms.create", members=[bob, alice], kind="direct")
    theirs = b.rpc("rooms.create", members=[alice], kind="direct")
    assert first["created"] is True and again["created"] is False and theirs["created"] is False
    assert first["room"] == again["room"] == theirs["room"]
    assert Room.objects.filter(pair_key=pair_key(alice, bob)).count() == 1
    # Told once, by the first creation only.
    assert [d["room"] for d in user_pubs(b, bob)] == [first["room"]]
    assert user_pubs(a, alice) == []
    # The same pair in another tenant is another room.
    other = HubClient(live_hub.url, mint(alice, tenant="t2")).rpc("rooms.create", members=[bob], kind="direct")
    assert other["created"] is True and other["room"] != first["room"]
    # Booking rooms are never merged.
    rooms = {a.rpc("rooms.create", members=[bob], kind="booking")["room"] for _ in range(2)}
    assert len(rooms) == 2 and first["room"] not in rooms


def test_concurrent_direct_creations_make_one_room(live_hub):
    alice, bob = uid("alice"), uid("bob")
    results: list[tuple[int, Any]] = []
    start = threading.Barrier(8)

    def create(me: str, peer: str) -> None:
        start.wait()
        results.append(http_json("POST", live_hub.http + "/api/rooms.create",
                                 {"members": [peer], "kind": "direct"}, token=mint(me)))

    threads = [threading.Thread(target=create, args=(alice, bob) if i % 2 else (bob, alice)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [status for status, _ in results] == [200] * 8
    assert len({body["result"]["room"] for _, body in results}) == 1
    assert sum(body["result"]["created"] for _, body in results) == 1
    assert Room.objects.filter(pair_key=pair_key(alice, bob)).count() == 1


def test_rooms_list_newest_first_paged_and_only_the_callers(live_hub):
    me, peer = uid("me"), uid("peer")
    c = HubClient(live_hub.url, mint(me))
    made = [c.rpc("rooms.create", members=[uid("p")], kind="booking")["room"] for _ in range(5)]
    made.append(c.rpc("rooms.create", members=[peer], kind="direct")["room"])
    # A room the caller is not in, and one of theirs in another tenant, stay out.
    HubClient(live_hub.url, mint(peer)).rpc("rooms.create", members=[uid("x")], kind="booking")
    HubClient(live_hub.url, mint(me, tenant="t2")).rpc("rooms.create", members=[peer], kind="booking")
    everything = c.rpc("rooms.list")
    assert [r["room"] for r in everything["rooms"]] == made[::-1] and everything["next"] is None
    newest = everything["rooms"][0]
    assert newest["kind"] == "direct" and newest["members"] == sorted([me, peer])
    assert newest["created_by"] == me and isinstance(newest["created_at"], int)
    pages: list[str] = []
    cursor = None
    while True:
        page = c.rpc("rooms.list", limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(page["rooms"]) <= 2
        pages += [r["room"] for r in page["rooms"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == made[::-1]
    # The peer sees the direct room they were put in.
    assert [r["room"] for r in HubClient(live_hub.url, mint(peer)).rpc("rooms.list")["rooms"]][-1] == made[-1]

