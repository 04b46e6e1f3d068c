"""The `/connection/websocket` ASGI application."""
from __future__ import annotations

from hub.centrifuge.connection import opener
from hub.ws import serve

centrifuge_app = serve(opener)
