"""centrifuge-python (the real SDK, unchanged) wired to queues the tests can wait on."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    DisconnectedContext,
    JoinContext,
    PublicationContext,
    ServerPublicationContext,
    ServerSubscribedContext,
    SubscribedContext,
    Subscription,
    SubscriptionEventHandler,
)


def path(url: str) -> str:
    """The hub's Centrifuge endpoint beside its v1 `/ws`."""
    return url.rsplit("/ws", 1)[0] + "/connection/websocket"


class Events(ClientEventHandler):
    def __init__(self) -> None:
        self.connected: asyncio.Queue[ConnectedContext] = asyncio.Queue()
        self.disconnected: asyncio.Queue[DisconnectedContext] = asyncio.Queue()
        self.server_subscribed: asyncio.Queue[ServerSubscribedContext] = asyncio.Queue()
        self.server_pubs: asyncio.Queue[ServerPublicationContext] = asyncio.Queue()

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.connected.put_nowait(ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnected.put_nowait(ctx)

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        self.server_subscribed.put_nowait(ctx)

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        self.server_pubs.put_nowait(ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.subscribed: asyncio.Queue[SubscribedContext] = asyncio.Queue()
        self.pubs: asyncio.Queue[PublicationContext] = asyncio.Queue()
        self.joins: asyncio.Queue[JoinContext] = asyncio.Queue()

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.put_nowait(ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.pubs.put_nowait(ctx)

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.put_nowait(ctx)


class Sdk:
    """One SDK client in JSON or Protobuf mode; data goes in and out as Python values either way."""

    def __init__(self, url: str, token: str, protobuf: bool,
                 get_token: Callable[[], Awaitable[str]] | None = None, **options: Any) -> None:
        self.protobuf = protobuf
        self.events = Events()
        self.client = Client(path(url), events=self.events, token=token, get_token=get_token,
                             use_protobuf=protobuf, timeout=10, **options)
        self.subs: dict[str, SubEvents] = {}

    def enc(self, value: Any) -> Any:
        return json.dumps(value).encode() if self.protobuf else value

    def dec(self, value: Any) -> Any:
        return json.loads(value) if self.protobuf and value is not None else value

    async def connect(self) -> ConnectedContext:
        await self.client.connect()
        return await wait(self.events.connected)

    async def rpc(self, method: str, **params: Any) -> Any:
        return self.dec((await self.client.rpc(method, self.enc(params))).data)

    async def subscribe(self, channel: str, **options: Any) -> tuple[Subscription, SubEvents]:
        events = SubEvents()
        sub = self.client.new_subscription(channel, events=events, **options)
        self.subs[channel] = events
        await sub.subscribe()
        await sub.ready(10)
        return sub, events

    async def close(self) -> None:
        await self.client.disconnect()


async def wait(q: asyncio.Queue[Any], timeout: float = 10) -> Any:
    return await asyncio.wait_for(q.get(), timeout)
