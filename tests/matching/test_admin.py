"""matching.admin: the zone form refuses what the zone index cannot load (nothing is saved)."""
from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from matching.admin import ZoneForm
from matching.zoneindex import ZoneIndex


def form(geometry: Any) -> ZoneForm:
    return ZoneForm(data={"tenant": "default", "name": f"z-{uuid.uuid4().hex[:8]}",
                          "categories": json.dumps(["plumbing"]),
                          "geometry": json.dumps(geometry), "active": True})


SQUARE = {"type": "Polygon", "coordinates": [[[-0.1, 51.5], [0.0, 51.5], [0.0, 51.6], [-0.1, 51.6], [-0.1, 51.5]]]}
EDGE = {"type": "Polygon", "coordinates": [[[3.0730, 48.8937], [3.1004, 48.8937], [3.1004, 48.9117],
                                            [3.0730, 48.9117], [3.0730, 48.8937]]]}
BOWTIE = {"type": "Polygon", "coordinates": [[[0.0, 51.0], [1.0, 52.0], [1.0, 51.0], [0.0, 52.0], [0.0, 51.0]]]}


def test_valid_zones_anywhere_pass() -> None:
    assert form(SQUARE).is_valid()
    assert form(EDGE).is_valid()  # crosses an icosahedron edge


def test_invalid_geometry_is_a_form_error() -> None:
    f = form(BOWTIE)
    assert not f.is_valid() and "Self-intersection" in f.errors["geometry"][0]


def test_geometry_the_index_cannot_load_is_a_form_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def cannot_load(self: ZoneIndex, geometry: Any) -> Any:
        raise ValueError("boom")

    monkeypatch.setattr(ZoneIndex, "prepare", cannot_load)
    f = form(SQUARE)
    assert not f.is_valid() and "the zone index cannot load this geometry" in f.errors["geometry"][0]


def test_staff_saves_and_deletes_zones_through_the_zone_actions() -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    from core.models import AuditLog
    from matching.models import Zone

    staff = User.objects.create_superuser(f"ops-{uuid.uuid4().hex[:8]}", "ops@example.com", "pw")
    client = Client()
    client.force_login(staff)
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    name = f"z-{uuid.uuid4().hex[:8]}"
    data = {"tenant": tenant, "name": name, "categories": json.dumps(["plumbing"]),
            "geometry": json.dumps(SQUARE), "active": "on",
            "assignments-TOTAL_FORMS": "0", "assignments-INITIAL_FORMS": "0"}
    resp = client.post("/admin/matching/zone/add/", data)
    assert resp.status_code == 302, resp.content[:2000]
    zone = Zone.objects.get(name=name)
    assert zone.tenant == tenant and zone.created_by == staff.username and zone.version == 1
    assert AuditLog.objects.filter(action="zones.create", target=zone.id, actor=staff.username,
                                   tenant=tenant).exists()
    data["name"] = name + "-renamed"
    resp = client.post(f"/admin/matching/zone/{zone.id}/change/", data)
    assert resp.status_code == 302, resp.content[:2000]
    zone.refresh_from_db()
    assert zone.name == name + "-renamed" and zone.version == 2 and zone.tenant == tenant
    resp = client.post(f"/admin/matching/zone/{zone.id}/delete/", {"post": "yes"})
    assert resp.status_code == 302
    assert not Zone.objects.filter(id=zone.id).exists()
    assert AuditLog.objects.filter(action="zones.delete", target=zone.id, tenant=tenant).exists()


def test_staff_set_a_rating_through_the_rating_action() -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    from core.models import AuditLog
    from matching.actions.providers import update_provider
    from matching.matcher import matcher
    from matching.models import ProviderState

    staff = User.objects.create_superuser(f"ops-{uuid.uuid4().hex[:8]}", "ops@example.com", "pw")
    client = Client()
    client.force_login(staff)
    tenant, user = f"t-{uuid.uuid4().hex[:6]}", f"p-{uuid.uuid4().hex[:8]}"
    update_provider(user, 51.5, -0.1, True, categories=["plumbing"], tenant=tenant)
    key = f"{tenant}/{user}"
    resp = client.post("/admin/matching/providerstate/add/", {"user": key, "rating": "4.5"})
    assert resp.status_code == 302, resp.content[:2000]
    assert ProviderState.objects.get(user=key).rating == 4.5
    assert AuditLog.objects.filter(action="providers.rating", target=user, actor=staff.username,
                                   tenant=tenant).exists()
    got = matcher().providers_of(tenant).get(user)
    assert got is not None and got.rating == 4.5
    resp = client.post(f"/admin/matching/providerstate/{key}/change/", {"rating": "7"})
    assert resp.status_code == 200 and b"a rating is in 0..5" in resp.content
    assert ProviderState.objects.get(user=key).rating == 4.5
