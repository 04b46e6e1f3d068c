"""In-process stand-ins for the hub's tests: a socket the engine can write to and cut off
(hub.subscriber.Subscriber), an engine started on the test's own loop, and a clock that moves
only when the test says (tokens, a socket's expiry timer)."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgpack
import orjson
from django.test import override_settings

from core import redis as hubredis
from hub import credentials, revocation, store
from hub.engine import Engine
from hub.rpc import Caller
from hub.sink import Sink


class FakeSink(Sink):
    """Keeps every payload written; `backlog` is what it reports as not yet sent."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.backlog = 0
        self.code: int | None = None

    def write(self, payload: bytes, binary: bool) -> None:
        if self.code is None:
            self.payloads.append(payload)

    def pending(self) -> int:
        return self.backlog

    def close(self, code: int) -> None:
        if self.code is None:
            self.code = code

    @property
    def open(self) -> bool:
        return self.code is None


class FakeSubscriber:
    """A protocol v1 JSON (or MessagePack) socket, as the engine sees one."""

    def __init__(self, user: str = "u1", tenant: str = "t1", binary: bool = False) -> None:
        self.sink = FakeSink()
        self.binary = binary
        self.fmt = int(binary)
        self.caller: Caller | None = Caller(user, "customer", tenant)
        self.iat: int | None = None
        self.jti: str | None = None
        self.closed: int | None = None

    def wants_event(self, channel: str, frame: dict[str, Any]) -> bool:
        return True

    def close(self, code: int) -> None:
        if self.closed is None:
            self.closed = code
            self.sink.close(code)

    def frames(self) -> list[dict[str, Any]]:
        decode: Callable[[bytes], Any] = msgpack.unpackb if self.binary else orjson.loads
        return [decode(p) for p in self.sink.payloads]

    def pubs(self, channel: str | None = None) -> list[dict[str, Any]]:
        """The publications delivered, in order (channel: the protocol name, `chat:r`)."""
        return [f for f in self.frames() if f.get("push") == "pub" and channel in (None, f["channel"])]


@contextlib.asynccontextmanager
async def running_engine(redis: bool = False) -> AsyncIterator[Engine]:
    """An Engine on the running loop, started (broker, presence, the store's and revocations' hooks)
    and taken down again, hooks included, so a test may run several. `redis`: over the session's
    Redis (RedisBroker, shared presence), else in-process only."""
    hooks = (list(store._after_commit_hooks), list(store._invalidate_hooks), list(revocation._listeners))
    settings = {} if redis else {"REDIS_URL": ""}
    with override_settings(**settings):
        engine = Engine(asyncio.get_running_loop())
        await engine.start()
    try:
        yield engine
    finally:
        engine.draining = True
        await asyncio.wait_for(engine.writer.idle.wait(), 10)
        engine.writer.stop()
        await engine.presence.close()
        await engine.broker.close()
        store._after_commit_hooks[:], store._invalidate_hooks[:], revocation._listeners[:] = hooks
        client = hubredis._async.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.aclose()  # bound to this loop; the next test has its own


async def until(check: Callable[[], Any], timeout: float = 10) -> Any:
    """Let the loop run until `check()` is true (real time bounds it: work in threads or Redis)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0)
        time.sleep(0.002)  # threads and sockets progress; works on a loop whose clock stands still
    return result


def deaf(engine: Engine) -> None:
    """The engine stops hearing of domain commits: as if their wake-ups were still on the way."""
    store._after_commit_hooks.remove(engine._domain_commit_threadsafe)


class Clock:
    """Wall and loop time that move only with `advance`: give it to hub.credentials (tokens) and run
    the test on `loop()` (whose timers, a socket's expiry among them, follow it)."""

    def __init__(self) -> None:
        self.wall = float(int(time.time()))  # a whole second: token times are whole seconds
        self.mono = time.monotonic()

    def __call__(self) -> float:
        return self.wall

    def loop(self) -> asyncio.AbstractEventLoop:
        clock = self

        class Loop(asyncio.SelectorEventLoop):
            def time(self) -> float:
                return clock.mono

        return Loop()

    async def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds
        for _ in range(3):  # timers now due run, and what they scheduled
            await asyncio.sleep(0)


@contextlib.contextmanager
def frozen_credentials(clock: Clock) -> Iterator[None]:
    credentials.set_clock(clock)
    try:
        yield
    finally:
        credentials.set_clock(None)
