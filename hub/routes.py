"""HTTP routes that apps add to the hub's URL conf, with their OpenAPI paths.

An app registers its routes in `AppConfig.ready()`; hub/urls.py places them before the generic
`/api/<method>` route (so `POST /api/zones` is not taken for an rpc method), and
`/api/openapi.json` lists their paths beside the rpc methods'.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.urls import URLPattern, URLResolver


@dataclass(frozen=True)
class Routes:
    app: str
    patterns: list[URLPattern | URLResolver]
    # OpenAPI path items by path ("/api/zones": {"get": {...}, "post": {...}}).
    openapi: dict[str, dict[str, Any]] = field(default_factory=dict)


REGISTRY: dict[str, Routes] = {}


def register(app: str, patterns: list[URLPattern | URLResolver],
             openapi: dict[str, dict[str, Any]] | None = None) -> None:
    if app in REGISTRY and REGISTRY[app].patterns is not patterns:
        raise ValueError(f"routes for {app} registered twice")
    REGISTRY[app] = Routes(app, patterns, openapi or {})


def patterns() -> list[URLPattern | URLResolver]:
    return [p for r in REGISTRY.values() for p in r.patterns]


def openapi_paths() -> dict[str, dict[str, Any]]:
    return {path: item for r in REGISTRY.values() for path, item in r.openapi.items()}
