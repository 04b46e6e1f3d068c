"""core.redis: the event loop's Redis client waits for a free connection rather than failing a burst."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.conf import settings

from core import redis as hub_redis


@pytest.mark.services
def test_a_burst_wider_than_the_pool_waits_instead_of_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of sockets closing at once each release a budget and a presence entry: with redis-py's
    own pool the command past its 100 connections failed (MaxConnectionsError)."""
    assert settings.REDIS_URL
    monkeypatch.setattr(settings, "REDIS_MAX_CONNECTIONS", 8)
    monkeypatch.setattr(hub_redis, "_async", {})

    async def burst() -> tuple[list[Any], int]:
        client = hub_redis.async_client()
        assert client is not None
        try:
            replies = await asyncio.gather(*(client.ping() for _ in range(300)), return_exceptions=True)
            return replies, client.connection_pool.max_connections
        finally:
            await client.aclose()

    replies, width = asyncio.run(burst())
    assert [r for r in replies if r is not True] == []
    assert width == 8
