"""GET /api/push/vapid-public-key: the key browsers subscribe with (`applicationServerKey`).

Registered in NotifyConfig.ready() (hub.routes), so hub/urls.py places it before the /api/ catch-all."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from core.errors import HubError
from hub.http import error_response, not_allowed
from notify import actions


def vapid_public_key(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return not_allowed("GET")
    try:
        key = actions.vapid_public_key()
    except HubError as exc:
        return error_response(exc)
    resp = JsonResponse({"public_key": key})
    resp["Cache-Control"] = "public, max-age=3600"
    return resp


urlpatterns = [path("api/push/vapid-public-key", vapid_public_key)]

OPENAPI = {"/api/push/vapid-public-key": {"get": {
    "operationId": "push.vapid_public_key", "summary": "The VAPID public key browsers subscribe with.",
    "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"public_key": {"type": "string"}}}}}},
        "503": {"description": "Web Push is not configured"}}}}}
