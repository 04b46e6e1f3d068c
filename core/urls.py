from django.contrib import admin
from django.urls import include, path

from core import views_metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", views_metrics.metrics),
    path("", include("console.urls")),  # /console/, its assets, /api/dev/token: before hub.urls
    path("", include("matching.urls")),  # REST zone routes before the generic /api/<method>
    path("", include("notify.urls")),  # GET /api/push/vapid-public-key
    path("", include("hub.urls")),
]
