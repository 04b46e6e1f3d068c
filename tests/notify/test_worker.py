"""notify.worker against the Web Push fake: sends, sockets in the foreground, retries with
Retry-After, dead letters, unregistered devices, expiry, one span per attempt."""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import override_settings
from py_vapid import Vapid02

from notify import actions
from notify.models import DeadLetter, Device, Outbox
from notify.providers.webpush import WebPushProvider
from notify.worker import Worker
from tests.fakes.webpush import FakeWebPush
from tests.notify.conftest import emit, offer, rows, web_device
from tests.support import uid


def make_worker(fake: FakeWebPush, foreground: set[str] | None = None, timeout_s: float = 5) -> Worker:
    key = Vapid02()
    key.generate_keys()
    present = foreground or set()

    async def fg(users: list[str]) -> set[str]:
        return present & set(users)

    return Worker({"web": WebPushProvider(key, "mailto:ops@example.com", timeout_s)}, foreground=fg)


def deliver(worker: Worker, user: str) -> None:
    ids = [r.id for r in rows(user) if r.state == "pending"]

    async def go() -> None:
        await worker.round(ids)
        await worker.drain()

    asyncio.run(go())


def due_now(user: str) -> None:
    Outbox.objects.filter(user=user, state="pending").update(next_at=datetime.now(UTC))


def test_worker_sends_and_skips_users_on_a_foreground_socket(fake: FakeWebPush) -> None:
    t, u, v = uid("t"), uid("u"), uid("v")
    su, _ = web_device(fake, t, u)
    sv, _ = web_device(fake, t, v)
    emit(t, u, offer("b1"))
    emit(t, v, offer("b1"))
    deliver(make_worker(fake, foreground={f"{t}/{v}"}), u)
    deliver(make_worker(fake, foreground={f"{t}/{v}"}), v)
    assert [m.message["data"]["booking"] for m in fake.wait(su)] == ["b1"]
    assert [r.state for r in rows(u)] == ["sent"]
    assert [r.state for r in rows(v)] == ["socket"] and fake.messages(sv) == []


def test_retry_after_backoff_and_dead_letter(fake: FakeWebPush) -> None:
    t, u = uid("t"), uid("u")
    sub, dev = web_device(fake, t, u)
    fake.fail(sub, 429, retry_after=40)
    emit(t, u, offer("b1", ttl_s=600))
    t0 = time.time()
    deliver(make_worker(fake), u)
    (r,) = rows(u)
    assert r.state == "pending" and r.attempts == 1 and "429" in r.last_error
    assert r.next_at.timestamp() >= t0 + 40  # the service's Retry-After, not our 1 s backoff
    # 5xx until the attempts run out: a dead letter with the reason.
    with override_settings(NOTIFY_MAX_ATTEMPTS=3):
        for _ in range(2):
            fake.fail(sub, 503)
            due_now(u)
            deliver(make_worker(fake), u)
    (r,) = rows(u)
    assert r.state == "dead" and r.attempts == 3
    (dead,) = DeadLetter.objects.filter(user=u)
    assert "gave up after 3 attempts" in dead.reason and "503" in dead.reason and dead.device_id == dev
    assert fake.messages(sub) == []


def test_timeouts_retry_then_deliver_once(fake: FakeWebPush) -> None:
    t, u = uid("t"), uid("u")
    sub, _ = web_device(fake, t, u)
    fake.fail(sub, "timeout")
    emit(t, u, offer("b1", ttl_s=600))
    deliver(make_worker(fake, timeout_s=0.3), u)
    assert rows(u)[0].state == "pending" and fake.messages(sub) == []
    due_now(u)
    deliver(make_worker(fake), u)
    assert rows(u)[0].state == "sent" and len(fake.wait(sub)) == 1


def test_unregistered_subscription_removes_the_device(fake: FakeWebPush) -> None:
    t, u = uid("t"), uid("u")
    sub, dev = web_device(fake, t, u)
    fake.fail(sub, 410)
    emit(t, u, offer("b1"))
    deliver(make_worker(fake), u)
    assert not Device.objects.filter(id=dev).exists() and rows(u) == []
    assert "unregistered" in DeadLetter.objects.get(user=u).reason


def test_a_push_past_its_expiry_is_never_sent(fake: FakeWebPush) -> None:
    t, u = uid("t"), uid("u")
    sub, _ = web_device(fake, t, u)
    emit(t, u, offer("b1", ttl_s=600))
    Outbox.objects.filter(user=u).update(expires_at=datetime.fromtimestamp(time.time() - 1, tz=UTC))
    before = fake.requests
    deliver(make_worker(fake), u)
    assert rows(u)[0].state == "expired" and fake.requests == before


def test_a_platform_without_a_provider_is_dead_lettered() -> None:
    t, u = uid("t"), uid("u")
    actions.register(t, u, "ios", token="ab" * 32)
    emit(t, u, offer("b1"))
    deliver(Worker({}, foreground=_no_one), u)
    assert rows(u)[0].state == "dead"
    assert DeadLetter.objects.get(user=u).reason == "no provider configured for ios"


async def _no_one(users: list[str]) -> set[str]:
    return set()


def test_each_attempt_is_a_span_when_tracing_is_on(fake: FakeWebPush, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace as api

    from core import tracing

    class Recorded(api.NonRecordingSpan):
        def __init__(self, name: str, attributes: dict[str, Any] | None) -> None:
            super().__init__(api.INVALID_SPAN_CONTEXT)
            self.name, self.attributes, self.status = name, dict(attributes or {}), None

        def set_attribute(self, key: str, value: Any) -> None:
            self.attributes[key] = value

        def set_status(self, status: Any, description: str | None = None) -> None:
            self.status = status

    class Tracer:
        def __init__(self) -> None:
            self.spans: list[Recorded] = []

        def start_span(self, name: str, context: Any = None, **kw: Any) -> Recorded:
            self.spans.append(Recorded(name, kw.get("attributes")))
            return self.spans[-1]

    # A recording tracer of this test's own (the SDK stays unloaded: tests/core/test_tracing checks it).
    tracer = Tracer()
    monkeypatch.setattr(tracing, "ENABLED", True)
    monkeypatch.setattr(tracing, "_tracer", tracer)
    t, u = uid("t"), uid("u")
    sub, _ = web_device(fake, t, u)
    fake.fail(sub, 503)
    emit(t, u, offer("b1"))
    deliver(make_worker(fake), u)
    due_now(u)
    deliver(make_worker(fake), u)
    spans = [s for s in tracer.spans if s.name == "notify.push"]
    assert [s.attributes.get("push.outcome") for s in spans] == ["retry", "sent"]
    assert spans[0].status is not None and spans[1].status is None  # the retry is a failed span
    attrs = spans[1].attributes
    assert (attrs["push.platform"], attrs["push.kind"], attrs["push.attempt"], attrs["http.response.status_code"]) \
        == ("web", "offer", 2, 201)
    assert u not in str([s.attributes for s in spans])  # no user ids in spans
