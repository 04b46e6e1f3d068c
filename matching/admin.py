"""Django admin for zones, assignments, provider state, bookings, offers and assignments.

Zone edits here validate the geometry like the API does, are audited, and reach every hub
process (the matcher applies them after commit and broadcasts them). Staff see and edit every
tenant's rows here (operators; docs/tenancy.md): a zone's tenant is chosen on the form.
"""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.http import HttpRequest

from core.audit import record
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


def _after_commit(zone_id: str, deleted: bool = False) -> None:
    m = service.matcher()
    if deleted:
        with m.lock:
            m._drop_zone(zone_id)
    else:
        m.reload_zone(zone_id)
    m.sync.zone_changed(zone_id)


def _assignments_changed(providers: set[tuple[str, str]]) -> None:
    """(tenant, provider) pairs whose zone assignments changed."""
    def apply() -> None:
        m = service.matcher()
        for tenant, p in providers:
            m.reload_assignments(tenant, p)
            m.sync.assignment_changed(tenant, p)

    if providers:
        transaction.on_commit(apply)


@admin.register(Zone)
class ZoneAdmin(admin.ModelAdmin):
    form = ZoneForm
    list_display = ["id", "tenant", "name", "active", "version", "updated_at"]
    list_filter = ["tenant", "active"]
    search_fields = ["id", "name"]
    readonly_fields = ["version", "created_by", "created_at", "updated_at"]
    inlines = [ZoneAssignmentInline]

    def save_model(self, request: HttpRequest, obj: Zone, form: Any, change: bool) -> None:
        actor = getattr(request.user, "username", "") or "admin"
        with transaction.atomic():
            if change:
                obj.version = obj.version + 1
            else:
                obj.created_by = actor
            super().save_model(request, obj, form, change)
            record(actor, "zones.replace" if change else "zones.create", obj.id, role="admin",
                   via="django-admin", tenant=obj.tenant,
                   name=obj.name, categories=obj.categories, active=obj.active)
        zone_id = obj.id
        transaction.on_commit(lambda: _after_commit(zone_id))

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        zone = form.instance
        before = set(ZoneAssignment.objects.filter(zone=zone).values_list("zone__tenant", "provider"))
        super().save_related(request, form, formsets, change)
        after = set(ZoneAssignment.objects.filter(zone=zone).values_list("zone__tenant", "provider"))
        _assignments_changed(before | after)

    def delete_model(self, request: HttpRequest, obj: Zone) -> None:
        actor = getattr(request.user, "username", "") or "admin"
        zone_id = obj.id
        with transaction.atomic():
            super().delete_model(request, obj)
            record(actor, "zones.delete", zone_id, role="admin", via="django-admin")
        transaction.on_commit(lambda: _after_commit(zone_id, deleted=True))

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
