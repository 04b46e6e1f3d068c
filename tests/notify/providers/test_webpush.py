"""The Web Push provider against the wire-true fake: encryption, VAPID, TTL/Topic/Urgency, faults."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from py_vapid import Vapid02

from notify.providers import webpush
from notify.providers.base import Outcome, Push, Target
from tests.fakes.webpush import FakeWebPush


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWebPush]:
    f = FakeWebPush(hang_s=3).start()
    yield f
    f.stop()


def provider(timeout_s: float = 5) -> webpush.WebPushProvider:
    key = Vapid02()
    key.generate_keys()
    return webpush.WebPushProvider(key, "mailto:ops@example.com", timeout_s)


def push(ttl: float = 30, urgent: bool = True) -> Push:
    return Push("offer", "New plumbing job near you", "Tap to see the offer", {"booking": "b1"},
                "offer:b1", time.time() + ttl, urgent)


def send(p: webpush.WebPushProvider, target: Target, what: Push) -> webpush.Result:
    async def go() -> webpush.Result:
        try:
            return await p.send(target, what)
        finally:
            await p.aclose()

    return asyncio.run(go())


def target(sub: dict) -> Target:  # type: ignore[type-arg]
    return Target("web", sub["endpoint"], sub["keys"])


def test_sent_push_decrypts_with_the_subscription_keys_and_carries_vapid(fake: FakeWebPush) -> None:
    sub_id, sub = fake.subscription()
    result = send(provider(), target(sub), push())
    assert result.outcome == Outcome.SENT and result.status == 201
    got = fake.wait(sub_id)[0]
    assert got.message["title"] == "New plumbing job near you"
    assert got.message["data"] == {"booking": "b1"}
    assert got.headers["urgency"] == "high"
    assert 0 < int(got.headers["ttl"]) <= 30
    assert len(got.headers["topic"]) <= 32


def test_a_push_signed_for_another_audience_is_refused(fake: FakeWebPush) -> None:
    sub_id, sub = fake.subscription()
    p = provider()
    # A token cached for the wrong origin: the service checks `aud` and refuses it.
    p.jwts[fake.base] = (p.vapid.sign({"sub": "mailto:a@example.com", "aud": "https://elsewhere.example",
                                       "exp": int(time.time()) + 3600})["Authorization"], time.time() + 3600)
    result = send(p, target(sub), push())
    assert result.outcome == Outcome.FAILED and result.status == 403
    assert fake.messages(sub_id) == []


def test_wrong_keys_cannot_be_decrypted(fake: FakeWebPush) -> None:
    sub_id, sub = fake.subscription()
    _other, other = fake.subscription()
    result = send(provider(), Target("web", sub["endpoint"], other["keys"]), push())
    assert result.outcome == Outcome.FAILED and result.status == 400
    assert fake.messages(sub_id) == []


def test_faults_map_to_outcomes(fake: FakeWebPush) -> None:
    sub_id, sub = fake.subscription()
    fake.fail(sub_id, 503)
    fake.fail(sub_id, 429, retry_after=7)
    fake.fail(sub_id, "timeout")
    fake.fail(sub_id, 410)
    p = provider(timeout_s=0.5)
    r = send(p, target(sub), push())
    assert (r.outcome, r.status) == (Outcome.RETRY, 503)
    r = send(p, target(sub), push())
    assert (r.outcome, r.status, r.retry_after_s) == (Outcome.RETRY, 429, 7.0)
    r = send(p, target(sub), push())
    assert (r.outcome, r.reason) == (Outcome.RETRY, "timeout")
    r = send(p, target(sub), push())
    assert r.outcome == Outcome.UNREGISTERED
    assert send(p, target(sub), push()).outcome == Outcome.UNREGISTERED  # gone stays gone


def test_an_expired_push_is_never_sent(fake: FakeWebPush) -> None:
    sub_id, sub = fake.subscription()
    before = fake.requests
    r = send(provider(), target(sub), push(ttl=-1))
    assert r.outcome == Outcome.FAILED and fake.requests == before
