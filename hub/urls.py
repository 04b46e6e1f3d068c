from django.urls import path

from hub import http

urlpatterns = [
    path("healthz", http.healthz),
    path("readyz", http.readyz),
    path("api/openapi.json", http.openapi_view),
    path("api/publish", http.publish_view),
    path("api/<str:name>", http.rpc_view),
]
