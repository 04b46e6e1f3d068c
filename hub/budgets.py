"""What one user, and one address, may hold of a hub: sockets and commands, across all processes.

- Sockets: at most `HUB_MAX_SOCKETS_PER_USER` per user (tenant and user id) and
  `HUB_MAX_SOCKETS_PER_ADDRESS` per client address, counted over every hub process. With Redis,
  one hash per user (or address) holds a count per process; a process that stopped heartbeating
  (see hub.presence) no longer counts, so a crash frees its sockets' slots. Without Redis, the
  counts are this process's.
- New sockets: at most `HUB_NEW_SOCKETS_PER_ADDRESS_PER_S` per address (core.ratelimit, shared).
- Commands: every command of a user, on any socket and any process, spends from one budget of
  `HUB_USER_COMMANDS_PER_S` with bursts of `HUB_USER_COMMAND_BURST` (on top of each connection's
  own limit). A process takes the budget from the shared GCRA (core.ratelimit) in leases: half
  the burst for the user's first socket there, then a fifth of a second's worth at a time, one
  lease ahead of need. A command costs a local decrement; Redis sees a few calls a second per
  busy user; a user on several processes shares one budget (a lease another process could have
  used is at most a fifth of a second of it).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.conf import settings

from core import ratelimit
from core import redis as hubredis

log = logging.getLogger("hub.budgets")

# Count a slot unless its process is known dead (liveness keys come from hub.presence's heartbeat).
ACQUIRE_LUA = """
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  local node, n = fields[i], tonumber(fields[i + 1])
  if node ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. node) == 0 then
    redis.call('HDEL', KEYS[1], node)
  else
    total = total + n
  end
end
if total >= tonumber(ARGV[2]) then
  return -1
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], 86400)
return total + 1
"""
NODE_KEY_PREFIX = "hub:node:"
LEASES_PER_S = 5  # a lease is a fifth of a second of the user's rate
LINGER_S = 10.0  # how long a user's lease outlives their last socket on a process


class SocketSlots:
    """Sockets held per user and per address, across processes."""

    def __init__(self, node: str, redis: Any) -> None:
        self.node = node
        self.redis = redis
        self.script = redis.register_script(ACQUIRE_LUA) if redis is not None else None
        self.local: dict[str, int] = {}

    async def acquire(self, key: str, limit: int) -> bool:
        if limit <= 0:
            return True
        held = self.local.get(key, 0)
        allowed = held < limit  # this process's own count: without Redis, or while it is down
        if self.script is not None:
            try:
                allowed = int(await self.script(keys=[key], args=[self.node, limit, NODE_KEY_PREFIX])) >= 0
            except Exception as exc:  # noqa: BLE001 - Redis down: each process counts its own
                log.warning("socket budget unavailable (%s): counting in-process", type(exc).__name__)
        if allowed:
            self.local[key] = self.local.get(key, 0) + 1
        return allowed

    def release(self, key: str) -> None:
        left = self.local.get(key, 0) - 1
        if left <= 0:
            self.local.pop(key, None)
        else:
            self.local[key] = left
        if self.redis is not None:
            asyncio.get_running_loop().create_task(self._release(key))

    async def _release(self, key: str) -> None:
        try:
            if int(await self.redis.hincrby(key, self.node, -1)) <= 0:
                await self.redis.hdel(key, self.node)
        except Exception as exc:  # noqa: BLE001 - the slot frees itself when this process dies
            log.warning("socket budget release failed (%s)", type(exc).__name__)


class UserCommands:
    """One user's command budget on this process: a local allowance refilled by leases."""

    __slots__ = ("tokens", "refill", "conns", "wait_ms", "retry_at")

    def __init__(self) -> None:
        self.tokens = 0.0
        self.refill: asyncio.Task[bool] | None = None
        self.conns = 0
        self.wait_ms = 0  # what the shared budget said at the last refused lease
        self.retry_at = 0.0  # loop time before which no new lease is asked for


class Budgets:
    def __init__(self, node: str, redis: Any) -> None:
        self.slots = SocketSlots(node, redis)
        self.users: dict[str, UserCommands] = {}
        self.per_user_sockets = settings.HUB_MAX_SOCKETS_PER_USER
        self.per_address_sockets = settings.HUB_MAX_SOCKETS_PER_ADDRESS
        self.new_per_address = settings.HUB_NEW_SOCKETS_PER_ADDRESS_PER_S
        rate = settings.HUB_USER_COMMANDS_PER_S
        self.rate = rate
        self.burst = max(1, settings.HUB_USER_COMMAND_BURST)
        self.lease = min(self.burst, max(1, int(rate / LEASES_PER_S))) if rate > 0 else 0
        self.first_lease = max(self.lease, self.burst // 2)
        self.burst_us = settings.HUB_USER_COMMAND_BURST / rate * 1_000_000 if rate > 0 else 0.0

    # --- sockets -----------------------------------------------------------------------------

    async def open_address(self, address: str) -> int:
        """0 when a socket from `address` may open (its slot is taken), else ms to wait."""
        if self.new_per_address > 0:
            wait = await ratelimit.limiter().acquire(
                [ratelimit.Limit(f"ws:new:{address}", self.new_per_address * 60, 1,
                                 burst_us=1_000_000.0)])
            if wait:
                return wait
        if not await self.slots.acquire(f"hub:socks:a:{address}", self.per_address_sockets):
            return 5000
        return 0

    def close_address(self, address: str) -> None:
        if self.per_address_sockets > 0:
            self.slots.release(f"hub:socks:a:{address}")

    async def open_user(self, who: str) -> bool:
        """Take one of the user's socket slots and give this process a first lease of commands."""
        if not await self.slots.acquire(f"hub:socks:u:{who}", self.per_user_sockets):
            return False
        entry = self.users.get(who)
        if entry is None:
            entry = self.users[who] = UserCommands()
        entry.conns += 1
        if self.lease and entry.conns == 1 and entry.tokens < 1:
            # A first socket here starts with half the burst (as much as one connection may send at
            # once by default), leaving the other half for the user's sockets on other processes
            # (a phone and a browser connecting together); one lease when even that is spent.
            if not await self._lease(who, entry, self.first_lease):
                await self._lease(who, entry, self.lease)
        return True

    def close_user(self, who: str) -> None:
        if self.per_user_sockets > 0:
            self.slots.release(f"hub:socks:u:{who}")
        entry = self.users.get(who)
        if entry is not None:
            entry.conns -= 1
            if entry.conns <= 0:
                # Kept a moment for a reconnect to this process (it finds its lease here), then
                # forgotten and what was unspent given back to the shared budget.
                asyncio.get_running_loop().call_later(LINGER_S, self._forget, who, entry)

    def _forget(self, who: str, entry: UserCommands) -> None:
        if entry.conns > 0 or self.users.get(who) is not entry:
            return
        del self.users[who]
        unspent = int(entry.tokens)
        if unspent > 0:
            asyncio.get_running_loop().create_task(self._refund(who, unspent))

    # --- commands -----------------------------------------------------------------------------

    def take(self, who: str) -> int:
        """0 when the user may run one more command now, else ms to wait. Called per command."""
        if not self.lease:
            return 0
        entry = self.users.get(who)
        if entry is None or entry.conns <= 0:
            return 0  # not opened through open_user (a socket closing): nothing to charge
        if entry.tokens >= 1:
            entry.tokens -= 1
            if entry.tokens < self.lease and entry.refill is None:  # one lease ahead of need
                entry.refill = asyncio.get_running_loop().create_task(self._lease(who, entry, self.lease))
            return 0
        loop = asyncio.get_running_loop()
        if entry.refill is None and loop.time() >= entry.retry_at:
            entry.refill = loop.create_task(self._lease(who, entry, self.lease))
        return max(1, entry.wait_ms or int(1000 / LEASES_PER_S))

    async def _lease(self, who: str, entry: UserCommands, size: int) -> bool:
        try:
            wait = await ratelimit.limiter().acquire(
                [ratelimit.Limit(f"cmd:{who}", self.rate * 60, size, burst_us=self.burst_us)])
        except Exception:  # never let a budget failure stop a user's commands
            log.exception("command budget lease failed")
            wait = 0
        if wait:
            entry.wait_ms = wait
            entry.retry_at = asyncio.get_running_loop().time() + wait / 1000
        else:
            entry.tokens += size
            entry.wait_ms = 0
        entry.refill = None
        return not wait


    async def _refund(self, who: str, tokens: int) -> None:
        try:
            await ratelimit.limiter().acquire(
                [ratelimit.Limit(f"cmd:{who}", self.rate * 60, -tokens, burst_us=self.burst_us)])
        except Exception:  # the budget refills on its own anyway
            log.warning("command budget refund failed", exc_info=True)


def make(node: str) -> Budgets:
    return Budgets(node, hubredis.async_client())
