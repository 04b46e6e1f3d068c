"""A circuit breaker per AI provider, shared by every hub process through Redis.

States: closed (requests go through) -> open after N consecutive failures (requests skip the
provider for AI_BREAKER_OPEN_S) -> half-open once that time has passed: exactly one request, the
one that wins a SET NX probe lock, tries the provider. Its success closes the breaker; its failure
opens it again for another period. While the probe runs, other requests keep skipping it.

Redis layout (one hash slot per provider): `{ai-br:<name>}` hash {fails, open_until (ms)} and
`{ai-br:<name>}:probe`, the probe lock with a TTL so a crashed prober does not wedge the breaker.
Each transition is one Lua script (atomic); the clock is the Redis server's. Without Redis the
same state machine lives in-process. Tests replace both clocks with `set_clock` (seconds).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from core.ratelimit import redis_slot

log = logging.getLogger("ai_assist.breaker")

CLOSED, OPEN, PROBE = "closed", "open", "probe"
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)

# The last ARGV is the caller's clock in ms when one is set (tests), else "" for the server's.
NOW_LUA = """
local function now_ms(given)
  if given ~= nil and given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

ALLOW_LUA = NOW_LUA + """
local now = now_ms(ARGV[3])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then return 'closed' end
if now < open_until then return 'open' end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'probe' end
return 'open'
"""

FAILURE_LUA = NOW_LUA + """
local now = now_ms(ARGV[5])
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
local threshold = tonumber(ARGV[1])
local open_ms = tonumber(ARGV[2])
local was_probe = redis.call('GET', KEYS[2]) == ARGV[3]
if was_probe or fails >= threshold or ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'open_until', now + open_ms)
  if was_probe then redis.call('DEL', KEYS[2]) end
  redis.call('PEXPIRE', KEYS[1], open_ms * 10 + 60000)
  return 'open'
end
redis.call('PEXPIRE', KEYS[1], open_ms * 10 + 60000)
return 'closed'
"""

SUCCESS_LUA = """
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 'closed'
"""

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


_clock: Callable[[], float] | None = None


def set_clock(clock: Callable[[], float] | None) -> None:
    """Replace the breakers' clock (seconds; None: the real one) for tests."""
    global _clock
    _clock = clock


def _now() -> float:
    return _clock() if _clock is not None else time.monotonic()


def _now_ms_arg() -> str:
    return str(int(_clock() * 1000)) if _clock is not None else ""


def _keys(name: str) -> list[str]:
    return [f"{{ai-br:{name}}}", f"{{ai-br:{name}}}:probe"]


class LocalBreakers:
    """The in-process variant of the same state machine (embedded default, one process)."""

    def __init__(self) -> None:
        self._state: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _get(self, name: str) -> dict[str, Any]:
        return self._state.setdefault(name, {"fails": 0, "open_until": 0.0, "probe": None, "probe_exp": 0.0})

    async def allow(self, name: str, token: str, probe_ttl_s: float) -> str:
        with self._lock:
            st = self._get(name)
            now = _now()
            if not st["open_until"]:
                return CLOSED
            if now < st["open_until"]:
                return OPEN
            if st["probe"] is None or now >= st["probe_exp"]:
                st["probe"], st["probe_exp"] = token, now + probe_ttl_s
                return PROBE
            return OPEN

    async def failure(self, name: str, token: str, threshold: int, open_s: float, force_open: bool = False
                      ) -> str:
        with self._lock:
            st = self._get(name)
            st["fails"] += 1
            was_probe = st["probe"] == token
            if was_probe or st["fails"] >= threshold or force_open:
                st["open_until"] = _now() + open_s
                if was_probe:
                    st["probe"] = None
                return OPEN
            return CLOSED

    async def success(self, name: str, token: str) -> str:
        with self._lock:
            st = self._get(name)
            probe = st["probe"]
            self._state[name] = {"fails": 0, "open_until": 0.0, "probe": None if probe == token else probe,
                                 "probe_exp": st["probe_exp"]}
            return CLOSED

    async def release(self, name: str, token: str) -> None:
        """Give the probe back without a verdict (the request was cancelled or refused as a 400)."""
        with self._lock:
            st = self._get(name)
            if st["probe"] == token:
                st["probe"] = None

    def reset(self) -> None:
        with self._lock:
            self._state.clear()


class RedisBreakers:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._allow = client.register_script(ALLOW_LUA)
        self._failure = client.register_script(FAILURE_LUA)
        self._success = client.register_script(SUCCESS_LUA)
        self._release = client.register_script(RELEASE_LUA)

    @staticmethod
    async def _call(script: Any, keys: list[str], args: list[Any]) -> Any:
        async with redis_slot():
            return await script(keys=keys, args=args)

    @staticmethod
    def _s(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    async def allow(self, name: str, token: str, probe_ttl_s: float) -> str:
        ttl_ms = max(1, int(probe_ttl_s * 1000))
        return self._s(await self._call(self._allow, _keys(name), [token, ttl_ms, _now_ms_arg()]))

    async def failure(self, name: str, token: str, threshold: int, open_s: float, force_open: bool = False
                      ) -> str:
        args = [threshold, max(1, int(open_s * 1000)), token, "1" if force_open else "0", _now_ms_arg()]
        return self._s(await self._call(self._failure, _keys(name), args))

    async def success(self, name: str, token: str) -> str:
        return self._s(await self._call(self._success, _keys(name), [token]))

    async def release(self, name: str, token: str) -> None:
        await self._call(self._release, _keys(name)[1:], [token])


class FailOpenBreakers:
    """Redis breakers that fail open: with Redis unreachable a provider counts as closed (and
    failures go unrecorded) rather than the assistant going down with Redis."""

    def __init__(self, inner: RedisBreakers) -> None:
        self.inner = inner

    async def allow(self, name: str, token: str, probe_ttl_s: float) -> str:
        try:
            return await self.inner.allow(name, token, probe_ttl_s)
        except _REDIS_ERRORS as exc:
            log.warning("breaker state unavailable (%s): treating %s as closed", type(exc).__name__, name)
            return CLOSED

    async def failure(self, name: str, token: str, threshold: int, open_s: float, force_open: bool = False
                      ) -> str:
        try:
            return await self.inner.failure(name, token, threshold, open_s, force_open)
        except _REDIS_ERRORS as exc:
            log.warning("breaker failure not recorded (%s)", type(exc).__name__)
            return CLOSED

    async def success(self, name: str, token: str) -> str:
        try:
            return await self.inner.success(name, token)
        except _REDIS_ERRORS as exc:
            log.warning("breaker success not recorded (%s)", type(exc).__name__)
            return CLOSED

    async def release(self, name: str, token: str) -> None:
        try:
            await self.inner.release(name, token)
        except _REDIS_ERRORS as exc:
            log.warning("breaker probe not released (%s)", type(exc).__name__)


_local = LocalBreakers()
_redis: dict[int, FailOpenBreakers] = {}


def breakers() -> LocalBreakers | FailOpenBreakers:
    from core import redis as hubredis

    return hubredis.per_async_client(_redis, lambda c: FailOpenBreakers(RedisBreakers(c))) or _local
