from django.contrib import admin

from notify.models import DeadLetter, Device, Outbox, Preferences


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "user", "platform", "app", "background", "last_seen")
    list_filter = ("platform", "tenant")
    search_fields = ("user", "id")
    # The token is a credential for pushing to the device: not shown.
    exclude = ("token", "keys")
    readonly_fields = ("tenant", "user", "platform", "app", "created_at", "last_seen")


@admin.register(Preferences)
class PreferencesAdmin(admin.ModelAdmin):
    list_display = ("tenant", "user", "quiet_start", "quiet_end", "timezone", "quiet_override")
    search_fields = ("user",)


@admin.register(Outbox)
class OutboxAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "user", "kind", "state", "attempts", "next_at", "expires_at")
    list_filter = ("state", "kind")
    search_fields = ("user", "collapse_key")


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "user", "platform", "kind", "reason", "attempts", "created_at")
    list_filter = ("platform", "kind")
    search_fields = ("user", "reason")
