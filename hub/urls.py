from django.urls import path, re_path

from hub import http

urlpatterns = [
    path("healthz", http.healthz),
    path("readyz", http.readyz),
    path("api/openapi.json", http.openapi_view),
    path("api/publish", http.publish_view),
    path("api/<str:name>", http.rpc_view),
    # Last: anything else under /api/ is a JSON 404 (routes included before hub.urls come first).
    re_path(r"^api(?:/|$)", http.api_not_found),
]
