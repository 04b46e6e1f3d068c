"""ai_assist.actions: admission through the shared budgets, the answer's cost charged afterwards,
cancelling (by the caller only, and every answer of a closing socket), room context for members."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from django.db import transaction

from ai_assist import actions, relay
from ai_assist.models import Transcript
from core.errors import HubError
from hub import rpc, store
from rooms.models import Room, RoomMember
from tests.ai_assist.conftest import RecordingSink, Relay, SocketCaller, final_push, new_caller

# --- budgets ----------------------------------------------------------------------------------


def test_admit_refuses_with_retry_after(assist: Relay) -> None:
    assist.configure(AI_USER_RPM="3")

    async def run() -> HubError:
        for _ in range(3):
            await actions.admit("user-rl", "tenant-rl", 10)
        with pytest.raises(HubError) as info:
            await actions.admit("user-rl", "tenant-rl", 10)
        return info.value

    err = asyncio.run(run())
    assert err.code == "rate_limited" and err.retry_after_ms is not None
    assert 19_000 <= err.retry_after_ms <= 20_000  # one request every 20 s


def test_tenant_limit_applies_across_users(assist: Relay) -> None:
    assist.configure(AI_TENANT_RPM="5")

    async def run() -> list[bool]:
        out = []
        for i in range(8):
            try:
                await actions.admit(f"user-{i}", "tenant-shared", 10)
                out.append(True)
            except HubError:
                out.append(False)
        return out

    assert asyncio.run(run()).count(True) == 5


def test_token_limit_and_oversized_requests(assist: Relay) -> None:
    assist.configure(AI_USER_TPM="1000")

    async def run() -> None:
        await actions.admit("user-tpm", "t", 600)
        with pytest.raises(HubError) as info:
            await actions.admit("user-tpm", "t", 600)
        assert info.value.code == "rate_limited"
        with pytest.raises(HubError) as info:
            await actions.admit("user-tpm2", "t", 5000)
        assert info.value.code == "too_large"

    asyncio.run(run())


def test_output_tokens_are_charged_after_the_answer(assist: Relay) -> None:
    assist.configure(AI_USER_TPM="1000")
    assist.fake.configure(tokens=300)
    who = new_caller()

    async def run() -> None:
        result = await relay.run_assist(who, "hi", [], RecordingSink(), charge=actions.charge_answer)
        assert result.outcome == "ok" and result.usage.output_tokens == 300
        with pytest.raises(HubError) as info:  # 300 of the minute's 1000 are gone
            await actions.admit(who.user, who.tenant, 800)
        assert info.value.code == "rate_limited"

    asyncio.run(run())


# --- cancelling -------------------------------------------------------------------------------

def _wait_disconnect(assist: Relay, provider: str = "openai") -> dict[str, Any]:
    deadline = time.monotonic() + 3
    while assist.fake.stats()[provider]["disconnects"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    return assist.fake.stats()[provider]


def test_cancel_stops_upstream_for_the_caller_only(assist: Relay) -> None:
    assist.fake.inject("openai", {"kind": "slow", "delay": 0.1, "tokens": 100})
    sc = SocketCaller()

    async def run() -> None:
        res = await actions.ask(sc.caller, "long answer")
        await sc.until(lambda ps: any("delta" in p for p in ps))
        other = rpc.Caller(user="someone-else", role="customer", tenant="t1", push=lambda f: None)
        assert (await actions.cancel(other, res["assist"]))["cancelled"] is False
        out = await actions.cancel(sc.caller, res["assist"])
        assert out == {"assist": res["assist"], "cancelled": True}
        n = len(sc.pushes)
        await asyncio.sleep(0.3)
        assert len(sc.pushes) == n and not final_push(sc.pushes)  # nothing after the cancel reply
        assert (await actions.cancel(sc.caller, res["assist"]))["cancelled"] is False

    asyncio.run(run())
    stats = _wait_disconnect(assist)
    assert stats["disconnects"] == 1 and stats["completed"] == 0


def test_socket_close_cancels_the_stream(assist: Relay) -> None:
    assist.fake.inject("openai", {"kind": "slow", "delay": 0.1, "tokens": 100},
                       {"kind": "slow", "delay": 0.1, "tokens": 100})
    sc = SocketCaller()

    async def run() -> None:
        await actions.ask(sc.caller, "one")
        await actions.ask(sc.caller, "two")
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


# --- room context -----------------------------------------------------------------------------

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
    res = asyncio.run(actions.ask(caller, "draft a reply", room, 3))
    assert "old message" not in res["text"]
    row = Transcript.objects.get(id=res["assist"])
    assert [m["text"] for m in row.context] == ["the boiler is leaking", "plain string message",
                                                "[email] [phone]"]  # redacted in the transcript
    assert row.room == room and row.context[0]["from"] == bob
    assist.fake.configure(tokens=40)
    res = asyncio.run(actions.ask(caller, "x", room, 1))
    assert "bob@example.com" in res["text"]  # the provider did get the context itself
    intruder = rpc.Caller(user=eve, role="customer", tenant="t1")
    for where, count in ((room, 5), (room, 0), ("no-such-room", 5), (room, None)):
        with pytest.raises(HubError) as info:
            asyncio.run(actions.ask(intruder, "x", where, count))
        assert info.value.code == "forbidden"
    assert not Transcript.objects.filter(user=eve).exists()
    with pytest.raises(HubError) as info:
        asyncio.run(actions.ask(caller, "x", "", 3))
    assert info.value.code == "bad_request"  # context needs a room
