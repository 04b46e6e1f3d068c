"""An admin cannot store a zone that would make every process spend minutes and gigabytes on it."""
from __future__ import annotations

import math

from matching.models import Zone
from tests.support import http_json, mint, uid


def km_square(lat: float, lng: float, km: float) -> dict[str, object]:
    dlat = km / 111.32 / 2
    dlng = km / (111.32 * math.cos(math.radians(lat))) / 2
    ring = [[lng - dlng, lat - dlat], [lng + dlng, lat - dlat], [lng + dlng, lat + dlat],
            [lng - dlng, lat + dlat], [lng - dlng, lat - dlat]]
    return {"type": "Polygon", "coordinates": [ring]}


def test_an_oversized_zone_is_refused_and_not_stored(live_hub) -> None:
    admin = mint(uid("admin"), "admin")
    name = f"too big {uid()}"
    for km in (200, 2000):
        status, body = http_json("POST", f"{live_hub.http}/api/zones",
                                 {"name": name, "categories": ["plumbing"], "geometry": km_square(52.0, -1.5, km)},
                                 token=admin)
        assert status == 400, body
        assert body["error"]["code"] == "bad_request" and "too large" in body["error"]["message"]
    assert not Zone.objects.filter(name=name).exists()
    # A zone within the cap is stored, and growing it past the cap is refused the same way.
    status, body = http_json("POST", f"{live_hub.http}/api/zones",
                             {"name": name, "categories": ["plumbing"], "geometry": km_square(52.0, -1.5, 30)},
                             token=admin)
    assert status == 201, body
    status, grown = http_json("PUT", f"{live_hub.http}/api/zones/{body['id']}",
                              {"name": name, "categories": ["plumbing"], "geometry": km_square(52.0, -1.5, 300)},
                              token=admin)
    assert status == 400 and "too large" in grown["error"]["message"]
    status, now = http_json("GET", f"{live_hub.http}/api/zones/{body['id']}", token=admin)
    assert status == 200 and now["geometry"] == body["geometry"]  # the refused update changed nothing
