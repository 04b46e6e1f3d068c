"""centrifuge-python, unchanged, against a live hub's `/connection/websocket`, in JSON and Protobuf.

Beside it a protocol v1 client in the same rooms: both see the same publications with the same
offsets and epochs.
"""
from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from centrifuge import ReplyError, StreamPosition

from tests.hub.centrifuge.sdk import Sdk, path, wait
from tests.support import HubClient, HubServer, mint, uid

MODES = [pytest.param(False, id="json"), pytest.param(True, id="protobuf")]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def v1(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A call on the (threaded, blocking) v1 test client without stopping the SDK's loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


@pytest.mark.parametrize("protobuf", MODES)
def test_session_against_v1_in_one_room(live_hub: HubServer, protobuf: bool) -> None:
    tenant = uid("t")
    alice, bob = uid("a"), uid("b")

    async def scenario() -> None:
        tokens = 0

        async def get_token() -> str:
            nonlocal tokens
            tokens += 1
            return mint(alice, "customer", tenant=tenant, ttl=3)

        sdk = Sdk(live_hub.url, mint(alice, "customer", tenant=tenant, ttl=3), protobuf, get_token=get_token)
        hello = await sdk.connect()
        assert sdk.dec(hello.data) == {"user": alice, "role": "customer", "tenant": tenant}
        server_sub = await wait(sdk.events.server_subscribed)
        assert server_sub.channel == f"user:{alice}" and server_sub.recoverable and server_sub.positioned

        room = (await sdk.rpc("rooms.create", members=[bob], kind="direct"))["room"]
        channel = f"chat:{room}"
        sub, events = await sdk.subscribe(channel, join_leave=True)
        subscribed = await wait(events.subscribed)
        assert subscribed.recoverable and not subscribed.was_recovering

        other = await v1(HubClient, live_hub.url, mint(bob, "customer", tenant=tenant))
        try:
            head = await v1(other.call, "subscribe", channel=channel)
            assert head["epoch"] == subscribed.stream_position.epoch
            assert (await wait(events.joins)).info.user == bob

            # Publications either way: one stream, the same offsets on both protocols.
            await sub.publish(sdk.enc({"text": "from sdk"}))
            mine = await wait(events.pubs)
            seen = await v1(other.next_push, "pub", channel=channel)
            assert (mine.pub.offset, sdk.dec(mine.pub.data)) == (seen["offset"], seen["data"])
            assert mine.pub.info.user == alice and seen["from"] == alice
            ack = await v1(other.call, "publish", channel=channel, data={"text": "from v1"})
            theirs = await wait(events.pubs)
            assert theirs.pub.offset == ack["offset"] == mine.pub.offset + 1
            assert sdk.dec(theirs.pub.data) == {"text": "from v1"} and theirs.pub.info.user == bob
            for i in range(3):
                await sub.publish(sdk.enc({"i": i}))
            top = mine.pub.offset + 4
            assert [(await wait(events.pubs)).pub.offset for _ in range(3)] == [top - 2, top - 1, top]

            # History: oldest first from the start, newest first with reverse, after a position.
            hist = await sub.history(limit=2)
            assert [p.offset for p in hist.publications] == [1, 2] and hist.offset == top
            assert hist.epoch == head["epoch"]
            hist = await sub.history(limit=2, reverse=True)
            assert [p.offset for p in hist.publications] == [top, top - 1]
            hist = await sub.history(limit=10, since=StreamPosition(offset=top - 2, epoch=head["epoch"]))
            assert [p.offset for p in hist.publications] == [top - 1, top]
            assert (await sub.history(limit=0)).publications == []
            with pytest.raises(ReplyError) as err:
                await sub.history(limit=5, since=StreamPosition(offset=1, epoch="other"))
            assert err.value.code == 112

            presence = await sub.presence()
            assert {c.user for c in presence.clients.values()} == {alice, bob}
            stats = await sub.presence_stats()
            assert (stats.num_users, stats.num_clients) == (2, 2)
        finally:
            other.close()

        # Refusals with the protocol's codes.
        for method, params, code in [("no.such", {}, 104), ("zones.create", {}, 103),
                                     ("rooms.create", {"members": "x"}, 107)]:
            with pytest.raises(ReplyError) as err:
                await sdk.rpc(method, **params)
            assert err.value.code == code, (method, err.value.message)
        with pytest.raises(ReplyError) as err:
            await sdk.client.publish(f"user:{bob}", sdk.enc({"x": 1}))
        assert err.value.code == 103
        with pytest.raises(ReplyError) as err:
            await sdk.client.publish("nope:x", sdk.enc({"x": 1}))
        assert err.value.code == 102

        # Token refresh: the 3 s token is renewed through get_token before it runs out.
        deadline = time.monotonic() + 8
        while tokens < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert tokens >= 2, "the SDK was never asked for a fresh token"
        assert sdk.events.disconnected.empty()
        await sub.publish(sdk.enc({"after": "refresh"}))
        assert sdk.dec((await wait(events.pubs)).pub.data) == {"after": "refresh"}
        await sdk.close()

    run(scenario())


@pytest.mark.parametrize("protobuf", MODES)
def test_rpc_jobs_match_and_an_offer_on_the_user_channel(live_hub: HubServer, protobuf: bool) -> None:
    tenant, cat = uid("t"), uid("cat")
    lat, lng = 51.50, -0.12

    async def scenario() -> None:
        ops = Sdk(live_hub.url, mint(uid("ops"), "admin", tenant=tenant), protobuf)
        cust = Sdk(live_hub.url, mint(uid("c"), "customer", tenant=tenant), protobuf)
        provider = uid("p")
        prov = Sdk(live_hub.url, mint(provider, "provider", tenant=tenant), protobuf)
        for s in (ops, cust, prov):
            await s.connect()
        await wait(prov.events.server_subscribed)
        ring = [[lng - .05, lat - .05], [lng + .05, lat - .05], [lng + .05, lat + .05], [lng - .05, lat + .05],
                [lng - .05, lat - .05]]
        await ops.rpc("zones.create", name="Centre", categories=[cat],
                      geometry={"type": "Polygon", "coordinates": [ring]})
        await prov.rpc("providers.update", lat=lat + 0.001, lng=lng, available=True, categories=[cat])
        found: dict[str, Any] = {}
        for _ in range(50):
            found = await cust.rpc("match.find", lat=lat, lng=lng, category=cat, k=5)
            if found["providers"]:
                break
            await asyncio.sleep(0.1)
        assert [p["user"] for p in found["providers"]] == [provider]

        booking = await cust.rpc("bookings.create", category=cat, lat=lat, lng=lng, mode="on_demand")
        offer = await wait(prov.events.server_pubs)
        assert offer.channel == f"user:{provider}" and offer.pub.offset > 0
        assert prov.dec(offer.pub.data)["kind"] == "offer"
        assert prov.dec(offer.pub.data)["booking"] == booking["booking"]

        job = await cust.rpc("jobs.create", title="Fix tap", description="Drips", category=cat,
                             lat=lat, lng=lng, budget=5000, currency="GBP")
        bid = await prov.rpc("jobs.bid", job=job["job"], amount=4500, currency="GBP")
        assert bid["bid"] and bid["replaces"] is None
        for s in (ops, cust, prov):
            await s.close()

    run(scenario())


def test_recovery_after_a_forced_disconnect(live_hub: HubServer) -> None:
    """Missed publications on a subscribed channel and on the user channel come back on reconnect,
    and the SDK reports them recovered (JSON here; Protobuf through the drain test)."""
    alice, bob = uid("a"), uid("b")

    async def scenario() -> None:
        sdk = Sdk(live_hub.url, mint(alice), False, min_reconnect_delay=1.0)
        await sdk.connect()
        await wait(sdk.events.server_subscribed)
        other = await v1(HubClient, live_hub.url, mint(bob))
        try:
            room = (await v1(other.rpc, "rooms.create", members=[alice], kind="direct"))["room"]
            note = await wait(sdk.events.server_pubs)  # the room's note on alice's user channel
            channel = f"chat:{room}"
            sub, events = await sdk.subscribe(channel)
            await wait(events.subscribed)
            first = await v1(other.call, "publish", channel=channel, data={"n": 0})
            assert (await wait(events.pubs)).pub.offset == first["offset"]

            sdk.client._conn.transport.abort()  # the network drops: no close frame
            offsets = [(await v1(other.call, "publish", channel=channel, data={"n": n}))["offset"]
                       for n in range(1, 4)]
            carol = await v1(HubClient, live_hub.url, mint(uid("c")))
            room2 = (await v1(carol.rpc, "rooms.create", members=[alice], kind="direct"))["room"]
            carol.close()

            back = await wait(sdk.events.server_subscribed)
            assert back.was_recovering and back.recovered
            missed = await wait(sdk.events.server_pubs)
            assert missed.pub.offset == note.pub.offset + 1 and missed.pub.data["room"] == room2
            again = await wait(events.subscribed)
            assert again.was_recovering and again.recovered
            assert [(await wait(events.pubs)).pub.offset for _ in offsets] == offsets
        finally:
            other.close()
        await sdk.close()

    run(scenario())


def test_tokens_bad_expired_and_revoked(live_hub: HubServer) -> None:
    """A bad token stops the SDK (no reconnect); an expired one makes it ask get_token and connect;
    a revoked one closes the socket with 3500 (invalid token, no reconnect)."""
    user = uid("u")

    async def scenario() -> None:
        bad = Sdk(live_hub.url, mint(user) + "x", False)
        await bad.client.connect()
        gone = await wait(bad.events.disconnected)
        assert gone.code == 101  # the connect reply's error: unauthorized, terminal

        asked = 0

        async def fresh() -> str:
            nonlocal asked
            asked += 1
            return mint(user, ttl=600)

        expired = Sdk(live_hub.url, mint(user, ttl=-10), True, get_token=fresh)
        await expired.connect()
        assert asked == 1

        admin = Sdk(live_hub.url, mint(uid("ops"), "admin"), False)
        await admin.connect()
        assert (await admin.rpc("tokens.revoke", user=user))["user"] == user
        await admin.close()
        gone = await wait(expired.events.disconnected)
        assert gone.code == 3500
        await asyncio.sleep(0.5)
        assert expired.events.connected.empty()  # did not come back

    run(scenario())


def test_assist_deltas_arrive_as_publications_without_offset(live_hub: HubServer) -> None:
    """A push v1 sends outside channels (here the AI assist stream) reaches the SDK as publications
    without offset on the caller's user channel, with the v1 push frame as data; not recovered."""
    user = uid("u")

    async def scenario() -> None:
        sdk = Sdk(live_hub.url, mint(user), False)
        await sdk.connect()
        await wait(sdk.events.server_subscribed)
        res = await sdk.rpc("assist.ask", prompt="where is my plumber")
        frames = []
        while not frames or not (frames[-1].get("done") or frames[-1].get("incomplete")):
            ctx = await wait(sdk.events.server_pubs)
            assert ctx.channel == f"user:{user}" and ctx.pub.offset == 0
            frames.append(ctx.pub.data)
        assert all(f["push"] == "assist" and f["assist"] == res["assist"] for f in frames)
        assert any("delta" in f for f in frames)
        await sdk.close()

    run(scenario())


def test_call_signals_both_ways(live_hub: HubServer) -> None:
    """v1's `signal` from an SDK is rpc("signal", {channel, data}); a signal reaches SDK subscribers
    of the call channel as a publication without offset whose data is the v1 frame."""
    alice, bob = uid("a"), uid("b")

    async def scenario() -> None:
        a = Sdk(live_hub.url, mint(alice), True)
        b = Sdk(live_hub.url, mint(bob), False)
        await a.connect()
        await b.connect()
        room = (await a.rpc("rooms.create", members=[bob], kind="direct"))["room"]
        call = (await a.rpc("calls.start", room=room, media="voice"))["call"]
        await b.rpc("calls.accept", call=call)
        channel = f"call:{call}"
        _, events = await b.subscribe(channel)
        await a.subscribe(channel)
        assert await a.rpc("signal", channel=channel, data={"sdp": "offer"}) == {}
        got = await wait(events.pubs)
        while got.pub.offset:  # the call's own durable publications (call.accepted, ...)
            got = await wait(events.pubs)
        assert got.pub.data == {"push": "signal", "channel": channel, "from": alice, "data": {"sdp": "offer"}}
        assert got.pub.info.user == alice
        with pytest.raises(ReplyError) as err:
            await b.rpc("signal", channel=f"call:{uid('x')}", data={})
        assert err.value.code in (103, 404)
        await a.close()
        await b.close()

    run(scenario())


@pytest.mark.parametrize("protobuf", MODES)
def test_raw_batches_unsubscribe_and_rejected_recovery(live_hub: HubServer, protobuf: bool) -> None:
    """What the SDKs above do not exercise, on the raw protocol: connect and subscribe batched in one
    frame (the subscribe waits for the connect), unsubscribe (also of a channel not subscribed), and
    the "reject unrecovered" flag answering 112 instead of recovered=false."""
    from centrifuge.codecs import _JsonCodec, _ProtobufCodec
    from websockets.sync.client import connect

    codec_ = _ProtobufCodec if protobuf else _JsonCodec
    alice = uid("a")

    def send(ws: Any, *cmds: dict[str, Any]) -> None:
        if protobuf:
            cmds = tuple(json.loads(json.dumps(c)) for c in cmds)
        ws.send(codec_.encode_commands(list(cmds)))

    def replies(ws: Any, n: int) -> dict[int, dict[str, Any]]:
        got: dict[int, dict[str, Any]] = {}
        while len(got) < n:
            for reply in codec_.decode_replies(ws.recv(10)):
                if reply.get("id"):
                    got[int(reply["id"])] = reply
        return got

    with connect(path(live_hub.url), subprotocols=["centrifuge-protobuf"] if protobuf else None,
                 open_timeout=10, close_timeout=2) as ws:
        channel = f"user:{alice}"
        send(ws, {"id": 1, "connect": {"token": mint(alice)}},
             {"id": 2, "rpc": {"method": "rooms.create",
                               "data": enc(protobuf, {"members": [uid("b")], "kind": "direct"})}})
        got = replies(ws, 2)
        assert channel in got[1]["connect"]["subs"]
        data = got[2]["rpc"]["data"]
        room_channel = "chat:" + (json.loads(base64.b64decode(data)) if protobuf else data)["room"]
        send(ws, {"id": 3, "subscribe": {"channel": room_channel}},
             {"id": 4, "subscribe": {"channel": room_channel, "recover": True, "epoch": "nope", "offset": 1,
                                     "flag": 2}},
             {"id": 5, "unsubscribe": {"channel": "chat:notmine"}})
        got = replies(ws, 3)
        assert got[3]["subscribe"]["recoverable"] is True
        assert int(got[4]["error"]["code"]) == 105  # already subscribed
        assert "unsubscribe" in got[5]
        send(ws, {"id": 6, "unsubscribe": {"channel": room_channel}})
        assert "unsubscribe" in replies(ws, 1)[6]
        send(ws, {"id": 7, "subscribe": {"channel": room_channel, "recover": True, "epoch": "nope", "offset": 1,
                                         "flag": 2}})
        assert int(replies(ws, 1)[7]["error"]["code"]) == 112
        send(ws, {"id": 8, "subscribe": {"channel": room_channel, "recover": True, "epoch": "nope", "offset": 1}})
        result = replies(ws, 1)[8]["subscribe"]
        assert result["was_recovering"] is True and not result.get("recovered", False)


def enc(protobuf: bool, value: Any) -> Any:
    return base64.b64encode(json.dumps(value).encode()).decode() if protobuf else value
