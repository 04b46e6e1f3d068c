"""matching.actions.providers: ratings and zone assignments stay in the caller's tenant and are
audited, offer outcomes make the acceptance rate, and match.find answers by role."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from django.db import transaction

from core.errors import HubError
from core.models import AuditLog
from hub.rpc import Caller
from matching.actions.providers import (
    assign_zone,
    find_providers,
    record_offer_outcome,
    refresh_acceptance,
    set_rating,
    update_provider,
)
from matching.actions.zones import create_zone
from matching.matcher import find, matcher
from matching.models import ProviderState, acceptance_rate


def uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def square(lat: float, lng: float, d: float = 0.05) -> dict[str, Any]:
    ring = [[lng - d, lat - d], [lng + d, lat - d], [lng + d, lat + d], [lng - d, lat + d], [lng - d, lat - d]]
    return {"type": "Polygon", "coordinates": [ring]}


def test_a_rating_is_checked_audited_and_stays_in_its_tenant() -> None:
    ta, tb, p = uid("ta"), uid("tb"), uid("p")
    for t in (ta, tb):
        update_provider(p, 51.5, -0.1, True, categories=["plumbing"], tenant=t)
    set_rating(Caller("ops", "admin", ta), p, 4.0)
    assert ProviderState.objects.get(user=f"{ta}/{p}").rating == 4.0
    assert not ProviderState.objects.filter(user=f"{tb}/{p}").exists()
    assert AuditLog.objects.filter(action="providers.rating", target=p, tenant=ta).exists()
    got_a, got_b = matcher().providers_of(ta).get(p), matcher().providers_of(tb).get(p)
    assert got_a is not None and got_a.rating == 4.0 and got_b is not None and got_b.rating == 0.0
    with pytest.raises(HubError) as err:
        set_rating(Caller("ops", "admin", ta), p, 5.5)
    assert err.value.code == "bad_request"


def test_zone_assignments_stay_in_the_tenant() -> None:
    ta, tb, p = uid("ta"), uid("tb"), uid("p")
    zone = create_zone(Caller("ops", "admin", ta), "Z", [uid("c")], square(51.2, 0.3))
    with pytest.raises(HubError) as err:
        assign_zone(Caller("ops", "admin", tb), p, zone["id"])  # another tenant's zone: not there
    assert err.value.code == "not_found"
    assert assign_zone(Caller("ops", "admin", ta), p, zone["id"]) == {"provider": p, "zones": [zone["id"]]}
    assert matcher().tenant(ta).assigned[p] == frozenset({zone["id"]})
    assert p not in matcher().tenant(tb).assigned
    assert assign_zone(Caller("ops", "admin", ta), p, zone["id"], remove=True) == {"provider": p, "zones": []}
    assert matcher().tenant(ta).assigned[p] == frozenset()
    assert AuditLog.objects.filter(action="providers.unassign_zone", target=p, tenant=ta).exists()


def test_offer_outcomes_make_the_acceptance_rate() -> None:
    t, p = uid("t"), uid("p")
    update_provider(p, 51.5, -0.1, True, categories=["plumbing"], tenant=t)  # no row yet: the index has them
    with transaction.atomic():
        for outcome in ("accepted", "accepted", "declined", "expired"):
            record_offer_outcome(p, outcome, t)
    row = ProviderState.objects.get(user=f"{t}/{p}")
    assert (row.offers_accepted, row.offers_declined, row.offers_expired) == (2, 1, 1)
    assert (row.lat, row.lng, row.available) == (51.5, -0.1, True)
    refresh_acceptance([p], t)
    got = matcher().providers_of(t).get(p)
    assert got is not None and got.acceptance == acceptance_rate(2, 1, 1)


def test_match_find_is_coarse_for_customers_and_exact_for_admins() -> None:
    t, cat, p = uid("t"), uid("c"), uid("p")
    create_zone(Caller("ops", "admin", t), "Z", [cat], square(51.3, 0.2))
    update_provider(p, 51.3012, 0.2013, True, categories=[cat], tenant=t)
    customer = asyncio.run(find_providers(Caller(uid("c"), "customer", t), 51.3, 0.2, cat))
    admin = asyncio.run(find_providers(Caller("ops", "admin", t), 51.3, 0.2, cat))
    assert customer == find(51.3, 0.2, cat, exact=False, tenant=t)
    assert admin == find(51.3, 0.2, cat, exact=True, tenant=t)
    assert [x["user"] for x in customer["providers"]] == [p] and customer["providers"][0]["distance_m"] % 100 == 0
    assert admin["providers"][0]["distance_m"] != customer["providers"][0]["distance_m"]
