"""ASGI entry point: HTTP goes to Django, `/ws` to the hub's WebSocket application."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

import django

django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import path  # noqa: E402

from hub.guard import GuardMiddleware  # noqa: E402
from hub.http import RequestIds  # noqa: E402
from hub.ws import websocket_app  # noqa: E402

application = ProtocolTypeRouter({
    "http": RequestIds(GuardMiddleware(get_asgi_application())),
    "websocket": URLRouter([path("ws", websocket_app)]),
})
