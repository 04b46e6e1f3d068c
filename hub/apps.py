from django.apps import AppConfig
from django.conf import settings


class HubConfig(AppConfig):
    name = "hub"

    def ready(self) -> None:
        # The hub's whole surface; each domain app registers its own in its ready() the same way.
        from core import metrics
        from core import privacy as registry
        from hub import channels, engine, namespaces, privacy, revocation, rpc, tasks

        channels.register(namespaces.USER)
        rpc.register(revocation)
        registry.register(privacy.ENTRY)
        tasks.on_start("revocations", revocation.load_at_start)
        tasks.on_start("erasures", privacy.erasures_at_start)
        tasks.every(settings.HUB_REVOCATION_POLL_S, "revocations", revocation.poll)
        tasks.every(3600.0, "revocations.prune", revocation.prune)
        tasks.every(settings.HUB_REVOCATION_POLL_S, "erasures", privacy.poll_erasures)
        metrics.set_engine_source(lambda: list(engine._engines.values()))
