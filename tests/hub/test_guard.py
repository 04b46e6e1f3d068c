"""hub.guard's ASGI middleware alone, as any ASGI server drives it (the live attacks are in
tests/security/test_http_attacks.py)."""
from __future__ import annotations

import asyncio
from typing import Any

from django.test import override_settings

from hub import guard


def run_guard(scope: dict[str, Any], messages: list[dict[str, Any]], delay: float = 0) -> tuple[
        list[dict[str, Any]], bytes | None]:
    seen: dict[str, bytes] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        event = await receive()
        seen["body"] = event["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[dict[str, Any]] = []
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if not queue:
            await asyncio.sleep(3600)
        await asyncio.sleep(delay)
        return queue.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(guard.GuardMiddleware(app)({"type": "http", "path": "/healthz", **scope}, receive, send))
    return sent, seen.get("body")


def test_middleware_refuses_by_declared_length() -> None:
    with override_settings(HUB_HTTP_MAX_BODY_BYTES=10):
        sent, body = run_guard({"headers": [(b"content-length", b"11")]}, [])
    assert sent[0]["status"] == 413 and body is None


def test_middleware_refuses_a_streamed_body_past_the_limit() -> None:
    parts = [{"type": "http.request", "body": b"x" * 6, "more_body": True}] * 3
    with override_settings(HUB_HTTP_MAX_BODY_BYTES=10):
        sent, body = run_guard({"headers": []}, parts)
    assert sent[0]["status"] == 413 and body is None


def test_middleware_times_out_a_slow_body() -> None:
    parts = [{"type": "http.request", "body": b"x", "more_body": True}] * 10
    with override_settings(HUB_HTTP_REQUEST_TIMEOUT_S=0.2):
        sent, body = run_guard({"headers": []}, parts, delay=0.05)
    assert sent[0]["status"] == 408 and body is None


def test_middleware_hands_the_whole_body_on() -> None:
    parts = [{"type": "http.request", "body": b"ab", "more_body": True},
             {"type": "http.request", "body": b"cd", "more_body": False}]
    sent, body = run_guard({"headers": []}, parts)
    assert sent[0]["status"] == 200 and body == b"abcd"


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    scope = {"client": ("10.0.0.5", 1234), "headers": [(b"x-forwarded-for", b"198.51.100.7, 203.0.113.1")]}
    guard._trusted_proxies.cache_clear()
    try:
        assert guard.client_address(scope) == "10.0.0.5"
        with override_settings(HUB_TRUSTED_PROXIES=["10.0.0.0/8"]):
            guard._trusted_proxies.cache_clear()
            assert guard.client_address(scope) == "203.0.113.1"  # the nearest hop the proxy saw
        with override_settings(HUB_TRUSTED_PROXIES=["10.0.0.0/8", "203.0.113.0/24"]):
            guard._trusted_proxies.cache_clear()
            assert guard.client_address(scope) == "198.51.100.7"
    finally:
        guard._trusted_proxies.cache_clear()
