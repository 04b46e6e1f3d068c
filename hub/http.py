"""HTTP: every rpc method under /api/<method>, the OpenAPI schema, health, server-side publish.

Every response carries `X-Request-Id` (the client's when it is a sane token, else a new one); the
same id is in the logs and audit rows of the request. Unknown paths under /api/ are JSON 404s.
"""
from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from core import audit
from core import redis as hubredis
from core.errors import BAD_REQUEST, HTTP_STATUS, NOT_FOUND, UNAUTHORIZED, HubError
from core.logs import request_id
from hub import auth, codec, credentials, rpc
from hub.channels import split
from hub.rpc import Caller

log = logging.getLogger("hub.http")
MAX_BODY = 256 * 1024
# A client's X-Request-Id is kept only when it cannot smuggle anything into logs or headers.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_of(request: HttpRequest) -> str:
    """The request's id: set by RequestIdMiddleware, else the client's (when sane), else a new one."""
    rid = getattr(request, "request_id", None)
    if rid is None:
        given = request.headers.get("X-Request-Id", "")
        rid = given if REQUEST_ID_RE.fullmatch(given) else secrets.token_hex(8)
        request.request_id = rid  # type: ignore[attr-defined]
    return str(rid)


class RequestIdMiddleware:
    """Outermost middleware: a request id on every response and in the logs; one log line per request
    (INFO in development, DEBUG otherwise so production logs stay quiet; 5xx always WARNING)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        t0 = self._start(request)
        return self._finish(request, self.get_response(request), t0)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        t0 = self._start(request)
        get_response: Callable[[HttpRequest], Awaitable[HttpResponse]] = self.get_response
        return self._finish(request, await get_response(request), t0)

    @staticmethod
    def _start(request: HttpRequest) -> float:
        request_id.set(request_id_of(request))
        return time.perf_counter()

    @staticmethod
    def _finish(request: HttpRequest, response: HttpResponse, t0: float) -> HttpResponse:
        rid = request_id_of(request)
        response["X-Request-Id"] = rid
        ms = (time.perf_counter() - t0) * 1000
        status = response.status_code
        level = logging.WARNING if status >= 500 else logging.INFO if settings.DEVELOPMENT else logging.DEBUG
        if log.isEnabledFor(level):
            # The path only: a query string may carry personal data.
            log.log(level, "%s %s %d %.1f ms", request.method, request.path, status, ms,
                    extra={"event": "http", "code": str(status), "duration_ms": round(ms, 1)})
        return response


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
    """Server-side publish for backend services (role `service` or `admin`); audited."""
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
        pub, dup = await engine.submit(channel, body["data"], orjson.dumps(body["data"]).decode(), None, key)
        await audit.arecord(caller.user, "publish.server", channel, role=caller.role, tenant=caller.tenant,
                            offset=pub.offset, duplicate=dup)
    except HubError as err:
        return error_response(err)
    return JsonResponse({"result": {"offset": pub.offset}})


async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def _db_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001
        connection.close()
        return False


async def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, bool] = {"database": await sync_to_async(_db_ok, thread_sensitive=False)()}
    client = hubredis.async_client()
    if client is not None:
        try:
            checks["redis"] = bool(await client.ping())
        except Exception:  # noqa: BLE001
            checks["redis"] = False
    ok = all(checks.values())
    return JsonResponse({"ok": ok, "checks": checks}, status=200 if ok else 503)


async def openapi_view(request: HttpRequest) -> JsonResponse:
    from hub.openapi import schema

    return JsonResponse(schema())
