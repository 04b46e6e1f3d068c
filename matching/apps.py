from django.apps import AppConfig


class MatchingConfig(AppConfig):
    name = "matching"

    def ready(self) -> None:
        # Registers providers.*, match.find, bookings.*, offers.*, zones.* and the offer sweep.
        from matching import rpc  # noqa: F401
