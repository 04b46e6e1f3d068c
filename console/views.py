"""The console's HTTP side: the page shell, its built assets, three read-only helpers the browser
needs that no rpc method gives (zone coverage for every signed-in role, live providers and the
audit log for admins), and the development sign-in.

Everything else the console does goes through the hub's public surface: rpc over
`/connection/websocket` (the Centrifuge SDK), `/api/zones` and `/metrics`.
"""
from __future__ import annotations

import ipaddress
import json
import math
import time
from pathlib import Path
from typing import Any

import h3
import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.csrf import csrf_exempt

from core import audit
from core.errors import BAD_REQUEST, FORBIDDEN, HubError
from core.models import AuditLog
from hub import auth, credentials
from hub.http import authenticate, error_response, json_body, not_allowed
from hub.rpc import Caller
from matching.actions.zones import list_zones
from matching.matcher import matcher

ASSETS = Path(__file__).resolve().parent / "static" / "console"
# Dev tokens live a working day (the hub's longest lifetime is 24 h).
DEV_TOKEN_TTL_S = 8 * 3600
# The H3 overlay: zone cells at the finest of these resolutions that stays under the cap.
COVERAGE_RES = 9
MAX_COVERAGE_CELLS = 4000
MAX_AUDIT_ROWS = 200
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".map": "application/json", ".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json"}


def _json(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")


def _user_caller(request: HttpRequest) -> Caller:
    caller = authenticate(request)
    if caller.role == auth.SERVICE_ROLE:
        raise HubError(FORBIDDEN, "service tokens have no console")
    return caller


def _admin(request: HttpRequest) -> Caller:
    caller = authenticate(request)
    if caller.role != "admin":
        raise HubError(FORBIDDEN, "admins only")
    return caller


# --- the page and its assets -------------------------------------------------------------------

def _csp() -> str:
    # Nothing leaves the hub's origin unless an operator configures tiles or real Agora credentials.
    img = "'self' data:"
    tile = settings.CONSOLE_TILE_URL
    if tile:
        img += " " + _origin(tile)
    connect = "'self'"
    if not settings.AGORA_USING_DEV:
        connect += " https: wss:"  # the Agora Web SDK reaches Agora's edge servers
    return (f"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src {img}; "
            f"connect-src {connect}; media-src 'self' blob:; font-src 'self'; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].replace("{s}", "*")
    return f"{scheme}://{host}"


async def index(request: HttpRequest) -> HttpResponse:
    if not (ASSETS / "app.js").is_file():
        return HttpResponse("The console is not built: run `make install` (it runs npm ci and the "
                            "console build).\n", status=503, content_type="text/plain; charset=utf-8")
    config = {"dev_sign_in": dev_sign_in_allowed(request), "tile_url": settings.CONSOLE_TILE_URL,
              "env": settings.HUB_ENV}
    # JSON inside a script element: "<" is escaped so no value can close the element.
    blob = json.dumps(config).replace("<", "\\u003c")
    css = '<link rel="stylesheet" href="/static/console/app.css">' if (ASSETS / "app.css").is_file() else ""
    html = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>Hub console</title><link rel=\"icon\" href=\"data:,\">" + css +
            "<script type=\"module\" src=\"/static/console/app.js\"></script></head><body>"
            "<div id=\"root\"><p>Loading the console\u2026</p></div>"
            f"<script type=\"application/json\" id=\"console-config\">{blob}</script>"
            "<noscript>The console needs JavaScript.</noscript></body></html>")
    resp = HttpResponse(html, content_type="text/html; charset=utf-8")
    resp["Content-Security-Policy"] = _csp()
    resp["Cache-Control"] = "no-cache"
    resp["Referrer-Policy"] = "no-referrer"
    return resp


async def index_redirect(request: HttpRequest) -> HttpResponse:
    return HttpResponseRedirect("/console/")


async def asset(request: HttpRequest, name: str) -> HttpResponse:
    """A built file, precompressed (brotli, then gzip) when the browser accepts it. Hashed chunk
    names never change content, so they are cached for a year; the entry files revalidate."""
    if request.method not in ("GET", "HEAD"):
        return not_allowed("GET, HEAD")
    if ".." in name.split("/") or name.startswith("/") or name.endswith((".gz", ".br")):
        return HttpResponse(status=404)
    path = (ASSETS / name).resolve()
    if ASSETS not in path.parents or not path.is_file():
        return HttpResponse(status=404)
    accept = request.headers.get("Accept-Encoding", "")
    chosen, encoding = path, ""
    for enc, suffix in (("br", ".br"), ("gzip", ".gz")):
        if enc in accept and path.with_name(path.name + suffix).is_file():
            chosen, encoding = path.with_name(path.name + suffix), enc
            break
    resp = FileResponse(open(chosen, "rb"), content_type=TYPES.get(path.suffix, "application/octet-stream"))
    if encoding:
        resp["Content-Encoding"] = encoding
    resp["Vary"] = "Accept-Encoding"
    immutable = name.startswith("chunks/")
    resp["Cache-Control"] = "public, max-age=31536000, immutable" if immutable else "no-cache"
    resp["X-Content-Type-Options"] = "nosniff"
    return resp


# --- development sign-in ---------------------------------------------------------------------

def _is_loopback(value: str) -> bool:
    host = value.strip()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dev_sign_in_allowed(request: HttpRequest) -> bool:
    """Only a development hub, listening on loopback, asked directly from loopback by a page whose
    Host is a loopback name (a DNS-rebinding page on another name is refused), with no proxy in
    between (a proxy could make every remote caller look local)."""
    if settings.HUB_ENV != "development":
        return False
    if not _is_loopback(settings.HOST):
        return False
    if not _is_loopback(request.META.get("REMOTE_ADDR", "") or ""):
        return False
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False
    return _is_loopback(request.headers.get("Host", ""))


@csrf_exempt
async def dev_token(request: HttpRequest) -> HttpResponse:
    """POST /api/dev/token {user, role, tenant?} -> {token, user, role, tenant, expires_at_ms}."""
    try:
        if request.method != "POST":
            return not_allowed("POST")
        if not dev_sign_in_allowed(request):
            raise HubError(FORBIDDEN, "dev sign-in works only on a development hub reached over loopback")
        # A JSON body forces a CORS preflight, so a page of another origin cannot even send it.
        if request.content_type != "application/json":
            raise HubError(BAD_REQUEST, "send a JSON body (Content-Type: application/json)")
        body = json_body(request)
        if not isinstance(body, dict) or set(body) - {"user", "role", "tenant"}:
            raise HubError(BAD_REQUEST, "body is {user, role, tenant?}")
        user, role, tenant = body.get("user"), body.get("role"), body.get("tenant", "default")
        if not isinstance(user, str) or not auth.USER_ID.fullmatch(user):
            raise HubError(BAD_REQUEST, "user: 1-128 characters of A-Z a-z 0-9 . _ @ + -")
        if role not in auth.ROLES:
            raise HubError(BAD_REQUEST, f"role: one of {', '.join(auth.ROLES)}")
        if not isinstance(tenant, str) or not auth.TENANT_ID.fullmatch(tenant):
            raise HubError(BAD_REQUEST, "tenant: 1-64 characters of A-Z a-z 0-9 . _ -")
        token = credentials.mint(user, role, tenant=tenant, ttl=DEV_TOKEN_TTL_S)
        await audit.arecord(user, "console.dev_token", user, role=role, tenant=tenant)
        return _json({"token": token, "user": user, "role": role, "tenant": tenant,
                      "expires_at_ms": int((time.time() + DEV_TOKEN_TTL_S) * 1000)})
    except HubError as err:
        return error_response(err)


# --- read-only helpers -----------------------------------------------------------------------

def _area_km2(geometry: dict[str, Any]) -> float:
    """Bounding-box area of a zone's outer rings, in km² (an upper bound of its area)."""
    polys = geometry.get("coordinates", [])
    if geometry.get("type") == "Polygon":
        polys = [polys]
    total = 0.0
    for poly in polys:
        ring = poly[0] if poly else []
        if not ring:
            continue
        lngs = [p[0] for p in ring]
        lats = [p[1] for p in ring]
        mid = math.radians((max(lats) + min(lats)) / 2)
        total += (max(lats) - min(lats)) * 111.32 * (max(lngs) - min(lngs)) * 111.32 * max(math.cos(mid), 0.01)
    return total


_cells_cache: dict[tuple[tuple[str, int], ...], dict[str, Any]] = {}


def _cells(zones: list[dict[str, Any]]) -> dict[str, Any]:
    """H3 cells covering the zones (centres inside), at the finest resolution whose estimated count
    (bounding boxes over the average cell area) stays under the cap, so no request makes the hub
    fill a large zone with fine cells; cached per set of zone versions."""
    key = tuple(sorted((z["id"], z["version"]) for z in zones))
    if key in _cells_cache:
        return _cells_cache[key]
    area = sum(_area_km2(z["geometry"]) for z in zones)
    res = next((r for r in range(COVERAGE_RES, 3, -1)
                if area / h3.average_hexagon_area(r, "km^2") <= MAX_COVERAGE_CELLS), None)
    out: list[dict[str, Any]] = []
    if res is not None:
        for z in zones:
            try:
                cells = h3.geo_to_cells(z["geometry"], res)
            except (ValueError, TypeError, h3.H3BaseException):  # one odd geometry must not take the overlay down
                continue
            for c in cells[: MAX_COVERAGE_CELLS - len(out)]:
                out.append({"cell": c, "zone": z["id"],
                            "boundary": [[round(lat, 6), round(lng, 6)] for lat, lng in h3.cell_to_boundary(c)]})
    result = {"res": res, "cells": out}
    if len(_cells_cache) > 64:
        _cells_cache.clear()
    _cells_cache[key] = result
    return result


@csrf_exempt
async def coverage(request: HttpRequest) -> HttpResponse:
    """GET /console/api/coverage?category=&cells=1: the zones a signed-in user may see on the map
    (active ones; admins see inactive ones too), optionally with the H3 cells covering them."""
    try:
        if request.method != "GET":
            return not_allowed("GET")
        caller = _user_caller(request)
        category = request.GET.get("category") or None
        if category is not None and len(category) > 64:
            raise HubError(BAD_REQUEST, "category: at most 64 characters")
        active = None if caller.role == "admin" else True
        zones = await sync_to_async(list_zones, thread_sensitive=False)(category, active, caller.tenant)
        shown = [{k: z[k] for k in ("id", "name", "categories", "geometry", "active", "version")} for z in zones]
        out: dict[str, Any] = {"zones": shown}
        if request.GET.get("cells") in ("1", "true"):
            out["coverage"] = await sync_to_async(_cells, thread_sensitive=False)(
                [z for z in shown if z["active"]])
        return _json(out)
    except HubError as err:
        return error_response(err)


@csrf_exempt
async def providers(request: HttpRequest) -> HttpResponse:
    """GET /console/api/providers?category= (admins): available providers of the admin's tenant and
    where they are now, from this process's matcher index (polled by the explorer every few seconds)."""
    try:
        if request.method != "GET":
            return not_allowed("GET")
        caller = _admin(request)
        category = request.GET.get("category") or None
        index = matcher().providers_of(caller.tenant)  # the admin's own tenant's index
        rows = []
        for user in index.users()[:2000]:
            st = index.get(user)
            if st is None or not st.available or (category and category not in st.categories):
                continue
            rows.append({"user": st.user, "lat": st.lat, "lng": st.lng, "categories": list(st.categories),
                         "ts_ms": int(st.ts * 1000)})
        return _json({"providers": rows})
    except HubError as err:
        return error_response(err)


def _audit_rows(tenant: str, limit: int, before: int | None) -> list[dict[str, Any]]:
    qs = AuditLog.objects.filter(tenant=tenant)
    if before is not None:
        qs = qs.filter(id__lt=before)
    return [{"id": r.id, "at_ms": int(r.at.timestamp() * 1000), "actor": r.actor, "role": r.actor_role,
             "action": r.action, "target": r.target, "request_id": r.request_id, "detail": r.detail}
            for r in qs.order_by("-id")[:limit]]


@csrf_exempt
async def audit_log(request: HttpRequest) -> HttpResponse:
    """GET /console/api/audit?limit=&before= (admins): the newest audit rows of the admin's tenant."""
    try:
        if request.method != "GET":
            return not_allowed("GET")
        caller = _admin(request)
        try:
            limit = int(request.GET.get("limit", "50"))
            before = int(request.GET["before"]) if request.GET.get("before") else None
        except ValueError as exc:
            raise HubError(BAD_REQUEST, "limit and before are integers") from exc
        if not 1 <= limit <= MAX_AUDIT_ROWS:
            raise HubError(BAD_REQUEST, f"limit: 1-{MAX_AUDIT_ROWS}")
        rows = await sync_to_async(_audit_rows, thread_sensitive=False)(caller.tenant, limit, before)
        return _json({"rows": rows, "next": rows[-1]["id"] if len(rows) == limit else None})
    except HubError as err:
        return error_response(err)

