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
