"""assist.ask / assist.cancel through the rpc registry: socket-style (push) and HTTP-style (no push),
the wire shapes and the params' schema (the rules behind them: test_actions.py)."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from ai_assist.models import Transcript
from core.errors import HubError
from hub import rpc
from tests.ai_assist.conftest import Relay, SocketCaller, expected_answer, final_push


def test_socket_ask_streams_pushes(assist: Relay) -> None:
    sc = SocketCaller()

    async def run() -> dict[str, Any]:
        res = await rpc.call(sc.caller, "assist.ask", {"prompt": "hello there"})
        assert set(res) == {"assist"} and not sc.pushes  # the id comes back before any push
        await sc.until(final_push)
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
        await sc.until(final_push)

    asyncio.run(run())
    last = sc.pushes[-1]
    assert last["error"]["code"] == "unavailable" and last["incomplete"] is True
    assert len([p for p in sc.pushes if "delta" in p]) == 2


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
