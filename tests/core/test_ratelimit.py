"""GCRA rate limits: exact under concurrency, in-process and in Redis (one Lua script), across processes."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aredis

from core.ratelimit import Limit, LocalLimiter, RedisLimiter

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("REDIS_URL", "")
# Redis is required: the embedded run (no REDIS_URL) deselects these with -m "not services".
needs_redis = pytest.mark.services


def test_local_gcra_exact_burst_then_steady_rate() -> None:
    lim = LocalLimiter()
    rpm = [Limit("u:x:rpm", 60, 1)]  # one a second, burst 60
    now = 1_000_000_000_000.0
    allowed = sum(lim.acquire_sync(rpm, now_us=now) == 0 for _ in range(100))
    assert allowed == 60
    wait = lim.acquire_sync(rpm, now_us=now)
    assert wait == 1000  # the next one in exactly one emission interval
    assert lim.acquire_sync(rpm, now_us=now + 999_000) > 0
    assert lim.acquire_sync(rpm, now_us=now + 1_000_000) == 0


def test_local_gcra_is_all_or_nothing_and_threadsafe() -> None:
    lim = LocalLimiter()
    limits = [Limit("u:y:rpm", 1000, 1), Limit("u:y:tpm", 100, 10)]  # tokens run out first: 10 requests
    results: list[int] = []

    def worker() -> None:
        for _ in range(50):
            results.append(lim.acquire_sync(limits))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(0) == 10
    # The refused ones consumed nothing: the request limit still has room for 990 small requests.
    assert sum(lim.acquire_sync([Limit("u:y:rpm", 1000, 1)]) == 0 for _ in range(2000)) == 990


def test_force_charges_past_the_limit() -> None:
    lim = LocalLimiter()
    assert lim.acquire_sync([Limit("u:z:tpm", 100, 100)]) == 0
    assert lim.acquire_sync([Limit("u:z:tpm", 100, 50)], force=True) == 0
    assert lim.acquire_sync([Limit("u:z:tpm", 100, 1)]) >= 30_000


@needs_redis
def test_redis_lua_never_admits_more_than_the_limit_under_concurrency() -> None:
    key = f"u:{uuid.uuid4().hex}:rpm"

    async def run() -> int:
        # Two limiter instances on two separate connection pools, racing on the same key.
        a, b = aredis.Redis.from_url(REDIS_URL), aredis.Redis.from_url(REDIS_URL)
        la, lb = RedisLimiter(a), RedisLimiter(b)
        try:
            waits = await asyncio.gather(*[(la if i % 2 else lb).acquire([Limit(key, 37, 1)])
                                           for i in range(300)])
        finally:
            await a.aclose()  # type: ignore[attr-defined]
            await b.aclose()  # type: ignore[attr-defined]
        assert all(w > 0 for w in waits if w)
        return waits.count(0)

    assert asyncio.run(run()) == 37


_CHILD = """
import asyncio, os, sys
import redis.asyncio as aredis
from core.ratelimit import Limit, RedisLimiter

async def main():
    client = aredis.Redis.from_url(os.environ["REDIS_URL"])
    lim = RedisLimiter(client)
    limits = [Limit(sys.argv[1], 500, 1), Limit(sys.argv[2], 120, 3)]
    sys.stdin.readline()  # start together
    waits = await asyncio.gather(*[lim.acquire(limits) for _ in range(200)])
    print(waits.count(0), flush=True)
    await client.aclose()  # type: ignore[attr-defined]

asyncio.run(main())
"""


@needs_redis
def test_two_os_processes_share_the_limit() -> None:
    rpm, tpm = f"u:{uuid.uuid4().hex}:rpm", f"u:{uuid.uuid4().hex}:tpm"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, rpm, tpm], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT) for _ in range(2)]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    counts = [int(p.communicate(timeout=60)[0].strip()) for p in procs]
    # 500 requests/min, but 120 tokens/min at 3 tokens a request admits only 40: the tighter wins,
    # and a request refused on tokens consumes no request allowance (all or nothing).
    assert sum(counts) == 40, counts


def test_a_negative_cost_gives_units_back_up_to_a_full_allowance() -> None:
    lim = LocalLimiter()
    now = 1_000_000_000.0
    assert lim.acquire_sync([Limit("give", 60, 60)], now_us=now) == 0  # the whole minute's burst
    assert lim.acquire_sync([Limit("give", 60, 1)], now_us=now) > 0
    assert lim.acquire_sync([Limit("give", 60, -10)], now_us=now) == 0
    assert lim.acquire_sync([Limit("give", 60, 10)], now_us=now) == 0
    assert lim.acquire_sync([Limit("give", 60, 1)], now_us=now) > 0
    # Giving back more than was spent leaves a full allowance, not more.
    assert lim.acquire_sync([Limit("give", 60, -1000)], now_us=now) == 0
    assert lim.acquire_sync([Limit("give", 60, 61)], now_us=now) > 0


@needs_redis
def test_redis_refund_matches_the_local_one() -> None:
    async def run() -> list[int]:
        client = aredis.Redis.from_url(REDIS_URL)
        limiter = RedisLimiter(client)
        key = f"give-{uuid.uuid4().hex}"
        out = [await limiter.acquire([Limit(key, 60, 60)]), await limiter.acquire([Limit(key, 60, 1)]),
               await limiter.acquire([Limit(key, 60, -1000)]), await limiter.acquire([Limit(key, 60, 60)])]
        await client.aclose()
        return out

    first, over, refund, again = asyncio.run(run())
    assert first == 0 and over > 0 and refund == 0 and again == 0


@needs_redis
def test_the_sync_path_shares_the_redis_budget_and_limits_alone_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sync rpc methods (worker threads) spend the same budget as the async limiter; while Redis
    cannot be reached they limit in-process rather than fail."""
    import redis

    from core import ratelimit
    from core import redis as hubredis
    from core.errors import HubError
    from tests.support import free_port

    key = f"dom-{uuid.uuid4().hex}"

    async def spend() -> int:
        client = aredis.Redis.from_url(REDIS_URL)
        try:
            return await RedisLimiter(client).acquire([Limit(key, 3, 2)])
        finally:
            await client.aclose()

    assert asyncio.run(spend()) == 0
    assert ratelimit.acquire_sync([Limit(key, 3, 1)]) == 0
    with pytest.raises(HubError) as info:  # 3 a minute, spent over both paths
        ratelimit.enforce_sync([Limit(key, 3, 1)], "too many")
    assert info.value.code == "rate_limited" and (info.value.retry_after_ms or 0) > 0
    with pytest.raises(HubError) as info:  # more than a whole minute's allowance at once
        ratelimit.enforce_sync([Limit(f"dom-{uuid.uuid4().hex}", 3, 4)], "too many")
    assert info.value.code == "too_large"

    monkeypatch.setattr(hubredis, "sync_client", lambda: redis.Redis(port=free_port(), socket_connect_timeout=0.2))
    alone = [Limit(f"dom-{uuid.uuid4().hex}", 2, 1)]
    assert [ratelimit.acquire_sync(alone) == 0 for _ in range(3)] == [True, True, False]
