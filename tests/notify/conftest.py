"""Shared by the notify tests: the Web Push fake, a device on it, events to a user, their outbox rows."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from hub import store
from notify import actions
from notify.models import Outbox
from tests.fakes.webpush import FakeWebPush


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeWebPush]:
    f = FakeWebPush(hang_s=2).start()
    yield f
    f.stop()


def web_device(fake: FakeWebPush, tenant: str, user: str) -> tuple[str, str]:
    sub_id, sub = fake.subscription()
    return sub_id, actions.register(tenant, user, "web", subscription=sub)["device"]


def offer(booking: str, ttl_s: float = 30, category: str = "plumbing") -> dict[str, Any]:
    exp = int((time.time() + ttl_s) * 1000)
    return {"kind": "offer", "booking": booking, "category": category, "lat": 51.5, "lng": -0.12,
            "area": {"cell": "x", "radius_m": 500}, "distance_m": 1200, "expires_at_ms": exp, "mode": "on_demand"}


def emit(tenant: str | None, user: str, data: dict[str, Any]) -> None:
    with store.tenant_scope(tenant), store.atomic():
        store.append(f"user:{user}", data)


def rows(user: str) -> list[Outbox]:
    return list(Outbox.objects.filter(user=user).order_by("id"))
