"""The FCM provider through its real HTTP path (google-auth's token exchange, httpx over TLS + HTTP/2)
against the wire-true fake: each outcome, the bearer token's caching and refresh, expiry, one connection."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from notify.providers import fcm as fcm_provider
from notify.providers.base import Outcome, Push, Result, Target
from notify.providers.fcm import FcmProvider
from tests.fakes import fcm
from tests.notify.providers.conftest import print_throughput, send
from tests.support import free_port

TOKEN = "fcm-token_" + "a1B2c3D4e5" * 15  # the shape of a registration token: letters, digits, - _ :


@pytest.fixture(scope="module")
def server() -> Iterator[fcm.FakeFcmServer]:
    srv = fcm.start()
    try:
        yield srv
    finally:
        srv.stop()



def push(**kw: Any) -> Push:
    values: dict[str, Any] = {"kind": "offer", "title": "New plumbing job near you", "body": "Tap to see it",
                              "data": {"offer": "o-1", "job": "j-1"}, "collapse_key": "offer:o-1",
                              "expires_at": time.time() + 30, "urgent": True}
    values.update(kw)
    return Push(**values)


def target(token: str = TOKEN) -> Target:
    return Target("android", token)



def test_a_message_of_fcms_schema_is_sent(fake: fcm.FakeFcmServer) -> None:
    provider = fake.provider()
    urgent, normal = push(), push(urgent=False, collapse_key="", data={"from": "x", "google.x": "y"}, kind="job")
    results = send(provider, (target(), urgent), (target(), normal))
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT], results
    first, second = fake.accepted()
    assert first["token"] == TOKEN
    assert first["data"] == {"offer": "o-1", "job": "j-1", "kind": "offer"}
    assert first["notification"] == {"title": "New plumbing job near you", "body": "Tap to see it"}
    assert first["android"]["priority"] == "high" and first["android"]["collapse_key"] == "offer:o-1"
    assert 28 <= int(first["android"]["ttl"][:-1]) <= 30 and first["android"]["ttl"].endswith("s")
    # FCM refuses a whole message with a reserved data key; they are renamed instead.
    assert second["android"]["priority"] == "normal" and "collapse_key" not in second["android"]
    assert second["data"] == {"x_from": "x", "x_google.x": "y", "kind": "job"}


def test_the_fake_refuses_what_fcm_refuses(fake: fcm.FakeFcmServer) -> None:
    good = fake.provider().message(target(), push(), time.time())
    bad = [
        {**good, "extra": 1},
        {"message": {**good["message"], "data": {"n": 1}}},
        {"message": {**good["message"], "data": {"from": "x"}}},
        {"message": {**good["message"], "topic": "news"}},
        {"message": {**good["message"], "android": {"priority": "urgent"}}},
        {"message": {**good["message"], "android": {"ttl": 30}}},
        {"message": {**good["message"], "data": {"big": "x" * 5000}}},
    ]
    for body in bad:
        with pytest.raises(fcm.Invalid):
            fcm.validate(body)
    assert fcm.validate(good)["token"] == TOKEN


def test_outcomes_map_from_fcm_answers(fake: fcm.FakeFcmServer) -> None:
    fake.unregister("gone_" + TOKEN)
    fake.inject({"status": 503, "retry_after": 7}, {"status": 429, "retry_after": "Wed, 21 Oct 2065 07:28:00 GMT"},
                {"status": 500})
    results = send(fake.provider(), *[(target(), push())] * 3, (target("gone_" + TOKEN), push()),
                   (target("not a token!"), push()), (target(), push(data={"big": "x" * 5000})))
    unavailable, quota, internal, gone, malformed, too_big = results
    assert (unavailable.outcome, unavailable.status, unavailable.retry_after_s) == (Outcome.RETRY, 503, 7.0)
    assert quota.outcome == Outcome.RETRY and quota.status == 429 and (quota.retry_after_s or 0) > 10**8
    assert (internal.outcome, internal.status) == (Outcome.RETRY, 500)
    assert (gone.outcome, gone.status, gone.reason) == (Outcome.UNREGISTERED, 404, "UNREGISTERED")
    assert (malformed.outcome, malformed.status) == (Outcome.UNREGISTERED, 400)
    assert malformed.reason == "INVALID_ARGUMENT: message.token"
    assert (too_big.outcome, too_big.status, too_big.reason) == (Outcome.FAILED, 400, "INVALID_ARGUMENT")
    assert fake.stats().get("accepted", 0) == 0


def test_a_404_without_unregistered_keeps_the_device(fake: fcm.FakeFcmServer) -> None:
    # A wrong base URL answers 404 NOT_FOUND too; only FCM's UNREGISTERED code removes a device.
    provider = FcmProvider(fake.service_account, base_url=fake.url + "/nowhere", token_url=fake.fake.token_url,
                           ca_file=str(fake.ca_file))
    [result] = send(provider, (target(), push()))
    assert (result.outcome, result.status, result.reason) == (Outcome.FAILED, 404, "NOT_FOUND")


def test_wrong_project_and_timeouts_and_a_dead_service(fake: fcm.FakeFcmServer) -> None:
    [other] = send(fake.provider(project_id="someone-else"), (target(), push()))
    assert (other.outcome, other.status, other.reason) == (Outcome.FAILED, 403, "PERMISSION_DENIED")
    fake.inject({"timeout": 1.5})
    [slow] = send(fake.provider(timeout_s=0.4), (target(), push()))
    assert (slow.outcome, slow.reason) == (Outcome.RETRY, "timeout")
    dead = FcmProvider(fake.service_account, base_url=f"https://127.0.0.1:{free_port()}",
                       token_url=fake.fake.token_url, ca_file=str(fake.ca_file))
    [refused] = send(dead, (target(), push()))
    assert refused.outcome == Outcome.RETRY and refused.reason.startswith("connection:")


def test_an_expired_push_is_never_sent(fake: fcm.FakeFcmServer) -> None:
    [result] = send(fake.provider(), (target(), push(expires_at=time.time() - 1)))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "expired")
    assert fake.stats().get("send_requests", 0) == 0 and fake.stats().get("token_requests", 0) == 0


def test_one_token_many_sends_one_connection(fake: fcm.FakeFcmServer) -> None:
    provider = fake.provider()

    async def run() -> list[Result]:
        try:
            first = [await provider.send(target(), push()) for _ in range(10)]
            return first + list(await asyncio.gather(*[provider.send(target(), push()) for _ in range(40)]))
        finally:
            await provider.aclose()
    assert {r.outcome for r in asyncio.run(run())} == {Outcome.SENT}
    stats = fake.stats()
    assert stats["token_requests"] == 1 and stats["bearers"] == 1
    assert stats["connections"] == 1 and stats["http/2"] == 50


def test_the_token_is_refreshed_before_it_expires(fake: fcm.FakeFcmServer) -> None:
    offset = [0.0]
    provider = fake.provider(clock=lambda: time.time() + offset[0])

    async def run() -> None:
        try:
            assert (await provider.send(target(), push(expires_at=time.time() + 7200))).outcome == Outcome.SENT
            offset[0] = 3599 - 120  # two minutes left: the send goes at once, a new token comes behind it
            assert (await provider.send(target(), push(expires_at=time.time() + 7200))).outcome == Outcome.SENT
            assert provider._refresh_task is not None
            await provider._refresh_task
            offset[0] = 0
            assert (await provider.send(target(), push(expires_at=time.time() + 7200))).outcome == Outcome.SENT
            offset[0] = 3599 - 10  # about to expire: wait for the new token
            assert (await provider.send(target(), push(expires_at=time.time() + 7200))).outcome == Outcome.SENT
        finally:
            await provider.aclose()
    asyncio.run(run())
    stats = fake.stats()
    assert stats["tokens_issued"] == 3 and stats["bearers"] == 3 and stats["accepted"] == 4


def test_a_revoked_token_is_replaced_once(fake: fcm.FakeFcmServer) -> None:
    provider = fake.provider()

    async def run() -> list[Result]:
        try:
            results = [await provider.send(target(), push())]
            fake.revoke_tokens()
            results.append(await provider.send(target(), push()))  # 401, a new token, sent
            fake.inject({"status": 401}, {"status": 401})
            results.append(await provider.send(target(), push()))  # 401 twice: given up
            return results
        finally:
            await provider.aclose()
    first, after_revoke, refused = asyncio.run(run())
    assert first.outcome == after_revoke.outcome == Outcome.SENT
    assert (refused.outcome, refused.status, refused.reason) == (Outcome.FAILED, 401, "UNAUTHENTICATED")
    stats = fake.stats()
    assert stats["tokens_issued"] == 3 and stats["send_requests"] == 5


def test_token_endpoint_refusals_and_outages(fake: fcm.FakeFcmServer, caplog: pytest.LogCaptureFixture) -> None:
    stranger, _ = fcm.make_service_account(fake.project_id, fake.fake.token_url)  # a key the fake never saw
    caplog.set_level(logging.DEBUG)
    provider = FcmProvider(stranger, base_url=fake.url, token_url=fake.fake.token_url, ca_file=str(fake.ca_file))
    first, again = send(provider, (target(), push()), (target(), push()))
    assert first.outcome == again.outcome == Outcome.FAILED and first.reason.startswith("oauth2: invalid_grant")
    assert fake.stats()["token_requests"] == 1  # the refusal is remembered for a while, not asked per send
    logged = "\n".join(r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert stranger["private_key"][40:80] not in logged and "BEGIN PRIVATE KEY" not in logged
    assert stranger["private_key"][40:80] not in repr(provider)

    fake.reset()
    fake.inject_token({"status": 503})  # google-auth tries the token endpoint again after a second
    [sent] = send(fake.provider(), (target(), push()))
    assert sent.outcome == Outcome.SENT and fake.stats()["token_requests"] == 2

    unreachable = FcmProvider(fake.service_account, base_url=fake.url,
                              token_url=f"https://127.0.0.1:{free_port()}/token", ca_file=str(fake.ca_file))
    [down] = send(unreachable, (target(), push()))
    assert down.outcome == Outcome.RETRY and down.reason.startswith("oauth2 transport")


def test_an_unexpected_fault_is_an_answer_not_an_exception(fake: fcm.FakeFcmServer) -> None:
    provider = fake.provider()

    async def broken(*_: Any) -> Any:
        raise ValueError("a bug")
    provider._http.post = broken  # type: ignore[method-assign]
    [result] = send(provider, (target(), push()))
    assert (result.outcome, result.reason) == (Outcome.RETRY, "internal: ValueError")

    # A fault in the token refresh: remembered for a while like a refusal, not tried again by each send.
    refresh = fake.provider()
    calls = []

    def broken_refresh() -> Any:
        calls.append(1)
        raise ValueError("a bug")
    refresh._refresh_blocking = broken_refresh  # type: ignore[method-assign]
    first, second = send(refresh, (target(), push()), (target(), push()))
    assert first == second and (first.outcome, first.reason) == (Outcome.RETRY, "oauth2 internal: ValueError")
    assert len(calls) == 1


def test_from_settings(fake: fcm.FakeFcmServer, tmp_path: Path) -> None:
    with override_settings(NOTIFY_FCM_CREDENTIALS_FILE=""):
        assert fcm_provider.from_settings() is None
    env = fake.env()
    with override_settings(**env, NOTIFY_FCM_PROJECT_ID=""):
        provider = fcm_provider.from_settings()
        assert isinstance(provider, FcmProvider) and provider.platform == "android"
        [result] = send(provider, (target(), push()))
        assert result.outcome == Outcome.SENT
    # The key itself in the environment (a secret store) instead of a file.
    with override_settings(**{**env, "NOTIFY_FCM_CREDENTIALS_FILE": "",
                              "NOTIFY_FCM_SERVICE_ACCOUNT_KEY": json.dumps(fake.service_account)}):
        provider = fcm_provider.from_settings()
        assert isinstance(provider, FcmProvider)
        assert send(provider, (target(), push()))[0].outcome == Outcome.SENT
    with override_settings(NOTIFY_FCM_SERVICE_ACCOUNT_KEY='{"private_key": "secretstuff"'):
        with pytest.raises(ImproperlyConfigured, match="NOTIFY_FCM_SERVICE_ACCOUNT_KEY") as err:
            fcm_provider.from_settings()
        assert "secretstuff" not in str(err.value)
    broken = tmp_path / "key.json"
    broken.write_text(json.dumps({**fake.service_account, "private_key": "-----BEGIN PRIVATE KEY-----\nsecretstuff"}))
    with override_settings(**{**env, "NOTIFY_FCM_CREDENTIALS_FILE": str(broken)}):
        with pytest.raises(ImproperlyConfigured) as err:
            fcm_provider.from_settings()
        assert "secretstuff" not in str(err.value)


def test_throughput_to_the_fake() -> None:
    print_throughput("FCM", fcm, target, push)
