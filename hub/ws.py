"""The WebSocket ASGI applications: `/ws` (protocol v1) and `/connection/websocket` (Centrifuge).

Both accept, feed frames to a connection object, and clean up on disconnect; only the
connection class and the handshake's subprotocol differ.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from hub.connection import CLOSE_RESTART, CLOSE_TOO_MANY, Connection
from hub.engine import Engine, get_engine
from hub.guard import client_address
from hub.sink import Sink, make_sink

log = logging.getLogger("hub.ws")

# scope -> (connection factory, subprotocol to accept with or None)
Opener = Callable[[dict[str, Any]], tuple[Callable[[Engine, Sink], Connection], str | None]]
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _v1(scope: dict[str, Any]) -> tuple[Callable[[Engine, Sink], Connection], str | None]:
    return Connection, None


def serve(opener: Opener) -> App:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
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
            factory, subprotocol = opener(scope)
            accept: dict[str, Any] = {"type": "websocket.accept"}
            if subprotocol:
                accept["subprotocol"] = subprotocol
            await send(accept)
            conn = factory(engine, make_sink(send))
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

    return app


websocket_app = serve(_v1)
