"""hub.centrifuge.connection in process (no hub): every v1 close a connection can get (slow consumer,
drain, revocation, expiry, protocol, socket limit) reaches the SDK as the disconnect code whose
reconnect advice matches; token lifetimes on a clock the test moves."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from core.errors import HubError
from hub.centrifuge.connection import CentrifugeConnection


class Sink:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.code: int | None = None

    def write(self, payload: bytes, binary: bool) -> None:
        self.out.append(payload)

    def write_frame(self, frame: bytes, payload: bytes, binary: bool) -> None:
        self.out.append(payload)

    def pending(self) -> int:
        return 0

    def close(self, code: int) -> None:
        self.code = code


class Budgets:
    def take(self, who: str) -> int:
        return 0

    def close_user(self, who: str) -> None:
        pass


class Engine:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.max_queue, self.max_frame, self.max_bad = 1 << 20, 65536, 20
        self.stats = {"slow_consumers": 0}
        self.budgets = Budgets()
        self.conns: set[Any] = set()
        self.draining = False

    def cut_if_behind(self, conn: Any) -> bool:
        if conn.sink.pending() <= self.max_queue:
            return False
        self.stats["slow_consumers"] += 1
        conn.close(4009)
        return True


def conn_with(sink: Sink) -> CentrifugeConnection:
    return CentrifugeConnection(Engine(asyncio.get_running_loop()), sink, False)  # type: ignore[arg-type]


@pytest.mark.parametrize(("v1", "centrifuge", "reconnect"), [
    (1012, 3001, True), (4009, 3008, True), (4002, 3005, True), (4001, 3500, False), (4010, 3501, False),
    (4029, 3504, False), (1009, 1009, True)])
def test_v1_closes_map_to_disconnect_codes(v1: int, centrifuge: int, reconnect: bool) -> None:
    async def scenario() -> None:
        sink = Sink()
        conn_with(sink).close(v1)
        assert sink.code == centrifuge
        # What the SDKs do with it: 3500-3999 (and 4500-4999) are terminal.
        assert (not (3500 <= centrifuge < 4000)) == reconnect

    asyncio.run(scenario())


def test_an_expired_token_at_connect_is_109_and_left_for_the_sdk_to_close() -> None:
    """Closing at once would race the reply: the SDK would read 3500 and never fetch a new token."""
    async def scenario() -> None:
        sink = Sink()
        conn = conn_with(sink)
        conn.on_frame('{"id":1,"connect":{"token":"x"}}')  # malformed: 101, closed 3500
        assert b'"code":101' in sink.out[-1] and sink.code == 3500
        sink = Sink()
        conn = conn_with(sink)
        conn.kinds[1] = ("connect", None)
        conn.error(1, HubError("unauthorized", "token expired"))
        conn.close(4001)
        assert b'"code":109' in sink.out[-1] and sink.code is None and not conn.closed
        conn.close(4001)  # the connect timeout still closes it
        assert sink.code == 3500

    asyncio.run(scenario())


def test_the_ttl_asks_for_a_refresh_before_expiry_which_closes_3005() -> None:
    """On the credentials' clock: connect and refresh answer a ttl a little short of the token's
    life; a token left to run out closes the socket with the "expired" disconnect (3005)."""
    from hub import credentials
    from tests.hub.fakes import Clock, FakeSink, frozen_credentials, running_engine, until
    from tests.support import uid

    clock = Clock()

    async def scenario() -> None:
        async with running_engine() as eng:
            sink = FakeSink()
            conn = CentrifugeConnection(eng, sink, False)
            user = uid()
            conn.on_frame(json.dumps({"id": 1, "connect": {"token": credentials.mint(user, "customer", "t1",
                                                                                      ttl=100)}}))
            hello = await until(lambda: [r for r in map(json.loads, sink.payloads) if r.get("id") == 1])
            assert hello[0]["connect"]["ttl"] == 80  # 100 s less a fifth (at most 30 s)
            await clock.advance(70)
            conn.on_frame(json.dumps({"id": 2, "refresh": {"token": credentials.mint(user, "customer", "t1",
                                                                                      ttl=40)}}))
            refreshed = await until(lambda: [r for r in map(json.loads, sink.payloads) if r.get("id") == 2])
            assert refreshed[0]["refresh"]["ttl"] == 32
            await clock.advance(39.9)
            assert sink.code is None
            await clock.advance(0.1)
            assert sink.code == 3005

    with frozen_credentials(clock), asyncio.Runner(loop_factory=clock.loop) as runner:
        runner.run(scenario())
