"""Anchor: a broadcast written straight against ASGI, with no framework in the way.

Connect to /ws/<room>/; every text frame a client sends is written to every socket in that
room, the sender included, in this process only. Nothing in Python fans out faster on the same
ASGI server, so bench_hub reports the hub as a fraction of this figure.

    cd bench/anchors && daphne -b 127.0.0.1 -p 8102 asgi_ceiling:application
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]

# Room name -> the `send` callables of the sockets in it (one event loop, so no locking).
ROOMS: dict[str, set[Send]] = {}


def room_of(path: str) -> str | None:
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "ws" and parts[1]:
        return parts[1]
    return None


async def application(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                      send: Send) -> None:
    if scope["type"] != "websocket":
        return  # lifespan and HTTP are not served
    room = room_of(scope["path"])
    members = ROOMS.setdefault(room, set()) if room is not None else None
    while True:
        event = await receive()
        kind = event["type"]
        if kind == "websocket.connect":
            if members is None:
                await send({"type": "websocket.close", "code": 1008})
                return
            members.add(send)  # before the accept, so the client's first frame finds the room complete
            await send({"type": "websocket.accept"})
        elif kind == "websocket.receive" and members is not None:
            text = event.get("text")
            if text is None:
                continue  # binary frames are not part of the anchor protocol
            out = {"type": "websocket.send", "text": text}
            for member in tuple(members):
                try:
                    await member(out)
                except Exception:  # noqa: BLE001 - a socket closing mid-broadcast leaves the room
                    members.discard(member)
        elif kind == "websocket.disconnect":
            if members is not None:
                members.discard(send)
                if not members and ROOMS.get(room or "") is members:
                    del ROOMS[room or ""]
            return
