"""Devices, preferences, the outbox and dead letters in the Django admin; staff see every tenant's rows
(operators; docs/tenancy.md).

Changes go through notify.actions, as from the apps: a device is removed as its owner would
unregister it, preferences are checked and saved as `notify.set_preferences` does. Devices are
registered only by their apps (the token is theirs), and outbox rows and dead letters are the
delivery worker's record: read-only here.
"""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import ReadOnly
from core.errors import HubError
from notify import actions
from notify.models import DeadLetter, Device, Outbox, Preferences


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "user", "platform", "app", "background", "last_seen")
    list_filter = ("platform", "tenant")
    search_fields = ("user", "id")
    # The token is a credential for pushing to the device: not shown.
    fields = ("id", "tenant", "user", "platform", "app", "background", "created_at", "last_seen")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        deleted, counts, _perms, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected  # its outbox rows go with it, as on unregister

    def delete_model(self, request: HttpRequest, obj: Device) -> None:
        self.delete_queryset(request, Device.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        for d in queryset:
            try:
                actions.unregister(d.tenant, d.user, d.id)
            except HubError:
                pass  # unregistered meanwhile


def _choices(data: dict[str, Any]) -> dict[str, Any]:
    """The form's fields as set_preferences' keywords (blank quiet hours: none)."""
    start, end = data.get("quiet_start") or "", data.get("quiet_end") or ""
    return {"kinds": data.get("kinds") or {}, "quiet": (start, end) if start or end else None,
            "time_zone": data.get("timezone") or "UTC", "quiet_override": data.get("quiet_override")}


class PreferencesForm(forms.ModelForm):
    class Meta:
        model = Preferences
        fields = ["tenant", "user", "kinds", "quiet_start", "quiet_end", "timezone", "quiet_override"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            actions.check_preferences(**_choices(data))
        except HubError as exc:
            raise forms.ValidationError(exc.message) from exc
        return data


@admin.register(Preferences)
class PreferencesAdmin(admin.ModelAdmin):
    form = PreferencesForm
    list_display = ("tenant", "user", "quiet_start", "quiet_end", "timezone", "quiet_override")
    search_fields = ("user",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("tenant", "user") if obj is not None else ()  # a row stays its user's

    def save_model(self, request: HttpRequest, obj: Preferences, form: Any, change: bool) -> None:
        actions.set_preferences(obj.tenant, obj.user, **_choices(form.cleaned_data))
        obj.pk = Preferences.objects.values_list("pk", flat=True).get(tenant=obj.tenant, user=obj.user)

    def delete_model(self, request: HttpRequest, obj: Preferences) -> None:
        actions.reset_preferences(obj.tenant, obj.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Preferences]) -> None:
        for p in queryset:
            actions.reset_preferences(p.tenant, p.user)


@admin.register(Outbox)
class OutboxAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "tenant", "user", "kind", "state", "attempts", "next_at", "expires_at")
    list_filter = ("state", "kind")
    search_fields = ("user", "collapse_key")


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "tenant", "user", "platform", "kind", "reason", "attempts", "created_at")
    list_filter = ("platform", "kind")
    search_fields = ("user", "reason")
