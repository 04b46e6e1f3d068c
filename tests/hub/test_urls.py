"""hub.urls: the hub's routes, then the apps' (hub.routes), then `/api/<method>`, then a JSON 404 for
anything else under /api/."""
from __future__ import annotations

from django.urls import Resolver404, resolve

from hub import http, routes


def test_routes_resolve_in_order() -> None:
    assert resolve("/healthz").func is http.healthz
    assert resolve("/api/openapi.json").func is http.openapi_view
    assert resolve("/api/publish").func is http.publish_view  # not an rpc method called "publish"
    assert resolve("/api/rooms.create").func is http.rpc_view
    plain = [p for p in routes.patterns() if str(p.pattern).startswith("api/") and "<" not in str(p.pattern)]
    assert plain
    for route in plain:  # before `/api/<method>`: `POST /api/zones` is not an rpc method
        assert resolve("/" + str(route.pattern)).func is route.callback
    for path in ("/api/nope/deeper", "/api/", "/api"):
        assert resolve(path).func is http.api_not_found
    try:
        resolve("/no-such-page")
    except Resolver404:
        pass
    else:
        raise AssertionError("outside /api/ an unknown path is Django's 404")
