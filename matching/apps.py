from django.apps import AppConfig


class MatchingConfig(AppConfig):
    name = "matching"

    def ready(self) -> None:
        # Registers providers.*, match.find, bookings.*, offers.*, zones.* and the offer sweep.
        from core import privacy as registry
        from hub import routes
        from hub.ready import register_check
        from matching import privacy, rpc, service, urls  # noqa: F401 - importing rpc registers the methods

        registry.register(privacy.ENTRY)
        routes.register("matching", urls.urlpatterns, urls.openapi())

        # Not critical: a bad stored zone is the same in every process, so taking processes out of
        # the load balancer would not fix it; it is reported (bad_zones) and the others serve.
        register_check("zones", service.zones_ready, critical=False)
