from django.apps import AppConfig


class RoomsConfig(AppConfig):
    name = "rooms"

    def ready(self) -> None:
        # The chat/job/call namespaces and the rooms.*, jobs.*, calls.* rpc methods register on import.
        from core import privacy as registry
        from rooms import calls, chat, jobs, privacy  # noqa: F401

        registry.register(privacy.ENTRY)
