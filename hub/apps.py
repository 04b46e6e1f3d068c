from django.apps import AppConfig


class HubConfig(AppConfig):
    name = "hub"

    def ready(self) -> None:
        # The hub's own namespaces and rpc methods; domain apps register theirs in their ready().
        from core import metrics
        from core import privacy as registry
        from hub import engine, namespaces, privacy, revocation  # noqa: F401

        registry.register(privacy.ENTRY)
        metrics.set_engine_source(lambda: list(engine._engines.values()))
