"""Server pings, and drain with the real SDK: SIGTERM closes 1012 (disconnect 3001, reconnect); centrifuge-python
reconnects by itself, now to another hub process, and recovers what it missed (Protobuf).

The SDK's one address is a small TCP relay in the test: to a hub of the test's own first, to the
session's hub (same database and Redis) once that one is draining, as a load balancer would.
"""
from __future__ import annotations

import asyncio
import json
import signal

import pytest
from websockets.sync.client import connect

from tests.hub.centrifuge.sdk import Sdk, path, wait
from tests.hub.centrifuge.test_python_sdk import run, v1
from tests.support import HubClient, HubServer, mint, running_hubs, uid


async def relay(target: list[int]) -> asyncio.Server:
    """Forwards each new connection to 127.0.0.1:target[0] (read when it arrives)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target[0])
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.services  # two hub processes sharing the record: Postgres and Redis, as deployed
def test_drain_the_sdk_reconnects_and_recovers(live_hub: HubServer) -> None:
    alice, bob = uid("a"), uid("b")
    with running_hubs(1, {"HUB_PING_S": "1"}) as (victim,):
        # Server pings: an empty command every HUB_PING_S, no pong asked for.
        with connect(path(victim.url), open_timeout=10, close_timeout=2) as ws:
            ws.send(json.dumps({"id": 1, "connect": {"token": mint(uid("p"))}}))
            hello = json.loads(ws.recv(10))["connect"]
            assert (hello["ping"], hello.get("pong", False)) == (1, False)
            assert ws.recv(5) == "{}"

        async def scenario() -> None:
            target = [victim.port]
            server = await relay(target)
            port = server.sockets[0].getsockname()[1]
            sdk = Sdk(f"ws://127.0.0.1:{port}/ws", mint(alice), True, min_reconnect_delay=0.3)
            await sdk.connect()
            await wait(sdk.events.server_subscribed)
            other = await v1(HubClient, live_hub.url, mint(bob))
            try:
                room = (await v1(other.rpc, "rooms.create", members=[alice], kind="direct"))["room"]
                channel = f"chat:{room}"
                sub, events = await sdk.subscribe(channel)
                await wait(events.subscribed)
                target[0] = live_hub.port  # reconnects go to the other process from now on
                await v1(victim.stop, signal.SIGTERM)
                offsets = [(await v1(other.call, "publish", channel=channel, data={"n": n}))["offset"]
                           for n in range(3)]
                again = await wait(events.subscribed, 20)
                assert again.was_recovering and again.recovered
                assert sdk.events.disconnected.empty()  # reconnected by itself, never gave up
                got = [await wait(events.pubs) for _ in offsets]
                assert [p.pub.offset for p in got] == offsets
                assert [sdk.dec(p.pub.data)["n"] for p in got] == [0, 1, 2]
            finally:
                other.close()
            await sdk.close()
            server.close()

        run(scenario())
