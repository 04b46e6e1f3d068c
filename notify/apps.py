from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "notify"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The app's whole surface: devices.* and notify.*_preferences over rpc, the push routes,
        # the in-transaction hook on `user:` appends (outbox rows) and on chat publications, the
        # VAPID key at start-up, the delivery worker on every hub process's loop, the clean-up sweep.
        from core import privacy as registry
        from hub import routes, rpc, store, tasks
        from notify import actions, privacy, urls, worker
        from notify import rpc as notify_rpc

        rpc.register(notify_rpc)
        routes.register("notify", urls.urlpatterns, urls.OPENAPI)
        registry.register(privacy.ENTRY)
        store.on_user_append(actions.on_user_events)
        store.on_publish("chat:", actions.on_chat_publications)
        tasks.on_start("notify", worker.start_vapid)
        tasks.on_loop("notify.delivery", worker.run_worker)
        tasks.every(60, "notify.purge", actions.purge_finished)
