"""Django admin for zones, assignments, provider state, bookings, offers and assignments.

Zone saves and deletes and rating changes here are the actions the API calls
(matching.actions.zones, matching.actions.providers.set_rating): the same validation, audit and
reach to every hub process. Staff see and edit every tenant's rows here (operators;
docs/tenancy.md): a zone's tenant is chosen on the form, and staff act as an admin of the row's tenant.
"""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from core.errors import HubError
from hub.rpc import Caller
from matching.actions import providers, zones
from matching.matcher import provider_key, split_provider_key
from matching.models import Assignment, Booking, Offer, ProviderState, Zone, ZoneAssignment


class ZoneForm(forms.ModelForm):
    class Meta:
        model = Zone
        fields = ["tenant", "name", "categories", "geometry", "active"]

    def clean_geometry(self) -> Any:
        geometry = self.cleaned_data["geometry"]
        try:
            zones.prepare_zone_geometry(geometry)  # the index must be able to load it: else not saved
        except HubError as exc:
            raise forms.ValidationError(exc.message) from exc
        return geometry

    def clean_categories(self) -> Any:
        cats = self.cleaned_data["categories"]
        ok = isinstance(cats, list) and bool(cats) and all(
            isinstance(c, str) and 0 < len(c) <= 64 for c in cats)
        if not ok:
            raise forms.ValidationError('a non-empty JSON list of category names, e.g. ["plumbing"]')
        return sorted(set(cats))


class ZoneAssignmentInline(admin.TabularInline):
    model = ZoneAssignment
    extra = 0
    readonly_fields = ["created_by", "created_at"]


def _actor(request: HttpRequest, tenant: str) -> Caller:
    """Staff act as an admin of the row's tenant (audited under their username)."""
    return Caller(user=getattr(request.user, "username", "") or "admin", role="admin", tenant=tenant)


@admin.register(Zone)
class ZoneAdmin(admin.ModelAdmin):
    form = ZoneForm
    list_display = ["id", "tenant", "name", "active", "version", "updated_at"]
    list_filter = ["tenant", "active"]
    search_fields = ["id", "name"]
    readonly_fields = ["version", "created_by", "created_at", "updated_at"]
    inlines = [ZoneAssignmentInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Zone | None = None) -> list[str]:
        # A zone stays in its tenant: the actions find it there.
        return [*self.readonly_fields, "tenant"] if obj is not None else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Zone, form: Any, change: bool) -> None:
        actor = _actor(request, obj.tenant)
        fields = (obj.name, list(obj.categories), obj.geometry, obj.active)
        if change:
            zones.replace_zone(actor, obj.id, *fields)
        else:
            obj.pk = zones.create_zone(actor, *fields)["id"]
            obj._state.adding = False
        obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        zone = form.instance
        before = set(ZoneAssignment.objects.filter(zone=zone).values_list("zone__tenant", "provider"))
        super().save_related(request, form, formsets, change)
        after = set(ZoneAssignment.objects.filter(zone=zone).values_list("zone__tenant", "provider"))
        providers.assignments_changed(before | after)

    def delete_model(self, request: HttpRequest, obj: Zone) -> None:
        zones.delete_zone(_actor(request, obj.tenant), obj.id)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for obj in list(queryset):
            self.delete_model(request, obj)


class ProviderStateForm(forms.ModelForm):
    class Meta:
        model = ProviderState
        fields = ["user", "rating"]

    def clean_rating(self) -> float:
        rating = float(self.cleaned_data["rating"])
        if not 0.0 <= rating <= 5.0:
            raise forms.ValidationError("a rating is in 0..5")
        return rating


@admin.register(ProviderState)
class ProviderStateAdmin(admin.ModelAdmin):
    form = ProviderStateForm
    list_display = ["user", "available", "capacity", "rating", "offers_accepted", "offers_declined",
                    "offers_expired", "updated_at"]
    search_fields = ["user"]
    readonly_fields = ["lat", "lng", "available", "categories", "capacity", "schedule", "ts",
                       "offers_accepted", "offers_declined", "offers_expired", "updated_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: ProviderState | None = None) -> list[str]:
        # A row is one provider of one tenant: only its rating changes here.
        return [*self.readonly_fields, "user"] if obj is not None else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: ProviderState, form: Any, change: bool) -> None:
        # The rating is set as providers.set_rating sets it: checked, audited, in every process.
        tenant, user = split_provider_key(obj.user)
        providers.set_rating(_actor(request, tenant), user, obj.rating)
        obj.pk = provider_key(tenant, user)
        obj.refresh_from_db()


class OfferInline(admin.TabularInline):
    model = Offer
    extra = 0
    can_delete = False
    readonly_fields = ["provider", "status", "round", "distance_m", "offered_at", "expires_at", "accepted_at",
                       "declined_at", "expired_at", "withdrawn_at"]


class AssignmentInline(admin.TabularInline):
    model = Assignment
    extra = 0
    can_delete = False
    readonly_fields = ["provider", "accepted_at"]


@admin.register(Booking)
class BookingAdmin(admin.ModelAdmin):
    list_display = ["id", "customer", "category", "mode", "at", "crew", "accepted", "status", "created_at"]
    list_filter = ["status", "mode", "category"]
    search_fields = ["id", "customer"]
    readonly_fields = ["customer", "tenant", "category", "lat", "lng", "mode", "at", "crew", "zone", "status",
                       "accepted", "created_at", "first_offered_at", "assigned_at", "unfilled_at",
                       "updated_at"]
    inlines = [OfferInline, AssignmentInline]


@admin.register(Offer)
class OfferAdmin(admin.ModelAdmin):
    list_display = ["booking", "provider", "status", "round", "offered_at", "expires_at"]
    list_filter = ["status"]
    search_fields = ["booking__id", "provider"]
    readonly_fields = ["booking", "provider", "status", "round", "distance_m", "offered_at", "expires_at",
                       "accepted_at", "declined_at", "expired_at", "withdrawn_at"]


@admin.register(ZoneAssignment)
class ZoneAssignmentAdmin(admin.ModelAdmin):
    list_display = ["zone", "provider", "created_by", "created_at"]
    search_fields = ["provider", "zone__id", "zone__name"]

    def save_model(self, request: HttpRequest, obj: ZoneAssignment, form: Any, change: bool) -> None:
        old = (ZoneAssignment.objects.filter(pk=obj.pk).values_list("zone__tenant", "provider").first()
               if change else None)
        super().save_model(request, obj, form, change)
        providers.assignments_changed({(obj.zone.tenant, obj.provider)} | ({old} if old else set()))

    def delete_model(self, request: HttpRequest, obj: ZoneAssignment) -> None:
        super().delete_model(request, obj)
        providers.assignments_changed({(obj.zone.tenant, obj.provider)})

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        pairs = set(queryset.values_list("zone__tenant", "provider"))
        super().delete_queryset(request, queryset)
        providers.assignments_changed(pairs)
