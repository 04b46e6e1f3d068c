"""HTTP: every rpc method under /api/<method>, the OpenAPI schema, health, server-side publish."""
from __future__ import annotations

import logging
import secrets
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from core import audit
from core import redis as hubredis
from core.errors import BAD_REQUEST, HTTP_STATUS, UNAUTHORIZED, HubError
from core.logs import request_id
from hub import auth, codec, credentials, rpc
from hub.channels import split
from hub.rpc import Caller

log = logging.getLogger("hub.http")
MAX_BODY = 256 * 1024


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
    rid = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
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


@csrf_exempt
async def rpc_view(request: HttpRequest, name: str) -> HttpResponse:
    if request.method != "POST":
        return error_response(HubError(BAD_REQUEST, "use POST"))
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
        return error_response(HubError(BAD_REQUEST, "use POST"))
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
