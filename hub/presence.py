"""Who is on a channel, across processes.

Each process counts its own sockets per (channel, user). With Redis, the counts live in a hash
per channel whose fields carry the node id; a node's liveness key expires 30 s after its last
heartbeat, and survivors reap a dead node's fields (and announce the leaves) within 60 s.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings

log = logging.getLogger("hub.presence")
# A node's liveness key lives NODE_TTL_S; survivors reap within TTL + one heartbeat (< 60 s by default).
NODE_TTL_S = settings.HUB_PRESENCE_TTL_S
HEARTBEAT_S = max(1, NODE_TTL_S // 3)


class Presence:
    def __init__(self, node: str, redis: Any, announce: Callable[[str, str, str], None]) -> None:
        self.node = node
        self.redis = redis
        self.announce = announce  # (channel, "join"|"leave", user)
        self.local: dict[str, dict[str, list[Any]]] = {}
        self.alive_cache: tuple[float, set[str]] = (0.0, set())
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.redis is not None:
            self.task = asyncio.get_running_loop().create_task(self._heartbeat())

    def join(self, channel: str, user: str, role: str) -> bool:
        users = self.local.setdefault(channel, {})
        entry = users.get(user)
        if entry is None:
            users[user] = [role, 1]
            self._remote(channel, user, role, 1)
            return True
        entry[1] += 1
        self._remote(channel, user, role, 1)
        return False

    def leave(self, channel: str, user: str) -> bool:
        users = self.local.get(channel)
        if not users or user not in users:
            return False
        entry = users[user]
        entry[1] -= 1
        self._remote(channel, user, entry[0], -1)
        if entry[1] <= 0:
            del users[user]
            if not users:
                del self.local[channel]
            return True
        return False

    def online(self, tenant: str, user: str) -> bool:
        """`user` of `tenant` is on some channel here (channels are tenant-qualified: hub.channels)."""
        prefix = tenant + "/"
        return any(user in users and channel.startswith(prefix) for channel, users in self.local.items())

    async def present(self, channels: list[str]) -> set[str]:
        """Which of `channels` have a member on a live process (one Redis round trip for all)."""
        found = {c for c in channels if self.local.get(c)}
        rest = [c for c in channels if c not in found]
        if not rest or self.redis is None:
            return found
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for channel in rest:
                    pipe.hgetall(f"hub:pres:{channel}")
                answers = await pipe.execute()
            alive = await self._alive()
        except Exception as exc:  # noqa: BLE001 - what this process knows is the answer then
            log.warning("presence read failed (%s)", type(exc).__name__)
            return found
        for channel, fields in zip(rest, answers, strict=True):
            for raw, count in fields.items():
                node = raw.decode().split("|", 1)[0]
                if int(count) > 0 and node in alive and node != self.node:
                    found.add(channel)
                    break
        return found

    def _remote(self, channel: str, user: str, role: str, delta: int) -> None:
        if self.redis is None:
            return
        asyncio.get_running_loop().create_task(self._bump(channel, f"{self.node}|{user}|{role}", delta))

    async def _bump(self, channel: str, field: str, delta: int) -> None:
        key = f"hub:pres:{channel}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, field, delta)
                pipe.sadd(f"hub:nodechans:{self.node}", channel)
                count = (await pipe.execute())[0]
            if int(count) <= 0:
                await self.redis.hdel(key, field)
        except Exception as exc:  # noqa: BLE001 - presence is advisory; local counts still hold
            log.warning("presence update failed (%s)", type(exc).__name__)

    async def members(self, channel: str) -> list[dict[str, Any]]:
        if self.redis is None:
            return [{"user": u, "role": e[0], "conns": e[1]} for u, e in self.local.get(channel, {}).items()]
        try:
            fields = await self.redis.hgetall(f"hub:pres:{channel}")
            alive = await self._alive()
        except Exception:  # noqa: BLE001 - fall back to what this process knows
            return [{"user": u, "role": e[0], "conns": e[1]} for u, e in self.local.get(channel, {}).items()]
        # This process's own sockets come from its local counts (its Redis writes may still be in flight).
        out: dict[str, dict[str, Any]] = {
            u: {"user": u, "role": e[0], "conns": e[1]} for u, e in self.local.get(channel, {}).items()}
        for raw, count in fields.items():
            node, user, role = raw.decode().split("|", 2)
            n = int(count)
            if n <= 0 or node not in alive or node == self.node:
                continue
            entry = out.setdefault(user, {"user": user, "role": role, "conns": 0})
            entry["conns"] += n
        return list(out.values())

    async def _alive(self) -> set[str]:
        stamp, alive = self.alive_cache
        if time.monotonic() - stamp < 2:
            return alive
        nodes = [n.decode() for n in await self.redis.smembers("hub:nodes")]
        flags = await self.redis.mget([f"hub:node:{n}" for n in nodes]) if nodes else []
        alive = {n for n, f in zip(nodes, flags, strict=True) if f is not None} | {self.node}
        self.alive_cache = (time.monotonic(), alive)
        return alive

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self.redis.set(f"hub:node:{self.node}", "1", ex=NODE_TTL_S)
                await self.redis.sadd("hub:nodes", self.node)
                await self._reap()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                log.warning("presence heartbeat failed (%s)", type(exc).__name__)
            await asyncio.sleep(HEARTBEAT_S)

    async def _reap(self) -> None:
        nodes = [n.decode() for n in await self.redis.smembers("hub:nodes")]
        for node in nodes:
            if node == self.node or await self.redis.exists(f"hub:node:{node}"):
                continue
            # SREM decides which survivor reaps (and announces) a dead node: exactly one.
            if not await self.redis.srem("hub:nodes", node):
                continue
            chans = [c.decode() for c in await self.redis.smembers(f"hub:nodechans:{node}")]
            for channel in chans:
                key = f"hub:pres:{channel}"
                for raw in list(await self.redis.hkeys(key)):
                    n, user, _role = raw.decode().split("|", 2)
                    if n == node:
                        await self.redis.hdel(key, raw)
                        self.announce(channel, "leave", user)
            await self.redis.delete(f"hub:nodechans:{node}")
            log.info("reaped presence of dead node %s", node)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.redis is not None:
            try:
                for channel, users in self.local.items():
                    for user, (role, _n) in users.items():
                        await self.redis.hdel(f"hub:pres:{channel}", f"{self.node}|{user}|{role}")
                await self.redis.delete(f"hub:node:{self.node}", f"hub:nodechans:{self.node}")
                await self.redis.srem("hub:nodes", self.node)
            except Exception:  # noqa: BLE001
                pass
