from django.apps import AppConfig


class MatchingConfig(AppConfig):
    name = "matching"

    def ready(self) -> None:
        # The app's whole surface: providers.*, match.find, bookings.*, offers.*, zones.* over rpc,
        # the zone REST routes, the offer sweep, its privacy entry and readiness check.
        from core import privacy as registry
        from hub import privacy as hub_privacy
        from hub import routes, rpc, tasks
        from hub.ready import register_check
        from matching import matcher, privacy, urls
        from matching import rpc as matching_rpc
        from matching.actions import bookings

        rpc.register(matching_rpc)
        routes.register("matching", urls.urlpatterns, urls.openapi())
        registry.register(privacy.ENTRY)
        hub_privacy.on_erased(privacy.forget_here)
        # Subscribed to other processes' updates and loaded before the first request; if that fails
        # (database down), the sweep's matcher() call retries every second.
        tasks.on_start("matching", matcher.start)
        tasks.every(1.0, "matching.offers", bookings.sweep)
        # On drain: the provider snapshot is flushed (Redis hash and table), so the next process to
        # start restores every provider's last state.
        tasks.on_stop("matching", matcher.stop)
        # Not critical: a bad stored zone is the same in every process, so taking processes out of
        # the load balancer would not fix it; it is reported (bad_zones) and the others serve.
        register_check("zones", matcher.zones_ready, critical=False)
