"""The per-provider circuit breaker state machine, in-process and in Redis."""
from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio as aredis

from ai_assist import breaker
from ai_assist.breaker import CLOSED, OPEN, PROBE, LocalBreakers, RedisBreakers

REDIS_URL = os.environ.get("REDIS_URL", "")


class Clock:
    """The breakers' clock, moved by hand: no test sleeps past an open period."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def clock() -> Iterator[Clock]:
    c = Clock()
    breaker.set_clock(c)
    yield c
    breaker.set_clock(None)


async def _scenario(make: object, clock: Clock) -> None:
    b = make()  # type: ignore[operator]
    name = f"p{uuid.uuid4().hex[:8]}"
    assert await b.allow(name, "t0", 5) == CLOSED
    assert await b.failure(name, "t1", 3, 0.3) == CLOSED
    assert await b.failure(name, "t2", 3, 0.3) == CLOSED
    await b.success(name, "t3")  # a success resets the consecutive count
    assert await b.failure(name, "t4", 3, 0.3) == CLOSED
    assert await b.failure(name, "t5", 3, 0.3) == CLOSED
    assert await b.failure(name, "t6", 3, 0.3) == OPEN
    assert await b.allow(name, "t7", 5) == OPEN
    await clock.sleep(0.35)
    # Half-open: many concurrent askers, exactly one probe.
    states = await asyncio.gather(*(b.allow(name, f"q{i}", 5) for i in range(20)))
    assert states.count(PROBE) == 1 and states.count(OPEN) == 19
    prober = f"q{states.index(PROBE)}"
    assert await b.failure(name, prober, 3, 0.3) == OPEN  # the probe failed: open again at once
    assert await b.allow(name, "r0", 5) == OPEN
    await clock.sleep(0.35)
    assert await b.allow(name, "r1", 5) == PROBE
    await b.success(name, "r1")
    assert await b.allow(name, "r2", 5) == CLOSED
    # 401-style failures open at once.
    assert await b.failure(name, "r3", 3, 0.3, force_open=True) == OPEN


def test_local_breaker(clock: Clock) -> None:
    asyncio.run(_scenario(LocalBreakers, clock))


def test_local_probe_released_without_verdict(clock: Clock) -> None:
    async def run() -> None:
        b = LocalBreakers()
        await b.failure("p", "a", 1, 0.05)
        await clock.sleep(0.06)
        assert await b.allow("p", "probe", 5) == PROBE
        await b.release("p", "probe")
        assert await b.allow("p", "next", 5) == PROBE

    asyncio.run(run())


def test_local_probe_lock_expires(clock: Clock) -> None:
    async def run() -> None:
        b = LocalBreakers()
        await b.failure("p", "a", 1, 0.05)
        await clock.sleep(0.06)
        assert await b.allow("p", "crashed", 0.05) == PROBE
        assert await b.allow("p", "x", 0.05) == OPEN
        clock.now += 0.06
        assert await b.allow("p", "y", 0.05) == PROBE

    asyncio.run(run())


def test_redis_breaker_shared_by_two_clients(clock: Clock) -> None:
    async def run() -> None:
        clients = [aredis.Redis.from_url(REDIS_URL) for _ in range(2)]
        made = iter([RedisBreakers(clients[0])])
        await _scenario(lambda: next(made), clock)
        # Two "processes": one records the failures, the other sees the breaker open.
        a, b = RedisBreakers(clients[0]), RedisBreakers(clients[1])
        name = f"p{uuid.uuid4().hex[:8]}"
        for i in range(2):
            await a.failure(name, f"f{i}", 2, 0.3)
        assert await b.allow(name, "x", 5) == OPEN
        await clock.sleep(0.35)
        both = await asyncio.gather(a.allow(name, "pa", 5), b.allow(name, "pb", 5))
        assert sorted(both) == [OPEN, PROBE]
        for c in clients:
            await c.aclose()  # type: ignore[attr-defined]

    asyncio.run(run())
