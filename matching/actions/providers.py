"""Providers: their location and availability, finding them (`match.find`), their rating, the
zones operators assign them, and the offer outcomes their acceptance rate is made of.

A provider is a user of one tenant: the same user id in two tenants is two providers, and every
search and change here stays in the caller's tenant (docs/tenancy.md).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F

from core import metrics
from core.audit import record
from core.domain_budgets import aper_minute
from core.errors import bad_request, not_found
from hub.auth import DEFAULT_TENANT
from hub.rpc import Caller, run_sync
from matching import privacy
from matching.actions.zones import tenant_of
from matching.matcher import find, find_now, matcher, provider_key, split_provider_key
from matching.models import ProviderState, Zone, ZoneAssignment


def update_provider(user: str, lat: float, lng: float, available: bool, categories: list[str] | None = None,
                    capacity: int | None = None, schedule: list[dict[str, Any]] | None = None, *,
                    tenant: str = DEFAULT_TENANT) -> str:
    """A provider's location/availability; returns its H3 cell. None keeps the previous value."""
    return matcher().update_provider(user, lat, lng, available, categories, capacity, schedule, tenant=tenant)


async def find_providers(caller: Caller, lat: float, lng: float, category: str, k: int = 10,
                         crew: int = 1) -> dict[str, Any]:
    """match.find in the caller's tenant: customers and enterprises get cell-centre distances
    (matching.privacy), admins the exact ones."""
    # One budget over all of the user's sockets and processes: nobody sweeps the map for providers.
    await aper_minute("match_find", caller.tenant, caller.user, settings.HUB_MATCH_FIND_PER_MIN,
                      "match.find calls")
    args = (lat, lng, category, k, crew, privacy.sees_exact(caller.role), caller.tenant)
    with metrics.timer(metrics.match_latency):
        found = find_now(*args)  # on the loop: the search is cheaper than a thread hop
        if found is None:  # the index is busy or not loaded yet: wait for it in a worker
            found = await run_sync(find, *args)
        return found


def set_rating(caller: Caller, provider: str, rating: float) -> None:
    """The provider of the caller's tenant gets `rating` (0..5), used in the score; audited."""
    if not 0.0 <= rating <= 5.0:
        raise bad_request("rating must be in 0..5")
    where = tenant_of(caller)
    with transaction.atomic():
        ProviderState.objects.update_or_create(user=provider_key(where, provider), defaults={"rating": rating})
        record(caller.user, "providers.rating", provider, role=caller.role, tenant=where, rating=rating)
    transaction.on_commit(lambda: matcher().set_stats(provider, rating=rating, tenant=where))


def assign_zone(caller: Caller, provider: str, zone_id: str, remove: bool = False) -> dict[str, Any]:
    """Operator assigns (or with remove, unassigns) a provider of their tenant to a zone of it."""
    m = matcher()
    tenant = tenant_of(caller)
    with transaction.atomic():
        if not Zone.objects.filter(id=zone_id, tenant=tenant).exists():
            raise not_found(f"no zone {zone_id}")
        if remove:
            ZoneAssignment.objects.filter(zone_id=zone_id, provider=provider).delete()
        else:
            ZoneAssignment.objects.get_or_create(zone_id=zone_id, provider=provider,
                                                 defaults={"created_by": caller.user})
        record(caller.user, "providers.unassign_zone" if remove else "providers.assign_zone", provider,
               role=caller.role, tenant=caller.tenant, zone=zone_id)
    zones = sorted(ZoneAssignment.objects.filter(provider=provider, zone__tenant=tenant)
                   .values_list("zone_id", flat=True))
    m.assignments_saved(tenant, provider, zones)
    return {"provider": provider, "zones": zones}


def assignments_changed(providers: set[tuple[str, str]]) -> None:
    """(tenant, provider) pairs whose zone assignments the admin's forms changed in the open
    transaction: at commit every process reads them again."""
    def apply() -> None:
        m = matcher()
        for tenant, p in providers:
            m.reload_assignments(tenant, p)
            m.sync.assignment_changed(tenant, p)

    if providers:
        transaction.on_commit(apply)


# --- offer outcomes (the acceptance rate) -----------------------------------------------------

def record_offer_outcome(user: str, outcome: str, tenant: str = DEFAULT_TENANT) -> None:
    """Count an offer's outcome (accepted/declined/expired) for the acceptance rate; inside a transaction."""
    column = {"accepted": "offers_accepted", "declined": "offers_declined",
              "expired": "offers_expired"}[outcome]
    key = provider_key(tenant, user)
    updated = ProviderState.objects.filter(user=key).update(**{column: F(column) + 1})
    if not updated:
        p = matcher().providers_of(tenant).get(user)
        ProviderState.objects.get_or_create(user=key, defaults={
            "lat": p.lat if p else 0.0, "lng": p.lng if p else 0.0, "available": bool(p and p.available),
            "categories": list(p.categories) if p else [], "ts": p.ts if p else 0.0})
        ProviderState.objects.filter(user=key).update(**{column: F(column) + 1})


def refresh_acceptance(users: Iterable[str], tenant: str = DEFAULT_TENANT) -> None:
    """After commit: push the new acceptance rates into the index (and to other processes)."""
    keys = {provider_key(tenant, u) for u in users}
    if not keys:
        return
    m = matcher()
    for row in ProviderState.objects.filter(user__in=keys):
        m.set_stats(split_provider_key(row.user)[1], acceptance=row.acceptance, tenant=tenant)

