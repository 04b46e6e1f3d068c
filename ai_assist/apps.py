from django.apps import AppConfig


class AiAssistConfig(AppConfig):
    name = "ai_assist"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the assist.ask / assist.cancel rpc methods (once the relay lands).
        try:
            from ai_assist import rpc  # noqa: F401
        except ImportError:
            pass
