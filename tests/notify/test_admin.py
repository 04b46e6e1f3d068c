"""notify.admin: changes go through notify.actions (preferences checked as the rpc checks them, a
device removed as its owner would unregister it); outbox rows and dead letters are read-only."""
from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from notify import actions
from notify.models import Device, Preferences
from tests.fakes.webpush import FakeWebPush
from tests.notify.conftest import emit, offer, rows, web_device
from tests.support import uid


@pytest.fixture()
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(uid("ops"), "ops@example.com", "pw"))
    return client


def _prefs(tenant: str, user: str, **over: Any) -> dict[str, Any]:
    return {"tenant": tenant, "user": user, "kinds": json.dumps({"job": False}), "quiet_start": "22:00",
            "quiet_end": "07:00", "timezone": "Europe/London", "quiet_override": "true", **over}


def test_preferences_are_checked_and_saved_by_the_action(staff: Client) -> None:
    t, u = uid("t"), uid("u")
    for bad in ({"timezone": "Mars/Olympus"}, {"quiet_end": ""}, {"kinds": json.dumps({"spam": True})}):
        page = staff.post("/admin/notify/preferences/add/", _prefs(t, u, **bad))
        assert page.status_code == 200 and not Preferences.objects.filter(tenant=t, user=u).exists()
    assert staff.post("/admin/notify/preferences/add/", _prefs(t, u)).status_code == 302
    got = actions.get_preferences(t, u)
    assert got["kinds"]["job"] is False and (got["quiet_start"], got["timezone"], got["quiet_override"]) \
        == ("22:00", "Europe/London", True)
    row = Preferences.objects.get(tenant=t, user=u)
    change = f"/admin/notify/preferences/{row.pk}/change/"
    assert staff.post(change, _prefs(t, u, quiet_start="", quiet_end="", quiet_override="unknown")).status_code == 302
    got = actions.get_preferences(t, u)
    assert got["quiet_start"] is None and got["quiet_override"] is False  # the tenant's default again
    assert staff.post(f"/admin/notify/preferences/{row.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Preferences.objects.filter(tenant=t, user=u).exists()


def test_devices_are_removed_through_unregister_and_records_are_read_only(
        staff: Client, fake: FakeWebPush, monkeypatch: pytest.MonkeyPatch) -> None:
    t, u = uid("t"), uid("u")
    _s, dev = web_device(fake, t, u)
    emit(t, u, offer("b1"))
    (row,) = rows(u)
    assert staff.get("/admin/notify/device/add/").status_code == 403
    assert staff.post(f"/admin/notify/device/{dev}/change/", {"background": "on"}).status_code == 403
    assert staff.post(f"/admin/notify/outbox/{row.id}/change/", {"state": "sent"}).status_code == 403
    assert staff.post(f"/admin/notify/outbox/{row.id}/delete/", {"post": "yes"}).status_code == 403
    assert staff.get(f"/admin/notify/outbox/{row.id}/change/").status_code == 200  # a view page
    calls: list[tuple[str, str, str]] = []
    real = actions.unregister
    monkeypatch.setattr(actions, "unregister", lambda *a: calls.append(a) or real(*a))
    assert staff.post(f"/admin/notify/device/{dev}/delete/", {"post": "yes"}).status_code == 302
    assert calls == [(t, u, dev)] and not Device.objects.filter(id=dev).exists()
