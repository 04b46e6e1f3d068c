"""hub.engine in process, with fake subscribers: subscribe, ordered delivery, gap fill, the
slow-consumer cut-off, recovery, history through the engine, events, revocation, the hot cache."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from django.db import transaction

from hub import engine as engine_mod
from hub import revocation, store
from hub.broker import LocalBroker
from hub.engine import Engine
from hub.pubs import Pub
from tests.hub.fakes import FakeSubscriber, deaf, running_engine, until
from tests.support import uid

BIG = "x" * 60_000


def run(scenario: Callable[[Engine], Awaitable[None]], redis: bool = False) -> None:
    async def main() -> None:
        async with running_engine(redis) as eng:
            await scenario(eng)

    asyncio.run(main())


def channel() -> str:
    return f"t1/chat:{uid('r')}"


async def publish(eng: Engine, name: str, *texts: str, key: str | None = None) -> list[Pub]:
    futures = [eng.submit(name, {"text": t}, orjson.dumps({"text": t}).decode(), "alice", key) for t in texts]
    return [pub for pub, _dup in await asyncio.gather(*futures)]


def appended(name: str, count: int) -> list[Pub]:
    """Publications committed by domain code (not delivered to an engine that is not started)."""
    out = []
    for i in range(count):
        with transaction.atomic():
            out.append(store.append(name, {"n": i}))
    return out


def test_subscribers_get_every_publication_once_in_order() -> None:
    async def scenario(eng: Engine) -> None:
        name = channel()
        a, b = FakeSubscriber(), FakeSubscriber(binary=True)
        first = await eng.attach(a, name, None, 60)
        assert first == {"offset": 0, "epoch": first["epoch"], "recovered": False, "pubs": []}
        await eng.attach(b, name, None, 60)
        pubs = await publish(eng, name, "one", "two", "three")
        assert [p.offset for p in pubs] == [1, 2, 3]
        await until(lambda: len(b.pubs()) == 3)
        for sub in (a, b):
            got = sub.pubs()
            assert [(p["offset"], p["data"]["text"]) for p in got] == [(1, "one"), (2, "two"), (3, "three")]
            assert {p["channel"] for p in got} == {name.partition("/")[2]}  # the protocol name
        eng.detach(a, name)
        await publish(eng, name, "four")
        await until(lambda: len(b.pubs()) == 4)
        assert len(a.pubs()) == 3
        eng.detach(b, name)
        assert name not in eng.channels  # the last subscriber gone, the state goes

    run(scenario)


def test_out_of_order_wake_ups_are_delivered_in_order_and_a_gap_is_filled_from_the_database() -> None:
    async def scenario(eng: Engine) -> None:
        name = channel()
        sub = FakeSubscriber()
        await eng.attach(sub, name, None, 60)
        deaf(eng)
        p1, p2, p3, p4 = await asyncio.to_thread(appended, name, 4)
        eng.deliver(p2)  # ahead of 1: held
        assert sub.pubs() == []
        eng.deliver(p1)
        assert [p["offset"] for p in sub.pubs()] == [1, 2]
        eng.deliver(p1)  # a duplicate wake-up
        eng.deliver(p4)  # 3 never comes this way: read from the database after a short wait
        await until(lambda: len(sub.pubs()) == 4)
        assert [p["offset"] for p in sub.pubs()] == [1, 2, 3, 4] and eng.stats["gap_fills"] == 1
        assert p3.offset == 3

    run(scenario)


def test_domain_commits_reach_subscribers_after_commit() -> None:
    async def scenario(eng: Engine) -> None:
        name = channel()
        sub = FakeSubscriber()
        await eng.attach(sub, name, None, 60)
        await asyncio.to_thread(appended, name, 2)
        await until(lambda: len(sub.pubs()) == 2)
        assert [p["data"] for p in sub.pubs()] == [{"n": 0}, {"n": 1}]

    run(scenario)


def test_a_slow_subscriber_is_cut_off_and_the_others_keep_receiving() -> None:
    async def scenario(eng: Engine) -> None:
        name = channel()
        slow, fast, sender = FakeSubscriber(), FakeSubscriber(), FakeSubscriber()
        for sub in (slow, fast, sender):
            await eng.attach(sub, name, None, 60)
        await publish(eng, name, "a")
        slow.sink.backlog = eng.max_queue + 1  # its transport stopped draining
        await publish(eng, name, "b")
        await until(lambda: len(fast.pubs()) == 2)
        assert slow.closed == 4009 and len(slow.pubs()) == 1 and eng.stats["slow_consumers"] == 1
        eng.detach(slow, name)  # what its close does
        # The same cut-off guards events and replies.
        eng.event(name, {"push": "signal", "channel": "chat:x", "from": "s", "data": 1}, exclude=sender)
        assert [f["push"] for f in fast.frames()] == ["pub", "pub", "signal"]
        assert [f["push"] for f in sender.frames()] == ["pub", "pub"]  # the sender is not echoed
        fast.sink.backlog = eng.max_queue + 1
        eng.event(name, {"push": "signal", "channel": "chat:x", "from": "s", "data": 2}, exclude=sender)
        assert fast.closed == 4009 and len(fast.frames()) == 3
        assert eng.cut_if_behind(fast) and not eng.cut_if_behind(sender)

    run(scenario)


def test_recovery_from_the_hot_cache_or_the_database() -> None:
    async def scenario(eng: Engine) -> None:
        name = channel()
        keeper = FakeSubscriber()  # keeps the channel open
        epoch = (await eng.attach(keeper, name, None, 60))["epoch"]
        await publish(eng, name, *"abcde")
        since = {"offset": 2, "epoch": epoch}
        hot = await eng.attach(FakeSubscriber(), name, since, 60)
        assert hot["recovered"] and [p["offset"] for p in hot["pubs"]] == [3, 4, 5]
        eng.drop_caches()  # (after an erasure) the database answers
        cold = await eng.attach(FakeSubscriber(), name, since, 60)
        assert cold["recovered"] and [p["data"]["text"] for p in cold["pubs"]] == ["c", "d", "e"]
        other = await eng.attach(FakeSubscriber(), name, {"offset": 2, "epoch": "elsewhere"}, 60)
        assert not other["recovered"] and other["pubs"] == []
        # Newer than this process has delivered (seen through another process): read, then delivered.
        deaf(eng)
        await asyncio.to_thread(appended, name, 1)
        ahead = await eng.attach(FakeSubscriber(), name, {"offset": 6, "epoch": epoch}, 60)
        assert ahead["recovered"] and ahead["offset"] == 6
        assert eng.stats["recovered"] == 3 and eng.stats["not_recovered"] == 1

    run(scenario)


def test_idempotency_keys_answer_the_first_offset() -> None:
    async def scenario(eng: Engine) -> None:
        name = channel()
        pub, dup = await eng.submit(name, {"n": 1}, '{"n":1}', "alice", "k1")
        again, dup2 = await eng.submit(name, {"n": 1}, '{"n":1}', "alice", "k1")
        assert (dup, dup2) == (False, True) and again.offset == pub.offset

    run(scenario)


def test_history_comes_from_the_hot_cache_when_it_holds_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(eng: Engine) -> None:
        name = channel()
        await eng.attach(FakeSubscriber(), name, None, 60)
        await publish(eng, name, *(f"m{i}" for i in range(10)))
        reads: list[Any] = []
        real = store.read_bounded

        def counted(*args: Any, **kwargs: Any) -> Any:
            reads.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(store, "read_bounded", counted)
        top, epoch, pubs, cut = await eng.history(name, None, None, 4)  # open here: from the cache
        assert (top, [p.offset for p in pubs], cut, reads) == (10, [7, 8, 9, 10], False, [])
        assert [p.data for p in pubs] == [{"text": f"m{i}"} for i in range(6, 10)]
        assert [p.offset for p in (await eng.history(name, 2, 6, 100))[2]] == [3, 4, 5] and reads == []
        eng.drop_caches()
        page = await eng.history(name, 2, 6, 100)
        assert [p.offset for p in page[2]] == [3, 4, 5] and page[1] == epoch and len(reads) == 1
        # Committed by another process, not delivered here yet: the database answers, with it.
        await publish(eng, name, "m10")
        deaf(eng)
        await asyncio.to_thread(appended, name, 1)
        top, _e, pubs, _cut = await eng.history(name, None, None, 2)
        assert (top, [p.offset for p in pubs], len(reads)) == (12, [11, 12], 2)
        closed = channel()  # not open here: the database answers
        await asyncio.to_thread(appended, closed, 3)
        assert [p.offset for p in (await eng.history(closed, None, None, 2))[2]] == [2, 3] and len(reads) == 3

    run(scenario)


@pytest.mark.parametrize("sizes", [[10] * 12, [3000, 10, 9000, 1, 20000, 50, 500, 7000, 10, 10, 4000, 2]])
def test_a_cached_page_is_the_page_the_database_reads(sizes: list[int]) -> None:
    """cached_page against store.read_bounded over the same publications: every combination of
    after, before, limit and byte budget gives the same rows and the same `cut`."""
    name = channel()
    pubs = [store.append(name, {"text": "y" * n}) for n in sizes]
    top, epoch = store.head(name)
    for after in (None, 0, 1, 5, 11, 12):
        for before in (None, 1, 4, 13, 20):
            for limit in (1, 3, 100):
                for budget in (200, 3300, 12_000, 10**9):
                    want = store.read_bounded(name, epoch, after or 0, before, limit, budget, newest=after is None)
                    for start in (0, 4):  # a cache that reaches back to the start, or not
                        got = engine_mod.cached_page(pubs[start:], top, after, before, limit, budget)
                        if got is None:
                            assert start > 0
                            continue
                        assert ([p.offset for p in got[0]], got[1]) == ([p.offset for p in want[0]], want[1]), \
                            (after, before, limit, budget, start)


def test_revoked_tokens_close_their_sockets() -> None:
    async def scenario(eng: Engine) -> None:
        user = uid()
        old, new, other = FakeSubscriber(user), FakeSubscriber(user), FakeSubscriber(uid())
        now = int(time.time())
        old.iat, new.iat, other.iat = now - 100, now + 100, now - 100
        eng.conns.update((old, new, other))
        eng.close_revoked(revocation.Revocation("t1", user=user, not_before=now))
        assert (old.closed, new.closed, other.closed) == (4001, None, None)

    run(scenario)


def test_drain_closes_every_socket_with_1012() -> None:
    async def scenario(eng: Engine) -> None:
        subs = [FakeSubscriber() for _ in range(3)]
        eng.conns.update(subs)
        await eng.drain(5)
        assert [s.closed for s in subs] == [1012] * 3 and eng.draining

    run(scenario)


def test_the_hot_cache_is_bounded_in_bytes_per_channel_and_per_process() -> None:
    async def scenario(eng: Engine) -> None:
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

    run(scenario)


def test_a_subscribe_cancelled_while_its_channel_opens_does_not_wedge_the_channel() -> None:
    """The socket that opens a channel closes mid-way (its subscribe is cancelled): later subscribes
    to that channel used to wait forever on a state that never became ready."""
    gate = asyncio.Event()

    class SlowBroker(LocalBroker):
        async def subscribe(self, channel: str) -> None:
            await gate.wait()

    async def scenario(eng: Engine) -> None:
        eng.broker = SlowBroker()
        name = channel()
        closing, waiting, later = FakeSubscriber(), FakeSubscriber(), FakeSubscriber()
        opener = asyncio.create_task(eng.attach(closing, name, None, 60))
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(eng.attach(waiting, name, None, 60))
        await asyncio.sleep(0.01)
        opener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opener
        with pytest.raises(Exception) as info:  # told to retry, not left waiting
            await asyncio.wait_for(waiter, 5)
        assert getattr(info.value, "code", None) == "unavailable"
        gate.set()
        result = await asyncio.wait_for(eng.attach(later, name, None, 60), 5)
        assert result["offset"] == 0 and later in eng.channels[name].subs

    run(scenario)
