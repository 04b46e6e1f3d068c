"""The URL conf (ROOT_URLCONF): the hub's own routes, then the routes apps registered in ready()
(hub.routes), then the generic rpc route `/api/<method>`."""
from django.contrib import admin
from django.urls import path, re_path

from hub import http, routes

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", http.healthz),
    path("readyz", http.readyz),
    path("metrics", http.metrics_view),
    path("api/openapi.json", http.openapi_view),
    path("api/publish", http.publish_view),
    *routes.patterns(),
    path("api/<str:name>", http.rpc_view),
    # Last: anything else under /api/ is a JSON 404.
    re_path(r"^api(?:/|$)", http.api_not_found),
]
