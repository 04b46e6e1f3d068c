from django.apps import AppConfig


class RoomsConfig(AppConfig):
    name = "rooms"

    def ready(self) -> None:
        # Registers the chat/job/call namespaces and the rooms.*, jobs.*, calls.* rpc methods.
        from rooms import chat  # noqa: F401
        try:
            from rooms import jobs  # noqa: F401
        except ImportError:  # jobs arrive with their own change
            pass
        try:
            from rooms import calls  # noqa: F401
        except ImportError:
            pass
