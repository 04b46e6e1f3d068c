from django.apps import AppConfig


class HubConfig(AppConfig):
    name = "hub"

    def ready(self) -> None:
        # The hub's own namespaces and rpc methods; domain apps register theirs in their ready().
        from core import privacy as registry
        from hub import namespaces, privacy, revocation  # noqa: F401

        registry.register(privacy.ENTRY)
