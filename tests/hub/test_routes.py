"""hub.routes: the HTTP routes apps add to the URL conf, with their OpenAPI paths."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.http import HttpRequest, HttpResponse
from django.urls import path

from hub import routes


def view(request: HttpRequest) -> HttpResponse:
    return HttpResponse()


@pytest.fixture
def clean() -> Iterator[None]:
    saved = dict(routes.REGISTRY)
    try:
        yield
    finally:
        routes.REGISTRY.clear()
        routes.REGISTRY.update(saved)


def test_an_apps_routes_and_paths_join_the_others_once(clean: None) -> None:
    patterns = [path("api/tst", view)]
    openapi = {"/api/tst": {"get": {"summary": "x"}}}
    routes.register("tst", patterns, openapi)
    routes.register("tst", patterns, openapi)  # the same registration again (a second ready()): fine
    assert patterns[0] in routes.patterns() and routes.patterns().count(patterns[0]) == 1
    assert routes.openapi_paths()["/api/tst"] == {"get": {"summary": "x"}}
    with pytest.raises(ValueError, match="twice"):
        routes.register("tst", [path("api/other", view)])
