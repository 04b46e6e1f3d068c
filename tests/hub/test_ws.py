"""hub.ws: the WebSocket ASGI app refuses before the handshake while draining (1012) or past the
address's socket budget (4029), else feeds frames to a connection and cleans up on disconnect."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hub import ws
from hub.engine import Engine
from tests.hub.fakes import running_engine

SCOPE = {"type": "websocket", "path": "/ws", "client": ("198.51.100.7", 5000), "headers": []}


async def session(eng: Engine, frames: list[str], monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    async def get_engine() -> Engine:
        return eng

    monkeypatch.setattr(ws, "get_engine", get_engine)
    events = [{"type": "websocket.connect"}, *({"type": "websocket.receive", "text": f} for f in frames),
              {"type": "websocket.disconnect", "code": 1000}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.01)  # the connection's tasks run between frames
        return events.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await ws.websocket_app(dict(SCOPE), receive, send)
    await asyncio.sleep(0.01)
    return sent


def test_frames_reach_a_connection_and_a_disconnect_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with running_engine() as eng:
            sent = await session(eng, [json.dumps({"id": 1, "cmd": "subscribe", "channel": "user:x"})], monkeypatch)
            assert sent[0] == {"type": "websocket.accept"}
            assert sent[-1] == {"type": "websocket.close", "code": 4001}  # a command before connect
            assert not eng.conns

    asyncio.run(scenario())


def test_refused_before_the_handshake_while_draining_or_past_the_address_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with running_engine() as eng:
            eng.draining = True
            assert await session(eng, [], monkeypatch) == [{"type": "websocket.close", "code": 1012}]
            eng.draining = False

            async def full(address: str) -> int:
                return 5000

            eng.budgets.open_address = full
            assert await session(eng, [], monkeypatch) == [{"type": "websocket.close", "code": 4029}]

    asyncio.run(scenario())
