"""hub.engine in process, with fake subscribers: subscribe, ordered delivery, gap fill, the
slow-consumer cut-off, recovery, events, revocation, drain, the hot cache."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

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
