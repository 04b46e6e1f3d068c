"""hub.presence: who is on a channel, counted per process, shared through Redis between processes
(here two Presence objects on one Redis), with a dead process's members reaped and announced."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aredis
from django.conf import settings

from hub.presence import Presence
from tests.support import uid


def members(found: list[dict[str, Any]]) -> dict[str, int]:
    return {m["user"]: m["conns"] for m in found}


def test_local_counts_join_once_leave_once() -> None:
    async def scenario() -> None:
        p = Presence(uid("n"), None, lambda *a: None)
        ch = f"t1/chat:{uid('r')}"
        assert p.join(ch, "alice", "customer") is True  # first socket: announce a join
        assert p.join(ch, "alice", "customer") is False
        assert p.join(ch, "bob", "provider") is True
        assert members(await p.members(ch)) == {"alice": 2, "bob": 1}
        assert p.online("t1", "alice") and not p.online("t2", "alice")
        assert await p.present([ch, "t1/chat:nobody"]) == {ch}
        assert p.leave(ch, "alice") is False
        assert p.leave(ch, "alice") is True  # last socket: announce a leave
        assert p.leave(ch, "alice") is False
        assert members(await p.members(ch)) == {"bob": 1}

    asyncio.run(scenario())


@pytest.mark.services  # needs Redis
def test_members_across_processes_and_a_dead_process_is_reaped() -> None:
    async def scenario() -> None:
        client = aredis.Redis.from_url(settings.REDIS_URL)
        heard: list[tuple[str, str, str]] = []
        a = Presence(uid("a"), client, lambda *e: heard.append(e))
        b = Presence(uid("b"), client, lambda *e: None)
        ch = f"t1/chat:{uid('r')}"
        try:
            await a.start()
            await b.start()
            b.join(ch, "bob", "provider")
            b.join(ch, "bob", "provider")
            a.join(ch, "alice", "customer")
            seen: dict[str, int] = {}
            for _ in range(200):  # heartbeats and b's counts reach Redis in tasks of their own
                a.alive_cache = (0.0, set())
                seen = members(await a.members(ch))
                if seen == {"alice": 1, "bob": 2}:
                    break
                await asyncio.sleep(0.01)
            assert seen == {"alice": 1, "bob": 2}
            assert await a.present([ch]) == {ch}
            # b dies without a word: its liveness key goes, a survivor reaps it and announces the leave.
            assert b.task is not None
            b.task.cancel()
            await client.delete(f"hub:node:{b.node}")
            await a._reap()
            # a's own heartbeat may be the reaper, half-way through at this moment: wait for it.
            for _ in range(500):
                if heard:
                    break
                await asyncio.sleep(0.01)
            assert heard == [(ch, "leave", "bob")]
            a.alive_cache = (0.0, set())
            assert members(await a.members(ch)) == {"alice": 1}
        finally:
            await a.close()
            await client.delete(f"hub:pres:{ch}", f"hub:nodechans:{b.node}")
            await client.aclose()

    asyncio.run(scenario())
