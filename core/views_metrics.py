"""GET /metrics: the Prometheus text exposition (see core/metrics.py and docs/operations.md).

Open by default (bind the hub to a private network, or block /metrics at the proxy). With
HUB_METRICS_TOKEN set, a scrape must send `Authorization: Bearer <HUB_METRICS_TOKEN>` or an
admin/service JWT.
"""
from __future__ import annotations

import hmac
import os

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from core import metrics as hub_metrics


def _allowed(request: HttpRequest) -> bool:
    expected = os.environ.get("HUB_METRICS_TOKEN", "")
    if not expected:
        return True
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return False
    token = header[7:].strip()
    if hmac.compare_digest(token.encode(), expected.encode()):
        return True
    from hub import auth

    try:
        claims = auth.verify(token, settings.HUB_SECRET)
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
