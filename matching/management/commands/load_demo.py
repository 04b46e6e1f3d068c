"""Load a small, clearly marked demo for local development: a few London service zones.

    HUB_ENV=development python manage.py load_demo

`make run` calls it after migrating, so `match.find` answers something on a fresh checkout.
Idempotent: the zones have fixed ids and one that already exists is left as it is. Refused
unless HUB_ENV=development, so it can never put demo zones into a real deployment.
"""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.audit import record
from matching.actions.zones import prepare_zone_geometry
from matching.models import Zone

DEMO_PREFIX = "Demo: "


def _box(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


# (id, name, categories, geometry): central London and two smaller zones inside it, so a point in
# Camden or Greenwich matches the smaller zone for the categories it serves and central London
# for the others.
DEMO_ZONES: list[tuple[str, str, list[str], dict[str, Any]]] = [
    ("demo-central-london", DEMO_PREFIX + "Central London", ["cleaning", "electrical", "plumbing"],
     _box(-0.25, 51.45, 0.05, 51.56)),
    ("demo-camden", DEMO_PREFIX + "Camden", ["cleaning", "plumbing"], _box(-0.17, 51.53, -0.12, 51.555)),
    ("demo-greenwich", DEMO_PREFIX + "Greenwich", ["cleaning", "electrical"], _box(-0.03, 51.465, 0.02, 51.49)),
]


class Command(BaseCommand):
    help = "Load the development demo zones (HUB_ENV=development only; running it twice adds nothing)."

    def handle(self, *args: Any, **opts: Any) -> None:
        if settings.HUB_ENV != "development":
            raise CommandError(f"load_demo only runs with HUB_ENV=development (this is {settings.HUB_ENV!r}): "
                               "demo zones must never reach a real deployment")
        added = []
        for zone_id, name, categories, geometry in DEMO_ZONES:
            prepare_zone_geometry(geometry)  # the same check as the API: the index must load it
            with transaction.atomic():
                zone, created = Zone.objects.get_or_create(
                    id=zone_id, defaults={"name": name, "categories": sorted(categories), "geometry": geometry,
                                          "created_by": "load_demo"})
                if created:
                    record("load_demo", "zones.create", zone.id, role="admin", via="load_demo", name=name,
                           categories=zone.categories, active=True)
                    added.append(name)
        if added:
            self.stdout.write(f"demo: added {len(added)} zones ({', '.join(added)})")
        else:
            self.stdout.write(f"demo: the {len(DEMO_ZONES)} demo zones are already loaded")
