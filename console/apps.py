from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The web console: an entry-point-level app (it may use hub and the domain apps; nothing
    imports it). It registers its routes (hub.routes) and no rpc methods."""

    name = "console"

    def ready(self) -> None:
        from console import urls
        from hub import routes

        routes.register("console", urls.urlpatterns)
