"""hub.subscriber: both protocols' connections and the tests' fake are what the engine writes to
(mypy checks the connections where the engine is called; this checks the fake too)."""
from __future__ import annotations

import asyncio

from hub.centrifuge.connection import CentrifugeConnection
from hub.connection import Connection
from hub.subscriber import Subscriber
from tests.hub.fakes import FakeSink, FakeSubscriber, running_engine


def test_the_connections_and_the_fake_are_subscribers() -> None:
    async def scenario() -> None:
        async with running_engine() as eng:
            v1, cf = Connection(eng, FakeSink()), CentrifugeConnection(eng, FakeSink(), True)
            for sub in (v1, cf, FakeSubscriber()):
                assert isinstance(sub, Subscriber), type(sub).__name__
            assert (v1.fmt, cf.fmt) == (0, 3)  # v1 JSON; Centrifuge Protobuf
            for conn in (v1, cf):
                conn.close(1000)

    asyncio.run(scenario())
    assert not isinstance(object(), Subscriber)
