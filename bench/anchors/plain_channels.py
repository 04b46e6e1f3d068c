"""Anchor: the chat server a team gets from Django Channels out of the box (the tutorial's design).

Connect to /ws/<room>/; each text frame a client sends is `group_send` to the room's group and
every consumer in the group (the sender's included) writes it to its socket. bench_hub measures
the hub against this on the same ASGI server, machine and load client, in one run.

    cd bench/anchors && daphne -b 127.0.0.1 -p 8101 plain_channels:application

The channel layer is the in-memory one unless LAYER names another backend, e.g.
LAYER=channels_redis.pubsub.RedisPubSubChannelLayer (with REDIS_URL, default
redis://127.0.0.1:6379/0).
"""
from __future__ import annotations

import os
from typing import Any

import django
from django.conf import settings

LAYER = os.environ.get("LAYER", "channels.layers.InMemoryChannelLayer")
_layer: dict[str, Any] = {"BACKEND": LAYER}
if "redis" in LAYER.lower():
    _layer["CONFIG"] = {"hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")]}

# A standalone Django: this file is the whole project (no settings module, no database).
settings.configure(
    DEBUG=False,
    SECRET_KEY="plain-channels-anchor",
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={"default": _layer},
)
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class RoomConsumer(AsyncWebsocketConsumer):
    group = ""

    async def connect(self) -> None:
        self.group = f"chat_{self.scope['url_route']['kwargs']['room']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            return
        await self.channel_layer.group_send(self.group, {"type": "room.message", "text": text_data})

    async def room_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter({
    "websocket": URLRouter([path("ws/<str:room>/", RoomConsumer.as_asgi())]),
})
