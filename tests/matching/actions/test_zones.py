"""matching.actions.zones: zone CRUD reaches the index and the audit log; refused geometry stores nothing."""
from __future__ import annotations

import uuid
from typing import Any

import pytest

from core.errors import HubError
from core.models import AuditLog
from hub.rpc import Caller
from matching.actions.zones import create_zone, delete_zone, get_zone, list_zones, replace_zone
from matching.matcher import matcher
from matching.models import Zone

ADMIN = Caller("system", "admin", "")


def square(lat: float, lng: float, d: float = 0.05) -> dict[str, Any]:
    ring = [[lng - d, lat - d], [lng + d, lat - d], [lng + d, lat + d], [lng - d, lat + d], [lng - d, lat - d]]
    return {"type": "Polygon", "coordinates": [ring]}


def test_zone_crud_updates_index_and_audits() -> None:
    cat = f"c{uuid.uuid4().hex[:8]}"
    actor = Caller("admin1", "admin", "")
    z = create_zone(actor, "Camden", [cat], square(51.54, -0.14))
    assert matcher().lookup_zone(51.54, -0.14, cat) == z["id"]
    assert AuditLog.objects.filter(action="zones.create", target=z["id"]).exists()
    assert get_zone(z["id"])["name"] == "Camden"
    assert any(x["id"] == z["id"] for x in list_zones(category=cat))
    replace_zone(actor, z["id"], "Camden", [cat], square(51.54, -0.14), active=False)
    assert matcher().lookup_zone(51.54, -0.14, cat) is None
    assert Zone.objects.get(id=z["id"]).version == 2
    delete_zone(actor, z["id"])
    with pytest.raises(HubError) as err:
        get_zone(z["id"])
    assert err.value.code == "not_found"
    assert AuditLog.objects.filter(action="zones.delete", target=z["id"]).exists()


@pytest.mark.parametrize("geometry", [
    {"type": "Point", "coordinates": [0, 51]},
    {"type": "Polygon", "coordinates": [[[0, 51], [1, 51], [1, 52]]]},
    {"type": "Polygon", "coordinates": [[[0, 51], [1, 52], [1, 51], [0, 52], [0, 51]]]},
    {"type": "Polygon", "coordinates": [[[0, 95], [1, 95], [1, 96], [0, 95]]]},
])
def test_invalid_geometry_is_bad_request(geometry: dict[str, Any]) -> None:
    with pytest.raises(HubError) as err:
        create_zone(ADMIN, "bad", ["x"], geometry)
    assert err.value.code == "bad_request"
    assert err.value.message.startswith("geometry:")

