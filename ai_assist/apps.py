import logging

from django.apps import AppConfig


class AiAssistConfig(AppConfig):
    name = "ai_assist"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The app's whole surface: the assist.* rpc methods, its start-up hooks and sweep, its
        # privacy entry.
        from ai_assist import privacy, providers, rpc, transcripts
        from core import privacy as registry
        from hub import rpc as hub_rpc
        from hub import tasks

        hub_rpc.register(rpc)
        registry.register(privacy.ENTRY)
        tasks.on_start("ai_assist.providers", providers.warm_up)
        # Before a process serves, and now and then, so a dead process's rows do not wait for a restart.
        tasks.on_start("ai_assist.transcripts", transcripts.recover_journals)
        tasks.every(60, "ai_assist.transcripts", lambda now: transcripts.recover_journals())

        # The SDKs' transport logs one INFO line per upstream request; the relay logs its own outcome.
        for name in ("httpx2", "openai", "anthropic"):
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.WARNING)
