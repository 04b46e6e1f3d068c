"""Django admin for zones, assignments, provider state, bookings, offers and assignments.

Zone saves and deletes here are the zone actions the API calls (matching.service create_zone,
replace_zone, delete_zone): the same validation, audit and reach to every hub process. Staff see and edit every
tenant's rows here (operators; docs/tenancy.md): a zone's tenant is chosen on the form.
"""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.http import HttpRequest

from core.errors import HubError
from matching import rpc as _methods  # noqa: F401 - registers the rpc methods (see apps.ready)
from matching import service
from matching.models import Assignment, Booking, Offer, ProviderState, Zone, ZoneAssignment


class ZoneForm(forms.ModelForm):
    class Meta:
        model = Zone
        fields = ["tenant", "name", "categories", "geometry", "active"]

    def clean_geometry(self) -> Any:
        geometry = self.cleaned_data["geometry"]
        try:
            service.prepare_zone_geometry(geometry)  # the index must be able to load it: else not saved
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


def _assignments_changed(providers: set[tuple[str, str]]) -> None:
    """(tenant, provider) pairs whose zone assignments changed."""
    def apply() -> None:
        m = service.matcher()
        for tenant, p in providers:
            m.reload_assignments(tenant, p)
            m.sync.assignment_changed(tenant, p)

    if providers:
        transaction.on_commit(apply)


def _actor(request: HttpRequest, tenant: str) -> service.SystemActor:
    """Staff act as an admin of the zone's tenant (audited under their username)."""
    return service.SystemActor(user=getattr(request.user, "username", "") or "admin", role="admin", tenant=tenant)


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
            service.replace_zone(actor, obj.id, *fields)
        else:
            obj.pk = service.create_zone(actor, *fields)["id"]
            obj._state.adding = False
        obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        zone = form.instance
        before = set(ZoneAssignment.objects.filter(zone=zone).values_list("zone__tenant", "provider"))
        super().save_related(request, form, formsets, change)
        after = set(ZoneAssignment.objects.filter(zone=zone).values_list("zone__tenant", "provider"))
        _assignments_changed(before | after)

    def delete_model(self, request: HttpRequest, obj: Zone) -> None:
        service.delete_zone(_actor(request, obj.tenant), obj.id)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for obj in list(queryset):
            self.delete_model(request, obj)


@admin.register(ProviderState)
class ProviderStateAdmin(admin.ModelAdmin):
    list_display = ["user", "available", "capacity", "rating", "offers_accepted", "offers_declined",
                    "offers_expired", "updated_at"]
    search_fields = ["user"]
    readonly_fields = ["lat", "lng", "available", "categories", "capacity", "schedule", "ts",
                       "offers_accepted", "offers_declined", "offers_expired", "updated_at"]

    def save_model(self, request: HttpRequest, obj: ProviderState, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        (tenant, user), rating = service.split_provider_key(obj.user), obj.rating
        transaction.on_commit(lambda: service.matcher().set_stats(user, rating=rating, tenant=tenant))


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
        _assignments_changed({(obj.zone.tenant, obj.provider)} | ({old} if old else set()))

    def delete_model(self, request: HttpRequest, obj: ZoneAssignment) -> None:
        super().delete_model(request, obj)
        _assignments_changed({(obj.zone.tenant, obj.provider)})

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        providers = set(queryset.values_list("zone__tenant", "provider"))
        super().delete_queryset(request, queryset)
        _assignments_changed(providers)
