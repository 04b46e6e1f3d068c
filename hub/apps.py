from django.apps import AppConfig


class HubConfig(AppConfig):
    name = "hub"

    def ready(self) -> None:
        # The hub's own namespaces and rpc methods; domain apps register theirs in their ready().
        from hub import namespaces, revocation  # noqa: F401
