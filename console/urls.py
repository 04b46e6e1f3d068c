"""The console's routes: the page, its built assets, its own read-only helpers and dev sign-in.

Registered in ConsoleConfig.ready() (hub.routes), so hub/urls.py places them before the /api/
catch-all."""
from django.urls import path, re_path

from console import views

urlpatterns = [
    path("console/", views.index),
    path("console", views.index_redirect),
    re_path(r"^static/console/(?P<name>[A-Za-z0-9._/-]{1,200})$", views.asset),
    path("console/api/coverage", views.coverage),
    path("console/api/providers", views.providers),
    path("console/api/audit", views.audit_log),
    path("api/dev/token", views.dev_token),
]
