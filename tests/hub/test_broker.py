"""hub.broker: two engines in one process over the session's Redis, each with a fake subscriber; what
one commits reaches the other's subscriber, in order, and so do ephemeral events."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from hub.broker import LocalBroker
from hub.pubs import Pub
from tests.hub.fakes import FakeSubscriber, running_engine, until
from tests.support import uid

pytestmark = pytest.mark.services  # needs Redis


def test_a_publication_committed_on_one_engine_reaches_the_other_engines_subscriber() -> None:
    async def scenario() -> None:
        async with running_engine(redis=True) as one, running_engine(redis=True) as two:
            await until(lambda: one.broker.connected and two.broker.connected)
            name = f"t1/chat:{uid('r')}"
            here, there = FakeSubscriber(), FakeSubscriber(binary=True)
            await one.attach(here, name, None, 60)
            await two.attach(there, name, None, 60)
            texts = [f"m{i}" for i in range(5)]
            done = await asyncio.gather(*(one.submit(name, {"text": t}, orjson.dumps({"text": t}).decode(),
                                                     "alice", None) for t in texts))
            assert [pub.offset for pub, _dup in done] == [1, 2, 3, 4, 5]
            await until(lambda: len(there.pubs()) == 5)
            got = there.pubs()
            assert [(p["offset"], p["data"]["text"], p["from"]) for p in got] == \
                [(i + 1, t, "alice") for i, t in enumerate(texts)]
            assert got[0]["epoch"] == done[0][0].epoch and len(here.pubs()) == 5  # and locally, once
            # Ephemeral events cross too; the engine that sent one does not hear it back.
            one.event(name, {"push": "signal", "channel": "chat:x", "from": "alice", "data": 1}, exclude=here)
            await until(lambda: any(f["push"] == "signal" for f in there.frames()))
            assert [f["push"] for f in here.frames()].count("signal") == 0

    asyncio.run(scenario())


def test_one_flush_on_many_channels_arrives_whole_and_in_order_also_after_redis_forgot_the_script() -> None:
    """A flush covering several channels goes as one script call; once Redis has lost its scripts
    (a restart, SCRIPT FLUSH) the next flush loads it again and nothing is lost."""
    async def scenario() -> None:
        async with running_engine(redis=True) as one, running_engine(redis=True) as two:
            await until(lambda: one.broker.connected and two.broker.connected)
            names = [f"t1/chat:{uid('r')}" for _ in range(3)]
            there = [FakeSubscriber() for _ in names]
            for name, sub in zip(names, there, strict=True):
                await two.attach(sub, name, None, 60)

            async def burst(texts: list[str]) -> None:
                await asyncio.gather(*(one.submit(name, {"text": t}, orjson.dumps({"text": t}).decode(),
                                                  "alice", None) for t in texts for name in names))

            await burst(["a", "b"])
            await one.broker.pub_client.script_flush()
            await burst(["c"])
            await until(lambda: all(len(sub.pubs()) == 3 for sub in there))
            for sub in there:
                assert [(p["offset"], p["data"]["text"]) for p in sub.pubs()] == [(1, "a"), (2, "b"), (3, "c")]

    asyncio.run(scenario())


def test_the_local_broker_carries_nothing() -> None:
    async def scenario() -> None:
        broker = LocalBroker()
        await broker.start()
        await broker.subscribe("t1/chat:r")
        broker.publish([Pub("t1/chat:r", 1, "e", 0, None, {})])
        broker.event("t1/chat:r", {"push": "signal"})
        await broker.close()

    asyncio.run(scenario())
