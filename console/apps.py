from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The web console: an entry-point-level app (it may use hub and the domain apps; nothing
    imports it). Its routes are included from core/urls.py; it registers no rpc methods."""

    name = "console"
