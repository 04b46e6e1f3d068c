"""HTTP: every rpc method under /api/<method>, the OpenAPI schema, health, server-side publish.

Every response carries `X-Request-Id` (the client's when it is a sane token, else a new one); the
same id is in the logs and audit rows of the request. Unknown paths under /api/ are JSON 404s.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from core import audit, metrics
from core import redis as hubredis
from core.errors import BAD_REQUEST, HTTP_STATUS, NOT_FOUND, UNAUTHORIZED, HubError
from core.logs import request_id
from hub import auth, codec, credentials, rpc
from hub.channels import qualify, split
from hub.rpc import Caller

log = logging.getLogger("hub.http")
MAX_BODY = 256 * 1024
# A client's X-Request-Id is kept only when it cannot smuggle anything into logs or headers.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
SCOPE_KEY = "hub.request_id"
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def sane_request_id(given: str) -> str:
    """The client's id when it is a short plain token, else a new one."""
    return given if REQUEST_ID_RE.fullmatch(given) else secrets.token_hex(8)


def request_id_of(request: HttpRequest) -> str:
    """The request's id, as RequestIds chose it (a request that did not pass through it gets one now)."""
    rid = getattr(request, "scope", {}).get(SCOPE_KEY) or getattr(request, "hub_request_id", None)
    if rid is None:
        rid = sane_request_id(request.headers.get("X-Request-Id", ""))
        request.hub_request_id = rid  # type: ignore[attr-defined]
    return str(rid)


class RequestIds:
    """Outermost ASGI layer for HTTP: every response (the guard's refusals included) carries
    `X-Request-Id`, the id is in the logs of the request, and each request is logged once: INFO in
    development, DEBUG otherwise (production logs stay quiet), WARNING for 5xx."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        rid = sane_request_id(given)
        request_id.set(rid)
        t0 = time.perf_counter()
        status = 0

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app({**scope, SCOPE_KEY: rid}, receive, send_with_id)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            shown = status or 500  # no response started: the server answers 500 or drops the request
            level = logging.WARNING if shown >= 500 else logging.INFO if settings.DEVELOPMENT else logging.DEBUG
            if log.isEnabledFor(level):
                # The path only: a query string may carry personal data.
                log.log(level, "%s %s %d %.1f ms", scope.get("method", ""), scope.get("path", ""), shown, ms,
                        extra={"event": "http", "code": str(shown), "duration_ms": round(ms, 1)})


def error_response(err: HubError) -> JsonResponse:
    resp = JsonResponse({"error": err.as_dict()}, status=HTTP_STATUS.get(err.code, 500))
    if err.retry_after_ms is not None:
        resp["Retry-After"] = str(max(1, (err.retry_after_ms + 999) // 1000))
    return resp


def authenticate(request: HttpRequest) -> Caller:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise HubError(UNAUTHORIZED, "missing bearer token")
    try:
        claims = credentials.verify(header[7:].strip())
    except auth.TokenError as exc:
        raise HubError(UNAUTHORIZED, str(exc)) from exc
    rid = request_id_of(request)
    request_id.set(rid)
    return Caller(claims.user, claims.role, claims.tenant, None, rid)


def json_body(request: HttpRequest, max_bytes: int = MAX_BODY) -> Any:
    if len(request.body) > max_bytes:
        raise HubError("too_large", f"body over {max_bytes} bytes")
    if not request.body:
        return {}
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise HubError(BAD_REQUEST, "body is not valid JSON") from exc
    try:
        codec.check_data(body)
    except codec.FrameError as exc:
        raise HubError(BAD_REQUEST, exc.message) from exc
    return body


def not_allowed(allowed: str) -> JsonResponse:
    resp = JsonResponse({"error": {"code": BAD_REQUEST, "message": f"method not allowed: use {allowed}"}},
                        status=405)
    resp["Allow"] = allowed
    return resp


@csrf_exempt
async def api_not_found(request: HttpRequest) -> HttpResponse:
    """Every /api/ path no route serves: a JSON 404 (not Django's HTML page)."""
    return error_response(HubError(NOT_FOUND, f"no such endpoint: {request.path[:200]}"))


@csrf_exempt
async def rpc_view(request: HttpRequest, name: str) -> HttpResponse:
    known = rpc.REGISTRY.get(name)
    if known is None or not known.http:
        return error_response(HubError(NOT_FOUND, f"no rpc method {name[:100]!r} (see /api/openapi.json)"))
    if request.method != "POST":
        return not_allowed("POST")
    try:
        caller = authenticate(request)
        result = await rpc.call(caller, name, json_body(request))
    except HubError as err:
        return error_response(err)
    return HttpResponse(orjson.dumps({"result": result}), content_type="application/json")


@csrf_exempt
async def publish_view(request: HttpRequest) -> HttpResponse:
    """Server-side publish for backend services (role `service` or `admin`) on a channel of the
        token's tenant; audited."""
    if request.method != "POST":
        return not_allowed("POST")
    try:
        caller = authenticate(request)
        if caller.role not in (auth.SERVICE_ROLE, "admin"):
            raise HubError("forbidden", "server-side publish needs a service or admin token")
        body = json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("channel"), str) or "data" not in body:
            raise HubError(BAD_REQUEST, "body must be {channel, data, key?}")
        channel, key = body["channel"], body.get("key")
        if codec.CHANNEL_RE.match(channel) is None:
            raise HubError(BAD_REQUEST, "channel must look like namespace:id")
        split(channel)
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 64):
            raise HubError(BAD_REQUEST, "key must be 1 to 64 characters")
        from hub.engine import get_engine

        engine = await get_engine()
        # The channel of the caller's tenant: an admin or a service token publishes in its own
        # tenant only (a service token names its tenant explicitly; docs/tenancy.md).
        pub, dup = await engine.submit(qualify(caller.tenant, channel), body["data"],
                                       orjson.dumps(body["data"]).decode(), None, key)
        await audit.arecord(caller.user, "publish.server", channel, role=caller.role, tenant=caller.tenant,
                            offset=pub.offset, duplicate=dup)
    except HubError as err:
        return error_response(err)
    return JsonResponse({"result": {"offset": pub.offset}})


async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def _metrics_allowed(request: HttpRequest) -> bool:
    # HUB_METRICS_TOKEN, or an admin/service JWT; only a development hub without the token is open.
    expected: str = settings.HUB_METRICS_TOKEN
    if not expected and settings.DEVELOPMENT:
        return True
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return False
    token = header[7:].strip()
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        return True
    try:
        claims = credentials.verify(token)
    except auth.TokenError:
        return False
    return claims.role in ("admin", auth.SERVICE_ROLE)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: the Prometheus text exposition (core/metrics.py, docs/operations.md)."""
    if request.method not in ("GET", "HEAD"):
        return not_allowed("GET, HEAD")
    if not _metrics_allowed(request):
        return JsonResponse({"error": {"code": "unauthorized", "message": "metrics need a token"}}, status=401)
    # Reading the multiprocess files is file I/O: keep it off the event loop.
    body, content_type = await sync_to_async(metrics.render, thread_sensitive=False)()
    return HttpResponse(body, content_type=content_type)


# The readiness probe's own thread: it must not queue behind domain calls and recovery reads in
# the shared pools (a process busy with a reconnect storm would look dead to the load balancer).
_PROBE = ThreadPoolExecutor(1, thread_name_prefix="readyz")


def _db_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001
        connection.close()
        return False


async def readyz(request: HttpRequest) -> JsonResponse:
    from hub import lifecycle

    if lifecycle.draining():
        # Leaving: load balancers must send nothing new here (hub.lifecycle).
        return JsonResponse({"ok": False, "draining": True, "checks": {"draining": False}}, status=503)
    checks: dict[str, bool] = {"database": await asyncio.get_running_loop().run_in_executor(_PROBE, _db_ok)}
    client = hubredis.async_client()
    if client is not None:
        try:
            checks["redis"] = bool(await client.ping())
        except Exception:  # noqa: BLE001
            checks["redis"] = False
    ok = all(checks.values())
    # Checks the apps registered (hub.ready): only critical ones can make the answer 503.
    from hub.ready import run_checks

    apps_ok, app_checks, details = run_checks()
    ok = ok and apps_ok
    return JsonResponse({**details, "ok": ok, "checks": {**checks, **app_checks}}, status=200 if ok else 503)


async def openapi_view(request: HttpRequest) -> JsonResponse:
    from hub.openapi import schema

    return JsonResponse(schema())
