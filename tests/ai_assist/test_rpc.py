"""assist.ask / assist.cancel through the rpc registry: socket-style (push) and HTTP-style (no push)."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import transaction

from ai_assist.models import Transcript
from core.errors import HubError
from hub import rpc, store
from rooms.models import Room, RoomMember
from tests.ai_assist.conftest import Relay, expected_answer


class SocketCaller:
    """A Caller with a push function and on_close callbacks, like the socket engine builds."""

    def __init__(self, user: str | None = None) -> None:
        self.pushes: list[dict[str, Any]] = []
        self.closers: list[Callable[[], None]] = []
        self.got = asyncio.Event()
        self.caller = rpc.Caller(user=user or f"u{uuid.uuid4().hex[:10]}", role="customer", tenant="t1",
                                 client=f"c{uuid.uuid4().hex[:8]}", push=self._push, on_close=self.closers.append)

    def _push(self, frame: dict[str, Any]) -> None:
        self.pushes.append(frame)
        self.got.set()

    async def until(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self.pushes):
            self.got.clear()
            await asyncio.wait_for(self.got.wait(), max(0.01, deadline - time.monotonic()))

    def close(self) -> None:
        for cb in self.closers:
            cb()


def _final(pushes: list[dict[str, Any]]) -> bool:
    return any(p.get("done") or p.get("error") for p in pushes)


def test_socket_ask_streams_pushes(assist: Relay) -> None:
    sc = SocketCaller()

    async def run() -> dict[str, Any]:
        res = await rpc.call(sc.caller, "assist.ask", {"prompt": "hello there"})
        assert set(res) == {"assist"} and not sc.pushes  # the id comes back before any push
        await sc.until(_final)
        return res

    res = asyncio.run(run())
    deltas = [p for p in sc.pushes if "delta" in p]
    assert all(p["push"] == "assist" and p["assist"] == res["assist"] for p in sc.pushes)
    assert "".join(p["delta"] for p in deltas) == expected_answer("hello there")
    assert sc.pushes[-1] == {"push": "assist", "assist": res["assist"], "done": True, "provider": "openai",
                             "usage": sc.pushes[-1]["usage"], "finish": "stop"}
    assert sc.pushes[-1]["usage"]["output_tokens"] == 12


def test_http_ask_returns_the_whole_answer(assist: Relay) -> None:
    caller = rpc.Caller(user=f"u{uuid.uuid4().hex[:10]}", role="provider", tenant="t1")
    res = asyncio.run(rpc.call(caller, "assist.ask", {"prompt": "summarise"}))
    assert res["text"] == expected_answer("summarise") and res["provider"] == "openai"
    assert res["usage"]["output_tokens"] == 12 and Transcript.objects.filter(id=res["assist"]).exists()
    assert res["finish"] == "stop"
    assist.fake.inject("openai", "400")
    with pytest.raises(HubError) as info:
        asyncio.run(rpc.call(caller, "assist.ask", {"prompt": "summarise"}))
    assert info.value.code == "bad_request"


def test_error_push_marks_incomplete(assist: Relay) -> None:
    assist.fake.inject("openai", {"kind": "cut", "after": 2})
    sc = SocketCaller()

    async def run() -> None:
        await rpc.call(sc.caller, "assist.ask", {"prompt": "hello"})
        await sc.until(_final)

    asyncio.run(run())
    last = sc.pushes[-1]
    assert last["error"]["code"] == "unavailable" and last["incomplete"] is True
    assert len([p for p in sc.pushes if "delta" in p]) == 2


def _wait_disconnect(assist: Relay, provider: str = "openai") -> dict[str, Any]:
    deadline = time.monotonic() + 3
    while assist.fake.stats()[provider]["disconnects"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    return assist.fake.stats()[provider]


def test_assist_cancel_stops_upstream(assist: Relay) -> None:
    assist.fake.inject("openai", {"kind": "slow", "delay": 0.1, "tokens": 100})
    sc = SocketCaller()

    async def run() -> None:
        res = await rpc.call(sc.caller, "assist.ask", {"prompt": "long answer"})
        await sc.until(lambda ps: any("delta" in p for p in ps))
        other = rpc.Caller(user="someone-else", role="customer", tenant="t1", push=lambda f: None)
        assert (await rpc.call(other, "assist.cancel", {"assist": res["assist"]}))["cancelled"] is False
        out = await rpc.call(sc.caller, "assist.cancel", {"assist": res["assist"]})
        assert out == {"assist": res["assist"], "cancelled": True}
        n = len(sc.pushes)
        await asyncio.sleep(0.3)
        assert len(sc.pushes) == n and not _final(sc.pushes)  # nothing after the cancel reply
        assert (await rpc.call(sc.caller, "assist.cancel", {"assist": res["assist"]}))["cancelled"] is False

    asyncio.run(run())
    stats = _wait_disconnect(assist)
    assert stats["disconnects"] == 1 and stats["completed"] == 0


def test_socket_close_cancels_the_stream(assist: Relay) -> None:
    assist.fake.inject("openai", {"kind": "slow", "delay": 0.1, "tokens": 100},
                       {"kind": "slow", "delay": 0.1, "tokens": 100})
    sc = SocketCaller()

    async def run() -> None:
        await rpc.call(sc.caller, "assist.ask", {"prompt": "one"})
        await rpc.call(sc.caller, "assist.ask", {"prompt": "two"})
        assert len(sc.closers) == 1  # one close callback per socket
        await sc.until(lambda ps: len({p["assist"] for p in ps if "delta" in p}) == 2)
        sc.close()
        await asyncio.sleep(0.3)

    asyncio.run(run())
    deadline = time.monotonic() + 3
    while assist.fake.stats()["openai"]["disconnects"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = assist.fake.stats()["openai"]
    assert stats["disconnects"] == 2 and stats["open"] == 0


def _room_with_messages(members: list[str], texts: list[Any]) -> str:
    with transaction.atomic():
        room = Room.objects.create(kind="booking", tenant="t1", created_by=members[0])
        RoomMember.objects.bulk_create([RoomMember(room=room, user=u) for u in members])
        for i, data in enumerate(texts):
            store.append(f"t1/chat:{room.id}", data, sender=members[i % len(members)])
    return room.id


def test_room_context_for_members_only(assist: Relay) -> None:
    alice, bob, eve = (f"{n}{uuid.uuid4().hex[:6]}" for n in ("alice", "bob", "eve"))
    room = _room_with_messages([alice, bob], [{"text": "old message"}, {"text": "the boiler is leaking"},
                                              "plain string message", {"text": "bob@example.com 07700 900123"}])
    caller = rpc.Caller(user=alice, role="customer", tenant="t1")
    res = asyncio.run(rpc.call(caller, "assist.ask", {"prompt": "draft a reply", "room": room, "context": 3}))
    assert "old message" not in res["text"]
    row = Transcript.objects.get(id=res["assist"])
    assert [m["text"] for m in row.context] == ["the boiler is leaking", "plain string message",
                                                "[email] [phone]"]  # redacted in the transcript
    assert row.room == room and row.context[0]["from"] == bob
    assist.fake.configure(tokens=40)
    res = asyncio.run(rpc.call(caller, "assist.ask", {"prompt": "x", "room": room, "context": 1}))
    assert "bob@example.com" in res["text"]  # the provider did get the context itself
    intruder = rpc.Caller(user=eve, role="customer", tenant="t1")
    for params in ({"prompt": "x", "room": room, "context": 5}, {"prompt": "x", "room": room, "context": 0},
                   {"prompt": "x", "room": "no-such-room", "context": 5}):
        with pytest.raises(HubError) as info:
            asyncio.run(rpc.call(intruder, "assist.ask", params))
        assert info.value.code == "forbidden"
    assert not Transcript.objects.filter(user=eve).exists()


def test_params_validation_and_rate_limit(assist: Relay) -> None:
    caller = rpc.Caller(user=f"u{uuid.uuid4().hex[:10]}", role="customer", tenant="t1")
    for params in ({}, {"prompt": ""}, {"prompt": "x", "context": 51}, {"prompt": "x", "context": 3},
                   {"prompt": "x", "extra": 1}):
        with pytest.raises(HubError) as info:
            asyncio.run(rpc.call(caller, "assist.ask", params))
        assert info.value.code == "bad_request"
    assist.configure(AI_USER_RPM="2")
    for _ in range(2):
        asyncio.run(rpc.call(caller, "assist.ask", {"prompt": "x"}))
    with pytest.raises(HubError) as info:
        asyncio.run(rpc.call(caller, "assist.ask", {"prompt": "x"}))
    assert info.value.code == "rate_limited" and (info.value.retry_after_ms or 0) > 0
