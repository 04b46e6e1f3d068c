"""Budgets per minute shared by every hub process (users, tenants, addresses) with exact GCRA.

GCRA keeps one number per key, the theoretical arrival time (TAT). A limit of L per minute has an
emission interval T = 60 s / L and a burst tolerance B (60 s unless the limit says otherwise): a
request of cost n is allowed when max(TAT, now) + n*T - now <= B, and then TAT moves to that value.
So at most B/T units go through at once, and the sustained rate is L per minute.

With Redis, ONE Lua script checks every key of a request and updates them all or none, using the
Redis server clock (TIME) so hub processes with skewed clocks agree. Redis runs scripts one at a
time, so N processes together never admit more than the limit. Without Redis (the embedded default)
the same algorithm runs in-process under a lock.

This module has no Django dependency so another OS process can use it with a bare Redis client.
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from core.errors import RATE_LIMITED, TOO_LARGE, HubError

log = logging.getLogger("core.ratelimit")

PERIOD_US = 60_000_000
KEY_PREFIX = "{rl}:"  # one hash slot: the script touches several keys at once

GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local force = ARGV[1] == '1'
local new = {}
local wait = 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[i * 3 - 1])
  local tolerance = tonumber(ARGV[i * 3])
  local cost = tonumber(ARGV[i * 3 + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local nt = math.floor(tat + cost * interval)
  if nt < now then nt = now end
  new[i] = nt
  local over = nt - now - tolerance
  if over > wait then wait = over end
end
if wait > 0 and not force then
  return {0, math.ceil(wait / 1000)}
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%d', new[i]), 'PX', math.ceil((new[i] - now) / 1000) + 1000)
end
return {1, 0}
"""


_slots: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]] = {}
REDIS_CONCURRENCY = 48


def redis_slot() -> asyncio.Semaphore:
    """Bounds this loop's concurrent script calls below the redis.asyncio pool size (100 by default):
    past it the pool raises "Too many connections" instead of waiting."""
    loop = asyncio.get_running_loop()
    entry = _slots.get(id(loop))
    if entry is None or entry[0] is not loop:
        entry = _slots[id(loop)] = (loop, asyncio.Semaphore(REDIS_CONCURRENCY))
    return entry[1]


@dataclass(frozen=True)
class Limit:
    key: str  # e.g. "user:u1:rpm"
    per_minute: float
    cost: int
    # How far ahead of the steady rate a burst may run: a whole minute's allowance by default.
    burst_us: float = PERIOD_US

    @property
    def interval_us(self) -> float:
        return PERIOD_US / self.per_minute

    def impossible(self) -> bool:
        """A single request costing more than the whole burst allowance can never pass."""
        return self.cost * self.interval_us > self.burst_us


def _active(limits: list[Limit]) -> list[Limit]:
    # A limit of 0 (or less) is switched off; a cost of 0 consumes nothing; a negative cost gives
    # units back (never beyond a full allowance: the arrival time does not go below now).
    return [lim for lim in limits if lim.per_minute > 0 and lim.cost != 0]


class LocalLimiter:
    """In-process GCRA, the same algorithm as the Lua script (for the embedded default)."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire_sync(self, limits: list[Limit], force: bool = False, now_us: float | None = None) -> int:
        """0 when admitted (all keys updated), else milliseconds to wait (nothing updated)."""
        limits = _active(limits)
        with self._lock:
            now = time.time() * 1_000_000 if now_us is None else now_us
            new: list[float] = []
            wait = 0.0
            for lim in limits:
                tat = max(self._tat.get(lim.key, 0.0), now)
                nt = max(now, float(math.floor(tat + lim.cost * lim.interval_us)))
                new.append(nt)
                wait = max(wait, nt - now - lim.burst_us)
            if wait > 0 and not force:
                return math.ceil(wait / 1000)
            for lim, tat_new in zip(limits, new, strict=True):
                self._tat[lim.key] = tat_new
            if len(self._tat) > 100_000:  # forget keys whose TAT has passed
                self._tat = {k: v for k, v in self._tat.items() if v > now}
            return 0

    async def acquire(self, limits: list[Limit], force: bool = False) -> int:
        return self.acquire_sync(limits, force)


class RedisLimiter:
    """GCRA in Redis via one Lua script. `client` is a redis.asyncio.Redis."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.script = client.register_script(GCRA_LUA)

    async def acquire(self, limits: list[Limit], force: bool = False) -> int:
        limits = _active(limits)
        if not limits:
            return 0
        async with redis_slot():
            ok, wait_ms = await self.script(keys=[KEY_PREFIX + lim.key for lim in limits],
                                            args=_script_args(limits, force))
        return 0 if int(ok) == 1 else max(1, int(wait_ms))


def _script_args(limits: list[Limit], force: bool) -> list[Any]:
    args: list[Any] = ["1" if force else "0"]
    for lim in limits:
        args += [repr(lim.interval_us), repr(lim.burst_us), str(lim.cost)]
    return args


class FallbackLimiter:
    """The Redis limiter, falling back to this process's own limiter while Redis is unreachable
    (each process then enforces the limits on its own, rather than the assistant going down)."""

    def __init__(self, inner: RedisLimiter) -> None:
        self.inner = inner

    async def acquire(self, limits: list[Limit], force: bool = False) -> int:
        from redis.exceptions import RedisError

        try:
            return await self.inner.acquire(limits, force)
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("rate limit state unavailable (%s): limiting in-process", type(exc).__name__)
            return _local.acquire_sync(limits, force)


_local = LocalLimiter()
_redis_limiters: dict[int, FallbackLimiter] = {}


def limiter() -> LocalLimiter | FallbackLimiter:
    """The process's limiter: Redis-backed when REDIS_URL is set, else in-process."""
    from core import redis as hubredis

    return hubredis.per_async_client(_redis_limiters, lambda c: FallbackLimiter(RedisLimiter(c))) or _local


# --- from worker threads (sync rpc methods) -------------------------------------------------

_sync_scripts: dict[int, Any] = {}


def acquire_sync(limits: list[Limit], force: bool = False) -> int:
    """`limiter().acquire` for blocking code (sync rpc methods run in worker threads): the same
    script through the sync Redis client, so every process shares the budget; in-process without
    Redis, and while Redis cannot be reached. 0 when admitted, else milliseconds to wait."""
    from redis.exceptions import RedisError

    from core import redis as hubredis

    limits = _active(limits)
    if not limits:
        return 0
    client = hubredis.sync_client()
    if client is None:
        return _local.acquire_sync(limits, force)
    script = _sync_scripts.get(id(client))
    if script is None:
        script = _sync_scripts[id(client)] = client.register_script(GCRA_LUA)
    try:
        ok, wait_ms = script(keys=[KEY_PREFIX + lim.key for lim in limits], args=_script_args(limits, force))
    except (TimeoutError, RedisError, OSError) as exc:
        log.warning("rate limit state unavailable (%s): limiting in-process", type(exc).__name__)
        return _local.acquire_sync(limits, force)
    return 0 if int(ok) == 1 else max(1, int(wait_ms))


async def enforce(limits: list[Limit], message: str) -> None:
    """enforce_sync for the event loop (limiter().acquire)."""
    if any(lim.impossible() for lim in _active(limits)):
        raise HubError(TOO_LARGE, f"{message}: more than the whole budget at once")
    wait = await limiter().acquire(limits)
    if wait:
        raise HubError(RATE_LIMITED, message, retry_after_ms=wait)


def enforce_sync(limits: list[Limit], message: str) -> None:
    """acquire_sync, refusing with `rate_limited` (and retry_after_ms) when a limit is spent; a
    request that can never fit (cost over the whole burst) is `too_large` instead."""
    if any(lim.impossible() for lim in _active(limits)):
        raise HubError(TOO_LARGE, f"{message}: more than the whole budget at once")
    wait = acquire_sync(limits)
    if wait:
        raise HubError(RATE_LIMITED, message, retry_after_ms=wait)
