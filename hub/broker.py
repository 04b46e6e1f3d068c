"""Cross-process fan-out. Each process subscribes once per channel (not per socket).

LocalBroker: one process, nothing to cross. RedisBroker: plain Redis pub/sub, one connection
per process for subscriptions; messages are `node id | msgpack` so a process skips its own at
the cost of a byte comparison. Redis is a wake-up signal, not the record: the database is. A
subscriber that sees a gap, or a broker that reconnects, fills from storage.

With tracing on, a publications message carries a fourth element: each publication's W3C
traceparent (or None), so the fan-out in the other processes joins the publisher's trace.
Processes that do not know it read the first three and ignore it (a rolling upgrade mixes both).
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import Any

import msgpack

from core import redis as hubredis
from core import tracing
from hub.pubs import Pub

log = logging.getLogger("hub.broker")
PREFIX = "hub:c:"
CONTROL = "hub:ctl"  # operational messages to every process (see hub.store.invalidate_caches)
# ARGV: channel, message, channel, message, ... (channels are not keys: no KEYS to declare).
PUBLISH_ALL = "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end return #ARGV / 2"


class LocalBroker:
    async def start(self) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        return None

    async def unsubscribe(self, channel: str) -> None:
        return None

    def publish(self, pubs: list[Pub]) -> None:
        return None

    def event(self, channel: str, frame: dict[str, Any]) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisBroker:
    def __init__(self, url: str, node: str, on_pubs: Callable[[list[Pub]], None],
                 on_event: Callable[[str, dict[str, Any]], None], on_resync: Callable[[], None],
                 on_control: Callable[[bytes], None] = lambda msg: None) -> None:
        import redis.asyncio as aredis

        self.url = url
        self.node = node.encode()
        self.head = self.node + b"|"
        self.on_pubs = on_pubs
        self.on_event = on_event
        self.on_resync = on_resync
        self.on_control = on_control
        self.prefix = hubredis.pubsub_name(PREFIX)
        self.control = hubredis.pubsub_name(CONTROL)
        # No per-reply socket timeout (each costs an asyncio timer): the flush has one overall bound.
        self.pub_client = aredis.Redis.from_url(url, socket_connect_timeout=2)
        self.publish_all = self.pub_client.register_script(PUBLISH_ALL)
        self.sub_client = aredis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=15)
        self.pubsub = self.sub_client.pubsub(ignore_subscribe_messages=False)
        self.channels: set[str] = set()
        self.waiting: dict[str, list[asyncio.Future[None]]] = {}
        self.out: list[tuple[str, bytes]] = []
        self.out_pubs: dict[str, list[Pub]] = {}
        self.flush_scheduled = False
        self.task: asyncio.Task[None] | None = None
        self.connected = False

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._listen())

    async def subscribe(self, channel: str) -> None:
        """Returns once Redis confirms: from then on no publication to it can be missed."""
        self.channels.add(channel)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(self.prefix + channel, []).append(fut)
        if not self.connected:
            return  # subscribed on reconnect, and the resync then fills from storage
        try:
            await self.pubsub.subscribe(self.prefix + channel)
            await asyncio.wait_for(asyncio.shield(fut), 5)
        except Exception as exc:  # noqa: BLE001 - same as disconnected: resync covers it
            log.warning("redis subscribe failed (%s)", type(exc).__name__)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        try:
            await self.pubsub.unsubscribe(self.prefix + channel)
        except Exception:  # noqa: BLE001 - resubscription on reconnect uses self.channels
            pass

    def publish(self, pubs: list[Pub]) -> None:
        # Gathered per channel until the flush: one PUBLISH carries all of a channel's new offsets.
        out = self.out_pubs
        for p in pubs:
            group = out.get(p.channel)
            if group is None:
                out[p.channel] = [p]
            else:
                group.append(p)
        self._schedule()

    def event(self, channel: str, frame: dict[str, Any]) -> None:
        self.out.append((self.prefix + channel, self.head + msgpack.packb((1, channel, frame), use_bin_type=True)))
        self._schedule()

    def _schedule(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            # A context of its own: the flush serves many publications, whatever span scheduled it
            # (tracing: the fan-out span times the hand-over; no Redis span per flush).
            asyncio.get_running_loop().create_task(self._flush(), context=contextvars.Context())

    async def _flush(self) -> None:
        # One pipeline per loop turn: many publications, one round trip.
        await asyncio.sleep(0)
        self.flush_scheduled = False
        out, self.out = self.out, []
        groups, self.out_pubs = self.out_pubs, {}
        for channel, pubs in groups.items():
            # The JSON push frame travels as is: JSON subscribers elsewhere reuse it untouched.
            items = [(p.offset, p.epoch, p.ts, p.sender, p.frame(False)) for p in pubs]
            message: tuple[Any, ...] = (0, channel, items)
            if tracing.ENABLED:
                traces = tracing.traceparents([p.trace for p in pubs])
                if traces is not None:
                    message = (0, channel, items, traces)
            out.append((self.prefix + channel, self.head + msgpack.packb(message, use_bin_type=True)))
        if not out:
            return
        try:
            # asyncio.timeout, not wait_for: no extra task per flush.
            async with asyncio.timeout(5):
                if len(out) == 1:
                    await self.pub_client.publish(*out[0])
                else:
                    # One command for the whole flush (a job tells 50 providers: 50 channels): the
                    # script publishes in order; a pipeline costs the client one command and reply each.
                    await self.publish_all(args=[part for item in out for part in item])
        except Exception as exc:  # noqa: BLE001 - durable pubs are recovered by resync
            log.warning("redis publish failed (%s); other processes resync on reconnect", type(exc).__name__)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                if not self.connected:
                    await self.pubsub.ping()
                    names = [self.prefix + c for c in self.channels]
                    await self.pubsub.subscribe(self.control, *names)
                    if backoff > 0.1:  # a reconnect, not the first start
                        log.warning("redis reconnected; resyncing %d channels", len(names))
                        self.on_resync()
                    self.connected = True
                    backoff = 0.1
                msg = await self.pubsub.get_message(timeout=1.0)
                if msg is None:
                    continue
                kind = msg["type"]
                if kind == b"message" or kind == "message":
                    if msg["channel"] in (self.control, self.control.encode()):
                        self.on_control(msg["data"])
                    else:
                        self._dispatch(msg["data"])
                elif kind in ("subscribe", b"subscribe"):
                    name = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
                    for fut in self.waiting.pop(name, []):
                        if not fut.done():
                            fut.set_result(None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep listening through Redis restarts
                if self.connected:
                    log.warning("redis subscription lost (%s)", type(exc).__name__)
                self.connected = False
                try:
                    await self.pubsub.aclose()
                except Exception:  # noqa: BLE001
                    pass
                self.pubsub = self.sub_client.pubsub(ignore_subscribe_messages=False)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0) if backoff > 0.1 else 0.2

    def _dispatch(self, data: bytes) -> None:
        if data.startswith(self.head):
            return  # our own; already delivered locally
        try:
            body = msgpack.unpackb(data[data.index(b"|") + 1:], raw=False)
            if body[0] == 0:
                channel = body[1]
                pubs = [Pub.from_json_frame(channel, offset, epoch, ts, sender, frame)
                        for offset, epoch, ts, sender, frame in body[2]]
                if len(body) > 3 and tracing.ENABLED and isinstance(body[3], list):
                    for pub, ctx in zip(pubs, tracing.parse_traceparents(body[3]), strict=False):
                        pub.trace = ctx
                self.on_pubs(pubs)
            else:
                self.on_event(body[1], body[2])
        except Exception:
            log.exception("bad broker message")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        try:
            await self.pubsub.aclose()
            await self.sub_client.aclose()
            await self.pub_client.aclose()
        except Exception:  # noqa: BLE001
            pass
