"""GET /metrics: the Prometheus text exposition (see core/metrics.py and docs/operations.md).

A scrape sends `Authorization: Bearer <HUB_METRICS_TOKEN>` or an admin/service JWT of the hub.
Only a development hub without HUB_METRICS_TOKEN serves it to anyone.
"""
from __future__ import annotations

import hmac

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from core import metrics as hub_metrics


def _allowed(request: HttpRequest) -> bool:
    expected: str = settings.HUB_METRICS_TOKEN
    if not expected and settings.DEVELOPMENT:
        return True
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return False
    token = header[7:].strip()
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        return True
    from hub import auth, credentials

    try:
        claims = credentials.verify(token)
    except auth.TokenError:
        return False
    return claims.role in ("admin", auth.SERVICE_ROLE)


async def metrics(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return JsonResponse({"error": {"code": "bad_request", "message": "use GET"}}, status=400)
    if not _allowed(request):
        return JsonResponse({"error": {"code": "unauthorized", "message": "metrics need a token"}}, status=401)
    # Reading the multiprocess files is file I/O: keep it off the event loop.
    body, content_type = await sync_to_async(hub_metrics.render, thread_sensitive=False)()
    return HttpResponse(body, content_type=content_type)
