"""The APNs provider through its real HTTP/2 path (httpx over TLS, ALPN h2) against the wire-true fake:
each outcome, the provider token's reuse and renewal, expiry, headers and payload limits, one connection."""
from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from notify.providers import apns as apns_provider
from notify.providers.apns import ApnsProvider
from notify.providers.base import Outcome, Push, Result, Target
from tests.fakes import apns
from tests.notify.providers.conftest import print_throughput, send
from tests.support import free_port

TOKEN = apns.device_token()


@pytest.fixture(scope="module")
def server() -> Iterator[apns.FakeApnsServer]:
    srv = apns.start()
    try:
        yield srv
    finally:
        srv.stop()



def push(**kw: Any) -> Push:
    values: dict[str, Any] = {"kind": "call", "title": "Call from Sam", "body": "Tap to answer",
                              "data": {"call": "c-1", "room": "r-1"}, "collapse_key": "call:c-1",
                              "expires_at": time.time() + 30, "urgent": True}
    values.update(kw)
    return Push(**values)


def target(token: str = TOKEN, app: str = "") -> Target:
    return Target("ios", token, app=app)



def test_a_push_with_apns_headers_and_payload_is_sent(fake: apns.FakeApnsServer) -> None:
    expires = time.time() + 30
    long_key = "missed-call:" + "c" * 80
    results = send(fake.provider(), (target(), push(expires_at=expires)),
                   (target(), push(urgent=False, collapse_key=long_key, data={"aps": "no", "job": "j-1"}, kind="job")))
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT], results
    first, second = fake.accepted()
    assert first["token"] == TOKEN and first["topic"] == fake.topic and first["push_type"] == "alert"
    assert first["priority"] == 10 and first["expiration"] == int(expires) and first["collapse_id"] == "call:c-1"
    assert first["payload"] == {"call": "c-1", "room": "r-1", "kind": "call",
                                "aps": {"alert": {"title": "Call from Sam", "body": "Tap to answer"}}}
    # A collapse key over APNs' 64 bytes becomes a stable digest (the fake refuses a longer id).
    assert second["priority"] == 5 and second["collapse_id"] == apns_provider.collapse_id(long_key)
    assert len(second["collapse_id"]) == 64
    assert second["payload"]["aps"] == {"alert": {"title": "Call from Sam", "body": "Tap to answer"}}
    assert second["payload"]["job"] == "j-1"


def test_outcomes_map_from_apns_answers(fake: apns.FakeApnsServer) -> None:
    gone = apns.device_token()
    fake.unregister(gone)
    fake.inject({"status": 500, "reason": "InternalServerError"}, {"status": 503, "reason": "ServiceUnavailable"},
                {"status": 429, "reason": "TooManyRequests"}, {"status": 400, "reason": "BadTopic"})
    results = send(fake.provider(), *[(target(), push())] * 4, (target(gone), push()),
                   (target("ab" * 16), push()), (target(app="com.someone.else"), push()))
    internal, unavailable, busy, bad_topic, unregistered, bad_token, disallowed = results
    assert (internal.outcome, internal.status, internal.reason) == (Outcome.RETRY, 500, "InternalServerError")
    assert (unavailable.outcome, unavailable.status) == (Outcome.RETRY, 503)
    assert (busy.outcome, busy.status, busy.reason) == (Outcome.RETRY, 429, "TooManyRequests")
    assert (bad_topic.outcome, bad_topic.reason) == (Outcome.FAILED, "BadTopic")
    assert (unregistered.outcome, unregistered.status, unregistered.reason) == (Outcome.UNREGISTERED, 410,
                                                                                 "Unregistered")
    assert (bad_token.outcome, bad_token.status, bad_token.reason) == (Outcome.UNREGISTERED, 400, "BadDeviceToken")
    assert (disallowed.outcome, disallowed.status, disallowed.reason) == (Outcome.FAILED, 400, "TopicDisallowed")
    assert fake.stats().get("accepted", 0) == 0


def test_refused_before_sending(fake: apns.FakeApnsServer) -> None:
    # Not hex: it would go into the request path. Over 4 KB: APNs refuses it. Expired: never sent.
    # A device's app that is not a bundle id: it would go into a header.
    results = send(fake.provider(), (target("../../3/device/" + TOKEN), push()),
                   (target(), push(body="x" * 5000)), (target(), push(expires_at=time.time() - 1)),
                   (target(app="com.example.hub\r\napns-priority: 10"), push()))
    assert [(r.outcome, r.reason.split(":")[0].split(" (")[0]) for r in results] == [
        (Outcome.UNREGISTERED, "BadDeviceToken"), (Outcome.FAILED, "PayloadTooLarge"), (Outcome.FAILED, "expired"),
        (Outcome.FAILED, "no usable apns-topic")]
    assert fake.stats().get("requests", 0) == 0


def test_timeouts_and_a_dead_service(fake: apns.FakeApnsServer) -> None:
    fake.inject({"timeout": 1.5})
    [slow] = send(fake.provider(timeout_s=0.4), (target(), push()))
    assert (slow.outcome, slow.reason) == (Outcome.RETRY, "timeout")
    dead = ApnsProvider(fake.signing_key, fake.key_id, fake.team_id, fake.topic,
                        base_url=f"https://127.0.0.1:{free_port()}", ca_file=str(fake.ca_file))
    [refused] = send(dead, (target(), push()))
    assert refused.outcome == Outcome.RETRY and refused.reason.startswith("connection:")


def test_an_unexpected_fault_is_an_answer_not_an_exception(fake: apns.FakeApnsServer) -> None:
    provider = fake.provider()

    async def broken(*_: Any) -> Any:
        raise ValueError("a bug")
    provider._http.post = broken  # type: ignore[method-assign]
    [result] = send(provider, (target(), push()))
    assert (result.outcome, result.reason) == (Outcome.RETRY, "internal: ValueError")


def test_provider_token_refused_by_apns(fake: apns.FakeApnsServer) -> None:
    other_key, _, _ = apns.make_signing_key()  # same key id, a key APNs does not know
    [wrong] = send(ApnsProvider(other_key, fake.key_id, fake.team_id, fake.topic, base_url=fake.url,
                                ca_file=str(fake.ca_file)), (target(), push()))
    assert (wrong.outcome, wrong.status, wrong.reason) == (Outcome.FAILED, 403, "InvalidProviderToken")
    [team] = send(ApnsProvider(fake.signing_key, fake.key_id, "OTHERTEAM1", fake.topic, base_url=fake.url,
                               ca_file=str(fake.ca_file)), (target(), push()))
    assert (team.outcome, team.reason) == (Outcome.FAILED, "InvalidProviderToken")


def test_one_provider_token_is_reused_and_renewed(fake: apns.FakeApnsServer) -> None:
    offset = [0.0]
    provider = fake.provider(clock=lambda: time.time() + offset[0])

    async def run() -> list[Result]:
        try:
            results = [await provider.send(target(), push(expires_at=time.time() + 7200)) for _ in range(5)]
            assert fake.stats()["provider_tokens"] == 1
            offset[0] = 49 * 60  # still within 50 minutes: the same token
            fake.configure(clock_offset_s=offset[0])
            results.append(await provider.send(target(), push(expires_at=time.time() + 7200)))
            assert fake.stats()["provider_tokens"] == 1
            offset[0] = 51 * 60  # past 50 minutes: a new one
            fake.configure(clock_offset_s=offset[0])
            results.append(await provider.send(target(), push(expires_at=time.time() + 7200)))
            assert fake.stats()["provider_tokens"] == 2
            return results
        finally:
            await provider.aclose()
    assert {r.outcome for r in asyncio.run(run())} == {Outcome.SENT}


def test_an_expired_provider_token_is_replaced(fake: apns.FakeApnsServer) -> None:
    provider = fake.provider()

    async def run() -> list[Result]:
        try:
            first = await provider.send(target(), push())
            fake.inject({"status": 403, "reason": "ExpiredProviderToken"})
            expired = await provider.send(target(), push())
            return [first, expired, await provider.send(target(), push())]
        finally:
            await provider.aclose()
    first, expired, again = asyncio.run(run())
    assert (expired.outcome, expired.status, expired.reason) == (Outcome.RETRY, 403, "ExpiredProviderToken")
    assert expired.retry_after_s == 0.0
    assert first.outcome == again.outcome == Outcome.SENT
    assert fake.stats()["provider_tokens"] == 2  # the retry went with a new token

    # An hour-old token (this host's clock behind APNs') is refused the same way, by the fake's own check.
    fake.configure(clock_offset_s=3700)
    [old] = send(fake.provider(), (target(), push(expires_at=time.time() + 7200)))
    assert (old.outcome, old.reason) == (Outcome.RETRY, "ExpiredProviderToken")


def test_many_sends_one_http2_connection(fake: apns.FakeApnsServer) -> None:
    provider = fake.provider()

    async def run() -> set[Outcome]:
        try:
            results = [await provider.send(target(), push()) for _ in range(10)]
            results += await asyncio.gather(*[provider.send(target(), push()) for _ in range(40)])
            return {r.outcome for r in results}
        finally:
            await provider.aclose()
    assert asyncio.run(run()) == {Outcome.SENT}
    stats = fake.stats()
    assert stats["connections"] == 1 and stats["http/2"] == 50 and stats["provider_tokens"] == 1


def test_a_connection_the_service_closed_is_replaced(fake: apns.FakeApnsServer) -> None:
    """APNs and Google close idle connections: the next push goes over a new one instead of failing."""
    async def run() -> list[Result]:
        conns: list[asyncio.StreamWriter] = []

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", fake.port)
            conns.extend([writer, up_writer])
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        provider = apns.provider_for({**fake.env(), "NOTIFY_APNS_BASE_URL": f"https://127.0.0.1:{port}"})
        try:
            results = [await provider.send(target(), push())]
            for conn in conns:  # the "service" closes the idle connection
                conn.close()
            await asyncio.gather(*(conn.wait_closed() for conn in conns), return_exceptions=True)
            await asyncio.sleep(0.05)  # one more turn of this loop: the provider's side reads the end
            results += [await provider.send(target(), push()) for _ in range(2)]
            return results
        finally:
            await provider.aclose()
            proxy.close()
            for conn in conns:
                conn.close()
            await asyncio.sleep(0.1)  # the relays see their ends and finish
    results = asyncio.run(run())
    assert [r.outcome for r in results] == [Outcome.SENT] * 3, results
    assert fake.stats()["connections"] == 2


def test_the_fake_speaks_only_http2_and_checks_headers(fake: apns.FakeApnsServer) -> None:
    provider = fake.provider()
    payload = provider.payload(push())

    async def run() -> list[int | str]:
        good = {"authorization": f"bearer {provider.provider_token()}", "apns-topic": fake.topic,
                "apns-push-type": "alert", "apns-priority": "10", "apns-expiration": str(int(time.time() + 60))}
        verify = ssl.create_default_context(cafile=str(fake.ca_file))
        out: list[int | str] = []
        async with httpx.AsyncClient(http2=False, verify=verify) as h1:
            try:
                out.append((await h1.post(f"{fake.url}/3/device/{TOKEN}", content=payload, headers=good)).status_code)
            except httpx.HTTPError as exc:
                out.append(type(exc).__name__)
        async with httpx.AsyncClient(http1=False, http2=True, verify=verify) as h2:
            for change in ({"apns-priority": "7"}, {"apns-collapse-id": "c" * 65}, {"apns-expiration": "soon"},
                           {"apns-topic": ""}, {"authorization": ""}, {"apns-push-type": "shout"}):
                headers = {k: v for k, v in {**good, **change}.items() if v}
                resp = await h2.post(f"{fake.url}/3/device/{TOKEN}", content=payload, headers=headers)
                out.append(resp.json()["reason"])
            resp = await h2.post(f"{fake.url}/3/device/{TOKEN}", content=b"{" + b" " * 4096 + b"}", headers=good)
            out.append(resp.json()["reason"])
        return out
    http1, *reasons = asyncio.run(run())
    assert http1 != 200
    assert reasons == ["BadPriority", "BadCollapseId", "BadExpirationDate", "MissingTopic", "MissingProviderToken",
                       "InvalidPushType", "PayloadTooLarge"]
    assert fake.stats().get("accepted", 0) == 0


def test_from_settings(fake: apns.FakeApnsServer, tmp_path: Path) -> None:
    with override_settings(NOTIFY_APNS_KEY_FILE=""):
        assert apns_provider.from_settings() is None
    env = fake.env()
    with override_settings(**env):
        provider = apns_provider.from_settings()
        assert isinstance(provider, ApnsProvider) and provider.platform == "ios"
        assert fake.signing_key[40:80] not in repr(provider)
        [result] = send(provider, (target(), push()))
        assert result.outcome == Outcome.SENT
    with override_settings(**{**env, "NOTIFY_APNS_TEAM_ID": ""}):
        with pytest.raises(ImproperlyConfigured, match="NOTIFY_APNS_TEAM_ID"):
            apns_provider.from_settings()
    # The key's text itself in the environment, its newlines written as \n on one line.
    one_line = fake.signing_key.replace("\n", "\\n")
    with override_settings(**{**env, "NOTIFY_APNS_KEY_FILE": "", "NOTIFY_APNS_KEY": one_line}):
        provider = apns_provider.from_settings()
        assert isinstance(provider, ApnsProvider)
        assert send(provider, (target(), push()))[0].outcome == Outcome.SENT
    broken = tmp_path / "AuthKey.p8"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nsecretstuff\n-----END PRIVATE KEY-----\n")
    with override_settings(**{**env, "NOTIFY_APNS_KEY_FILE": str(broken)}):
        with pytest.raises(ImproperlyConfigured) as err:
            apns_provider.from_settings()
        assert "secretstuff" not in str(err.value)


def test_throughput_to_the_fake() -> None:
    print_throughput("APNs", apns, target, push)
