"""ASGI entry point: HTTP goes to Django, `/ws` (protocol v1) and `/connection/websocket` (the
Centrifuge client protocol, hub.centrifuge) to the hub's WebSocket applications.

Any ASGI server runs it: `manage.py serve` (daphne, the hub's limits), `uvicorn asgi:application`,
`daphne asgi:application`, `runserver`. hub.lifecycle starts the process the same way under each
(ASGI lifespan where the server speaks it, else on the first scope) and drains it on SIGTERM.
"""
import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

import django

django.setup()

from core import tracing  # noqa: E402

tracing.setup()  # once per process, whichever server imports this module

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import path  # noqa: E402

from hub import lifecycle  # noqa: E402
from hub.centrifuge.ws import centrifuge_app  # noqa: E402
from hub.guard import GuardMiddleware  # noqa: E402
from hub.http import RequestIds  # noqa: E402
from hub.static import StaticFiles  # noqa: E402
from hub.ws import websocket_app  # noqa: E402

router = ProtocolTypeRouter({
    "http": tracing.wrap_http(RequestIds(StaticFiles(lifecycle.DrainGate(GuardMiddleware(get_asgi_application()))))),
    "websocket": URLRouter([path("ws", websocket_app), path("connection/websocket", centrifuge_app)]),
})


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifecycle.lifespan(receive, send)
        return
    if not lifecycle.started():
        # No lifespan (daphne, runserver): the first scope starts the process and waits for it.
        await lifecycle.ensure_started()
    await router(scope, receive, send)
