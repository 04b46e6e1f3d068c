import logging

from django.apps import AppConfig


class AiAssistConfig(AppConfig):
    name = "ai_assist"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The assist.ask / assist.cancel rpc methods register on import.
        from ai_assist import privacy, rpc  # noqa: F401
        from core import privacy as registry

        registry.register(privacy.ENTRY)

        # The SDKs' transport logs one INFO line per upstream request; the relay logs its own outcome.
        for name in ("httpx2", "openai", "anthropic"):
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.WARNING)
