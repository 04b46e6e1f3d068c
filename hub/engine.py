"""The per-process hub: channel states, ordered delivery, recovery, group commit, fan-out.

One Engine per process (per event loop). What one process knows, the others learn through the
broker (Redis) or the database; the database is the record, Redis the wake-up.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from typing import Any

from django.conf import settings

from core import metrics, tracing
from core import redis as hubredis
from core.errors import HubError, unavailable
from hub import budgets, revocation, store
from hub.broker import LocalBroker, RedisBroker
from hub.centrifuge.codec import event_push
from hub.channels import unqualify
from hub.codec import encode
from hub.presence import Presence
from hub.pubs import Pub, ws_frame
from hub.rpc import run_sync
from hub.subscriber import Completion, Subscriber

log = logging.getLogger("hub.engine")
CACHE_SIZE = 512
RECOVERY_MAX = 5000
GAP_WAIT_S = 0.03


class ChannelState:
    __slots__ = ("name", "epoch", "delivered", "subs", "cache", "cache_bytes", "pending", "filling", "ready")

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.epoch = ""
        self.delivered = 0
        self.subs: dict[Subscriber, None] = {}
        # The newest publications, for recovery without the database: bounded in count and bytes.
        self.cache: deque[Pub] = deque()
        self.cache_bytes = 0
        self.pending: dict[int, Pub] = {}
        self.filling = False
        self.ready: asyncio.Future[None] = loop.create_future()

    def cached_after(self, offset: int) -> list[Pub] | None:
        """Pubs after `offset` up to delivered from the hot cache, or None if it does not reach back."""
        if offset >= self.delivered:
            return []
        if not self.cache or self.cache[0].offset > offset + 1:
            return None
        return [p for p in self.cache if p.offset > offset]


def cached_page(cached: list[Pub], top: int, after: int | None, before: int | None, limit: int,
                max_bytes: int) -> tuple[list[Pub], bool] | None:
    """`store.read_bounded`'s page (same rows, same byte budget) from a contiguous run of cached
    publications, or None when the run does not hold all of it."""
    if limit <= 0:
        return None
    low = (after or 0) + 1
    high = top if before is None else min(before - 1, top)
    if high < low:
        return [], False
    first, last = (low, min(high, low + limit - 1)) if after is not None else (max(low, high - limit + 1), high)
    base = cached[0].offset
    if first < base or last > cached[-1].offset or cached[-1].offset - base != len(cached) - 1:
        return None
    wanted = cached[first - base:last - base + 1]
    ordered = wanted if after is not None else wanted[::-1]
    total = 0
    kept = 0
    for pub in ordered:
        # The database counts the stored JSON text of the data plus ITEM_OVERHEAD per row.
        total += len(pub.data_json()) + store.ITEM_OVERHEAD
        if total > max_bytes:
            break
        kept += 1
    cut = kept < len(ordered)
    page = ordered[:kept]
    return (page if after is not None else page[::-1]), cut


class Engine:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.node = secrets.token_hex(6)
        self.channels: dict[str, ChannelState] = {}
        self.conns: set[Subscriber] = set()
        self.draining = False
        self.writer = store.Writer(loop, self._on_batch)
        # Limits read once (Django settings access costs on every frame).
        self.max_queue = settings.HUB_MAX_QUEUE_BYTES
        self.max_frame = settings.HUB_MAX_FRAME_BYTES
        self.max_bad = settings.HUB_MAX_BAD_FRAMES
        # A subscribe/history reply stays well under the outbound queue limit, so a reader that
        # recovers while publications keep arriving is never cut off as a slow consumer.
        self.max_reply = settings.HUB_MAX_REPLY_BYTES
        self.cache_cap = settings.HUB_CACHE_BYTES
        self.cache_total_cap = settings.HUB_CACHE_TOTAL_BYTES
        self.cache_total = 0
        self.stats = {"published": 0, "delivered": 0, "slow_consumers": 0, "recovered": 0,
                      "not_recovered": 0, "gap_fills": 0}
        if settings.REDIS_URL:
            self.broker: LocalBroker | RedisBroker = RedisBroker(
                settings.REDIS_URL, self.node, self.on_remote_pubs, self.on_remote_event, self.resync,
                self._on_control)
            self.presence = Presence(self.node, hubredis.async_client(), self._announce_remote)
        else:
            self.broker = LocalBroker()
            self.presence = Presence(self.node, None, self._announce_remote)
        self.budgets = budgets.make(self.node)
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.broker.start()
        await self.presence.start()
        store.on_domain_commit(self._domain_commit_threadsafe)
        store.on_invalidate(self._drop_caches_threadsafe)
        revocation.on_revoked(self._revoked_threadsafe)

    def _drop_caches_threadsafe(self) -> None:
        self.loop.call_soon_threadsafe(self.drop_caches)

    def _revoked_threadsafe(self, rev: revocation.Revocation) -> None:
        self.loop.call_soon_threadsafe(self.close_revoked, rev)

    def _on_control(self, msg: bytes) -> None:
        if msg == b"drop_caches":
            self.drop_caches()
        elif msg.startswith(revocation.CONTROL_PREFIX):
            revocation.apply_message(msg)  # news reaches close_revoked through the listener

    def close_revoked(self, rev: revocation.Revocation) -> None:
        """Close (4001) every socket of this process whose current token `rev` covers."""
        for conn in list(self.conns):
            caller = conn.caller
            if caller is not None and revocation.matches(rev, caller.tenant, caller.user, conn.iat, conn.jti):
                conn.close(4001)

    def drop_caches(self) -> None:
        """Forget hot copies of publications (after an erasure): recovery then reads the database."""
        for st in self.channels.values():
            st.cache.clear()
            st.cache_bytes = 0
        self.cache_total = 0

    # --- subscribe / unsubscribe ---------------------------------------------------------

    async def attach(self, conn: Subscriber, channel: str, since: dict[str, Any] | None,
                     window_s: int) -> dict[str, Any]:
        st = self.channels.get(channel)
        if st is None:
            st = ChannelState(channel, self.loop)
            self.channels[channel] = st
            try:
                await self.broker.subscribe(channel)
                st.delivered, st.epoch = await run_sync(store.head, channel)
            except (Exception, asyncio.CancelledError) as exc:
                # Cancelled too (the subscribing socket closed mid-way): a state left never ready
                # would hang every later subscribe to this channel in this process.
                if self.channels.get(channel) is st:
                    del self.channels[channel]
                st.ready.set_exception(unavailable())
                st.ready.exception()  # consumed: waiters get their own error
                if isinstance(exc, (HubError, asyncio.CancelledError)):
                    raise
                log.warning("attach %s failed: %s", channel, type(exc).__name__)
                raise unavailable("the database is unavailable; retry") from exc
            st.ready.set_result(None)
            self._drain_pending(st)
        elif not st.ready.done():
            try:
                await asyncio.shield(st.ready)
            except Exception as exc:
                raise unavailable("channel could not be opened; retry") from exc
        recovered = False
        pubs: list[Pub] = []
        if since is not None:
            recovered, pubs = await self._recover(st, since, window_s)
            self.stats["recovered" if recovered else "not_recovered"] += 1
        st.subs[conn] = None
        return {"offset": st.delivered, "epoch": st.epoch, "recovered": recovered,
                "pubs": [p.as_item() for p in pubs]}

    async def _recover(self, st: ChannelState, since: dict[str, Any], window_s: int) -> tuple[bool, list[Pub]]:
        offset = since["offset"]
        if since["epoch"] != st.epoch:
            return False, []
        if offset > st.delivered:
            # The client saw newer publications through another process than this one has
            # delivered yet (their wake-ups are still on the way through Redis, e.g. right after a
            # roll or a kill moved it here): read them from the database before deciding. Only an
            # offset ahead of the channel itself is refused.
            try:
                newer = await run_sync(store.read, st.name, st.epoch, st.delivered, offset + 1,
                                       min(offset - st.delivered, RECOVERY_MAX))
            except Exception as exc:
                raise unavailable("history is unavailable; retry") from exc
            for pub in newer:
                self.deliver(pub)  # in order, to this channel's subscribers too; duplicates ignored
            if offset > st.delivered:
                return False, []
        if st.delivered - offset > RECOVERY_MAX:
            return False, []
        pubs = st.cached_after(offset)
        if pubs is None:
            target = st.delivered
            try:
                pubs, cut = await run_sync(store.read_bounded, st.name, st.epoch, offset, target + 1,
                                           target - offset, self.max_reply)
            except Exception as exc:
                raise unavailable("history is unavailable; retry") from exc
            if cut:
                return False, []  # more than one reply may carry: the client pages with history
            if [p.offset for p in pubs] != list(range(offset + 1, target + 1)):
                return False, []  # purged: older than retention
            # Anything delivered while we read comes from the cache, which always holds the newest.
            extra = st.cached_after(target)
            if extra is None:
                return False, []
            pubs += extra
        if sum(p.size() for p in pubs) > self.max_reply:
            return False, []
        if pubs and pubs[0].ts < (time.time() - window_s) * 1000:
            return False, []
        return True, pubs

    async def history(self, channel: str, after: int | None, before: int | None, limit: int
                      ) -> tuple[int, str, list[Pub], bool]:
        """A page of `channel`'s stream: (top, epoch, pubs, cut). From `after` on, the first
        `limit` after it; without `after`, the newest `limit` before `before` (or the top); at most
        one reply's bytes (HUB_MAX_REPLY_BYTES), `cut` when fewer than `limit` fitted.

        The top and epoch come from the database, so a read never lags a publication committed on
        another process; the page comes from this process's hot cache when the channel is open here
        and has been delivered up to the top, else from the database (the same rows either way)."""
        st = self.channels.get(channel)
        cached: list[Pub] | None = None
        known_epoch = ""
        if st is not None and st.cache and st.ready.done():
            cached, known_epoch = list(st.cache), st.epoch  # a snapshot: the loop keeps delivering
        max_bytes = self.max_reply

        def read() -> tuple[int, str, list[Pub], bool]:
            top, epoch = store.head(channel)
            if cached is not None and epoch == known_epoch:
                page = cached_page(cached, top, after, before, limit, max_bytes)
                if page is not None:
                    return top, epoch, page[0], page[1]
            pubs, cut = store.read_bounded(channel, epoch, after or 0, before, limit, max_bytes,
                                           newest=after is None)
            return top, epoch, pubs, cut

        try:
            return await run_sync(read)
        except Exception as exc:
            raise unavailable("history is unavailable; retry") from exc

    def detach(self, conn: Subscriber, channel: str) -> None:
        st = self.channels.get(channel)
        if st is None:
            return
        st.subs.pop(conn, None)
        if not st.subs and st.ready.done():
            del self.channels[channel]
            self.cache_total -= st.cache_bytes
            self.loop.create_task(self.broker.unsubscribe(channel))

    # --- publish ----------------------------------------------------------------------------

    def submit(self, channel: str, data: Any, body: str, sender: str | None, key: str | None
               ) -> asyncio.Future[tuple[Pub, bool]]:
        """Queue a durable publication (HTTP, server code); the future resolves after commit
        (pub, duplicate)."""
        fut: asyncio.Future[tuple[Pub, bool]] = self.loop.create_future()

        def done(_tag: int, result: tuple[Pub, bool] | None, error: HubError | None, _t0: float) -> None:
            if fut.done():
                return
            if error is not None:
                fut.set_exception(error)
            else:
                assert result is not None
                fut.set_result(result)

        self.writer.submit(channel, data, body, sender, key, done,
                           trace=tracing.current() if tracing.ENABLED else None)
        return fut

    def publish(self, channel: str, data: Any, body: str, sender: str | None, key: str | None,
                done: Completion, cid: int, span: Any = None) -> None:
        """Queue a socket's publish; the writer calls `done(cid, ...)` after commit (no future per
        publish). `span` (tracing) is the publish command's, ended with the reply."""
        self.writer.submit(channel, data, body, sender, key, done, cid, span)

    def _on_batch(self, batch: list[store.Pending]) -> None:
        pubs = store.committed(batch)
        if not pubs:
            return
        self.stats["published"] += len(pubs)
        if tracing.ENABLED:
            self._traced_fanout(pubs, "commit")
            return
        for pub in pubs:
            self.deliver(pub)
        self.broker.publish(pubs)

    def _domain_commit_threadsafe(self, pubs: list[Pub]) -> None:
        self.loop.call_soon_threadsafe(self._domain_commit, pubs)

    def _domain_commit(self, pubs: list[Pub]) -> None:
        if tracing.ENABLED:
            self._traced_fanout(pubs, "domain")
            return
        for pub in pubs:
            self.deliver(pub)
        self.broker.publish(pubs)

    def _traced_fanout(self, pubs: list[Pub], source: str) -> None:
        """Tracing on: one fan-out span for the batch (child of its first traced publication, linked
        to the others), around the local deliveries and the hand-over to the broker."""
        parents = [p.trace for p in pubs if p.trace is not None]
        if not parents:
            for pub in pubs:
                self.deliver(pub)
            self.broker.publish(pubs)
            return
        delivered = self.stats["delivered"]
        span = tracing.batch_span("hub.fanout", parents, {"hub.source": source, "hub.publications": len(pubs)})
        with tracing.active(span):
            for pub in pubs:
                self.deliver(pub)
            self.broker.publish(pubs)
            span.set_attribute("hub.deliveries", self.stats["delivered"] - delivered)

    def on_remote_pubs(self, pubs: list[Pub]) -> None:
        """Publications another process committed, as one broker message carried them."""
        if tracing.ENABLED:
            parents = [p.trace for p in pubs if p.trace is not None]
            if parents:
                delivered = self.stats["delivered"]
                span = tracing.batch_span("hub.fanout", parents, {"hub.source": "broker",
                                                                  "hub.publications": len(pubs)})
                with tracing.active(span):
                    for pub in pubs:
                        self.deliver(pub)
                    span.set_attribute("hub.deliveries", self.stats["delivered"] - delivered)
                return
        for pub in pubs:
            self.deliver(pub)

    # --- ordered delivery -----------------------------------------------------------------

    def deliver(self, pub: Pub) -> None:
        st = self.channels.get(pub.channel)
        if st is None:
            return
        if not st.ready.done():
            st.pending[pub.offset] = pub
            return
        if pub.offset <= st.delivered:
            return  # seen already (a gap fill or a duplicate wake-up)
        if pub.offset == st.delivered + 1:
            self._emit(st, pub)
            if st.pending:
                self._drain_pending(st)
            return
        st.pending[pub.offset] = pub
        if not st.filling:
            st.filling = True
            self.loop.call_later(GAP_WAIT_S, lambda: self.loop.create_task(self._fill(st)))

    def _drain_pending(self, st: ChannelState) -> None:
        for off in sorted(st.pending):
            if off <= st.delivered:
                del st.pending[off]
        while st.delivered + 1 in st.pending:
            self._emit(st, st.pending.pop(st.delivered + 1))

    async def _fill(self, st: ChannelState) -> None:
        """A gap stayed open: the missing offsets are committed (a later one is), so read them."""
        try:
            while st.pending and self.channels.get(st.name) is st:
                low = min(st.pending)
                if low <= st.delivered + 1:
                    self._drain_pending(st)
                    continue
                self.stats["gap_fills"] += 1
                try:
                    missing = await run_sync(store.read, st.name, st.epoch, st.delivered, low, low - st.delivered)
                except Exception:  # noqa: BLE001 - retry shortly; order is kept meanwhile
                    await asyncio.sleep(0.5)
                    continue
                for pub in missing:
                    if pub.offset == st.delivered + 1:
                        self._emit(st, pub)
                self._drain_pending(st)
                if st.pending and min(st.pending) > st.delivered + 1 and not missing:
                    await asyncio.sleep(0.2)
        finally:
            st.filling = False

    def resync(self) -> None:
        """After a broker outage: read what every open channel may have missed."""
        for st in list(self.channels.values()):
            if st.ready.done() and not st.ready.exception():
                self.loop.create_task(self._catch_up(st))

    async def _catch_up(self, st: ChannelState) -> None:
        while self.channels.get(st.name) is st:
            try:
                pubs = await run_sync(store.read, st.name, st.epoch, st.delivered, None, 1000)
            except Exception:  # noqa: BLE001
                await asyncio.sleep(0.5)
                continue
            for pub in pubs:
                self.deliver(pub)
            if len(pubs) < 1000:
                return

    def _emit(self, st: ChannelState, pub: Pub) -> None:
        st.delivered = pub.offset
        if not st.subs:
            self._cache(st, pub)
            return
        metrics.delivery_latency(time.time() - pub.ts / 1000)
        max_queue = self.max_queue
        n = 0
        frames: dict[int, tuple[bytes, bytes]] = {}  # format -> (wire frame, payload), built once each
        for conn in list(st.subs):
            if conn.sink.pending() > max_queue:
                self._cut_off(conn)
                continue
            fmt = conn.fmt
            pair = frames.get(fmt)
            if pair is None:
                pair = frames[fmt] = (pub.wire(fmt), pub.frame(fmt))
            conn.sink.write_frame(pair[0], pair[1], conn.binary)
            n += 1
        self.stats["delivered"] += n
        self._cache(st, pub)  # after the writes: its size comes from a frame already built

    def _cut_off(self, conn: Subscriber) -> None:
        """A socket more than HUB_MAX_QUEUE_BYTES behind is closed (4009; it reconnects and
        recovers), so one slow reader never holds memory or delays the others. The one cut-off, for
        deliveries, events and replies alike."""
        self.stats["slow_consumers"] += 1
        conn.close(4009)

    def cut_if_behind(self, conn: Subscriber) -> bool:
        if conn.sink.pending() <= self.max_queue:
            return False
        self._cut_off(conn)
        return True

    def _cache(self, st: ChannelState, pub: Pub) -> None:
        size = pub.size()
        cache = st.cache
        cache.append(pub)
        st.cache_bytes += size
        self.cache_total += size
        # Oldest first out: past the channel's count or bytes, or past the process's total (then
        # the channel that grows gives way, down to its newest publication).
        while len(cache) > 1 and (len(cache) > CACHE_SIZE or st.cache_bytes > self.cache_cap
                                  or self.cache_total > self.cache_total_cap):
            old = cache.popleft().size()
            st.cache_bytes -= old
            self.cache_total -= old

    # --- ephemeral: signals, join/leave ---------------------------------------------------

    def event(self, channel: str, frame: dict[str, Any], exclude: Subscriber | None = None) -> None:
        self.on_remote_event(channel, frame, exclude)
        self.broker.event(channel, frame)

    def on_remote_event(self, channel: str, frame: dict[str, Any], exclude: Subscriber | None = None) -> None:
        st = self.channels.get(channel)
        if st is None or not st.subs:
            return
        encoded: dict[int, tuple[bytes, bytes]] = {}
        for conn in list(st.subs):
            if conn is exclude:
                continue
            binary = conn.binary
            fmt = conn.fmt
            if fmt > 1 and not conn.wants_event(unqualify(channel), frame):
                continue
            pair = encoded.get(fmt)
            if pair is None:
                payload = encode(frame, binary) if fmt < 2 else event_push(frame, binary)
                pair = encoded[fmt] = (ws_frame(payload, binary), payload)
            if conn.sink.pending() > self.max_queue:
                self._cut_off(conn)
                continue
            conn.sink.write_frame(pair[0], pair[1], binary)

    def _announce_remote(self, channel: str, kind: str, user: str) -> None:
        self.event(channel, {"push": kind, "channel": unqualify(channel), "user": user})

    # --- drain ----------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Stop taking work, close every socket with 1012, let in-flight commits finish."""
        self.draining = True
        for conn in list(self.conns):
            try:
                conn.close(1012)
            except Exception:
                log.debug("close during drain failed", exc_info=True)
        try:
            await asyncio.wait_for(self.writer.idle.wait(), timeout)
        except TimeoutError:
            log.warning("drain: %d publications still committing at timeout", self.writer.inflight)
        self.writer.stop()
        await self.presence.close()
        await self.broker.close()


_engines: dict[int, Engine] = {}


async def get_engine() -> Engine:
    loop = asyncio.get_running_loop()
    engine = _engines.get(id(loop))
    if engine is None:
        engine = _engines[id(loop)] = Engine(loop)
        await engine.start()
    return engine


def current() -> Engine | None:
    """The engine of this process if one runs (for plain functions that ask, e.g. presence)."""
    return next(iter(_engines.values()), None)


def is_user_online(tenant: str, user: str) -> bool:
    """Whether `user` of `tenant` holds a subscription in this process."""
    engine = current()
    return engine is not None and engine.presence.online(tenant, user)


async def foreground_users(users: list[str]) -> set[str]:
    """Which of `users` (each `<tenant>/<user>`, hub.channels.qualify) have a socket that reaches
    them now, on any process: subscribed to their own `user:` channel and not put in the background
    by the app (devices.state). Without Redis, this process's sockets only."""
    from hub.connection import FOREGROUND_PREFIX

    engine = current()
    if engine is None or not users:
        return set()
    found = await engine.presence.present([FOREGROUND_PREFIX + u for u in users])
    return {c[len(FOREGROUND_PREFIX):] for c in found}
