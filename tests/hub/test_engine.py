"""The engine's per-process state: the hot cache is bounded in count and bytes."""
from __future__ import annotations

import asyncio

from hub import engine as engine_mod
from hub.pubs import Pub

BIG = "x" * 60_000


def test_the_hot_cache_is_bounded_in_bytes_per_channel_and_per_process() -> None:
    async def run() -> None:
        eng = engine_mod.Engine(asyncio.get_running_loop())
        try:
            eng.cache_cap, eng.cache_total_cap = 300_000, 500_000
            a = engine_mod.ChannelState("chat:a", eng.loop)
            b = engine_mod.ChannelState("chat:b", eng.loop)
            for i in range(1, 21):
                eng._emit(a, Pub("chat:a", i, "e", 0, None, {"text": BIG}))
            assert a.cache_bytes <= 300_000 and len(a.cache) == 4
            assert [p.offset for p in a.cache] == [17, 18, 19, 20]  # the newest stay
            for i in range(1, 21):
                eng._emit(b, Pub("chat:b", i, "e", 0, None, {"text": BIG}))
            assert eng.cache_total <= 500_000 + 61_000 and eng.cache_total == a.cache_bytes + b.cache_bytes
            assert b.cached_after(19) and b.cached_after(0) is None  # too far back: the database answers
        finally:
            eng.writer.stop()

    asyncio.run(run())
