"""Server pings, the slow-consumer cut-off, and drain with the real SDK: SIGTERM closes 1012
(disconnect 3001, reconnect); centrifuge-python
reconnects by itself, now to another hub process, and recovers what it missed (Protobuf).

The SDK's one address is a small TCP relay in the test: to a hub of the test's own first, to the
session's hub (same database and Redis) once that one is draining, as a load balancer would.
"""
from __future__ import annotations

import asyncio
import json
import signal
import socket

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
    # Budgets out of the way of the slow-consumer publisher (paced by its acks).
    env = {"HUB_PING_S": "1", "HUB_COMMANDS_PER_S": "100000", "HUB_COMMAND_BURST": "100000",
           "HUB_USER_COMMANDS_PER_S": "100000", "HUB_USER_COMMAND_BURST": "100000"}
    with running_hubs(1, env) as (victim,):
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
                await v1(slow_consumer_is_cut_off, victim)
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


def slow_consumer_is_cut_off(hub: HubServer) -> None:
    """A Centrifuge socket that stops reading is cut off like a v1 one (more than HUB_MAX_QUEUE_BYTES
    waiting: disconnect 3008, or dropped when even the close cannot get through)."""
    owner, slow_user = uid("o"), uid("s")
    with HubClient(hub.url, mint(owner)) as pub:
        channel = "chat:" + pub.rpc("rooms.create", members=[slow_user], kind="direct")["room"]
        # A small receive buffer (set before connecting, so the kernel does not grow it): what the
        # hub cannot send piles up in its own queue after the server side's send buffer.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(("127.0.0.1", hub.port))
        slow = connect(path(hub.url), sock=sock, max_queue=4, max_size=None, open_timeout=10, close_timeout=2)
        slow.send(json.dumps({"id": 1, "connect": {"token": mint(slow_user)}}))
        slow.recv(10)
        slow.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
        slow.recv(10)
        blob = "x" * 60000
        total = 130  # ~7.8 MB: more than the server's send buffer (at most 4 MiB) plus the 1 MiB queue
        for i in range(total):  # paced by acks: only the socket that stopped reading falls behind
            pub.call("publish", channel=channel, data={"i": i, "blob": blob}, timeout=30)
        received = 0
        with pytest.raises(Exception):  # noqa: B017 - closed by the server, one way or another
            while True:
                slow.recv(10)
                received += 1
        assert received < total
        rcvd = slow.protocol.close_rcvd
        assert rcvd is None or rcvd.code == 3008, rcvd
