"""The `/ws` ASGI application: accept, feed frames to a Connection, clean up on disconnect."""
from __future__ import annotations

import logging
from typing import Any

from hub.connection import CLOSE_RESTART, CLOSE_TOO_MANY, Connection
from hub.engine import get_engine
from hub.guard import client_address
from hub.sink import make_sink

log = logging.getLogger("hub.ws")


async def websocket_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    engine = await get_engine()
    event = await receive()
    if event["type"] != "websocket.connect":
        return
    if engine.draining:
        await send({"type": "websocket.close", "code": CLOSE_RESTART})
        return
    address = client_address(scope)
    if await engine.budgets.open_address(address):
        # Refused before the handshake completes (HTTP 403): too many sockets from this address.
        await send({"type": "websocket.close", "code": CLOSE_TOO_MANY})
        return
    try:
        await send({"type": "websocket.accept"})
        conn = Connection(engine, make_sink(send))
        engine.conns.add(conn)
        try:
            while True:
                event = await receive()
                kind = event["type"]
                if kind == "websocket.receive":
                    text = event.get("text")
                    conn.on_frame(text if text is not None else (event.get("bytes") or b""))
                elif kind == "websocket.disconnect":
                    break
        finally:
            conn.closed = True
            conn.cleanup()
    finally:
        engine.budgets.close_address(address)
