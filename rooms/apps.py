from django.apps import AppConfig


class RoomsConfig(AppConfig):
    name = "rooms"

    def ready(self) -> None:
        # The app's whole surface: the chat/job/call namespaces, the rooms.*, jobs.*, calls.* rpc
        # methods, the calls' timer and the privacy entry.
        from core import privacy as registry
        from hub import channels, tasks
        from hub import rpc as hub_rpc
        from rooms import privacy, rpc
        from rooms.actions import calls

        for namespace in rpc.NAMESPACES:
            channels.register(namespace)
        hub_rpc.register(rpc)
        # Missed invites and abandoned calls, every second in each hub process.
        tasks.every(1.0, "calls.sweep", calls.sweep)
        registry.register(privacy.ENTRY)
