"""hub.lifecycle in-process: a failed start is tried again, and the drain gate's answers. The servers
themselves (lifespan, first scope, SIGTERM) are exercised in tests/hub/test_servers.py."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hub import lifecycle


def test_a_failed_start_is_tried_again_by_the_next_request(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []

    async def start(loop: asyncio.AbstractEventLoop, install_signals: bool) -> Any:
        calls.append(install_signals)
        if len(calls) == 1:
            raise ConnectionError("redis unreachable")
        return "engine"

    monkeypatch.setattr(lifecycle, "_start", start)
    monkeypatch.setattr(lifecycle, "_starting", {})

    async def requests() -> None:
        with pytest.raises(ConnectionError):
            await lifecycle.ensure_started()
        assert await asyncio.gather(lifecycle.ensure_started(), lifecycle.ensure_started()) == ["engine"] * 2

    asyncio.run(requests())
    assert len(calls) == 2  # once failed, once for both later callers


def call(app: Any, path: str) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "POST", "path": path, "headers": []}, receive, send))
    return (sent[0]["status"], {k.decode(): v.decode() for k, v in sent[0].get("headers", [])},
            b"".join(m.get("body", b"") for m in sent[1:]))


async def ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})


def test_draining_turns_work_away_but_answers_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = lifecycle.DrainGate(ok_app)
    assert call(gate, "/api/rooms.create")[2] == b"served"
    monkeypatch.setattr(lifecycle, "_draining", True)
    status, headers, body = call(gate, "/api/rooms.create")
    error = json.loads(body)["error"]
    assert (status, error["code"], error["retry_after_ms"], headers["retry-after"]) == (503, "unavailable", 1000, "1")
    for path in ("/healthz", "/readyz", "/metrics", "/static/admin/css/base.css"):
        assert call(gate, path)[2] == b"served", path
