"""manage.py load_demo: development only, idempotent, zones that the matcher serves."""
from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from core.models import AuditLog
from matching.management.commands.load_demo import DEMO_ZONES
from matching.matcher import Matcher
from matching.models import Zone

DEMO_IDS = [zone_id for zone_id, *_ in DEMO_ZONES]


def run() -> str:
    out = io.StringIO()
    call_command("load_demo", stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("env", ["test", "production"])
def test_refused_outside_development(env: str) -> None:
    Zone.objects.filter(id__in=DEMO_IDS).delete()
    with override_settings(HUB_ENV=env), pytest.raises(CommandError, match="HUB_ENV=development"):
        run()
    assert not Zone.objects.filter(id__in=DEMO_IDS).exists()


def test_loads_marked_zones_once_and_they_match() -> None:
    Zone.objects.filter(id__in=DEMO_IDS).delete()
    try:
        with override_settings(HUB_ENV="development"):
            assert "added 3 zones" in run()
            rows = {z.id: z for z in Zone.objects.filter(id__in=DEMO_IDS)}
            assert set(rows) == set(DEMO_IDS)
            assert all(z.name.startswith("Demo: ") and z.active for z in rows.values())
            assert {c for z in rows.values() for c in z.categories} == {"plumbing", "electrical", "cleaning"}
            assert AuditLog.objects.filter(action="zones.create", target__in=DEMO_IDS).count() == 3
            # Twice: nothing added, nothing changed (an edited demo zone is left as it is).
            Zone.objects.filter(id="demo-camden").update(name="Demo: Camden (edited)")
            assert "already loaded" in run()
            assert Zone.objects.filter(id__in=DEMO_IDS).count() == 3
            assert Zone.objects.get(id="demo-camden").name == "Demo: Camden (edited)"
            assert AuditLog.objects.filter(action="zones.create", target__in=DEMO_IDS).count() == 3
        # A process loading zones serves them: Camden (smaller) for plumbing, central London for
        # electrical there, nothing outside London.
        m = Matcher(use_redis=False)
        m.load_zones()
        assert not m.bad_zones
        assert m.lookup_zone(51.54, -0.145, "plumbing") == "demo-camden"
        assert m.lookup_zone(51.54, -0.145, "electrical") == "demo-central-london"
        assert m.lookup_zone(51.48, 0.0, "electrical") == "demo-greenwich"
        assert m.lookup_zone(53.48, -2.24, "plumbing") is None
    finally:
        Zone.objects.filter(id__in=DEMO_IDS).delete()
