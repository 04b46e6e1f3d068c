from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "notify"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # devices.* and notify.*_preferences rpc methods register on import; notify.worker registers
        # the in-transaction hook on `user:` appends (outbox rows), the VAPID key at start-up, the
        # delivery worker on every hub process's loop and the clean-up sweep.
        from core import privacy as registry
        from hub import routes
        from notify import privacy, rpc, urls, worker  # noqa: F401

        registry.register(privacy.ENTRY)
        routes.register("notify", urls.urlpatterns, urls.OPENAPI)
