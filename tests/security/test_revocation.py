"""Revoked tokens stop working everywhere at once: connect, refresh, HTTP, and the sockets already open
on every process (two hubs sharing Redis)."""
from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
from django.core.management import call_command

from tests.support import HubClient, HubServer, http_json, mint, running_hubs, uid

pytestmark = pytest.mark.services

# Generous: the defence closes within about a second; a loaded test machine gets slack.
CLOSE_WAIT_S = 5


@pytest.fixture(scope="module")
def two_hubs() -> Iterator[tuple[HubServer, HubServer]]:
    # A poll far longer than the tests: what they see arrives through Redis.
    env = {"HUB_REVOCATION_POLL_S": "600"}
    with running_hubs(2, env) as (a, b):
        yield a, b


def refused(url: str, token: str) -> tuple[str, str, int | None]:
    c = HubClient(url)
    try:
        reply = c.request("connect", token=token)
        assert not reply["ok"], reply
        return reply["error"]["code"], reply["error"]["message"], c.wait_closed()[0]
    finally:
        c.close()


def next_second() -> None:
    # Revocation covers tokens issued in its own second (`iat` has whole seconds).
    time.sleep(1.1)


def still_open(c: HubClient) -> bool:
    try:
        c.call("presence", channel=f"user:{c.hello['user']}")  # type: ignore[index]
        return True
    except (ConnectionError, TimeoutError):
        return False


def revoke_and_wait(admin: HubClient, url: str, tenant: str) -> None:
    """Revoke a sentinel user of `tenant` and wait for its socket to close: every revocation sent
    before it has then been applied by that process too (one ordered control channel)."""
    sentinel = uid("s")
    s = HubClient(url, mint(sentinel, tenant=tenant))
    admin.rpc("tokens.revoke", user=sentinel)
    assert s.wait_closed(CLOSE_WAIT_S)[0] == 4001


def test_revoking_a_user_closes_their_sockets_on_every_process(two_hubs: tuple[HubServer, HubServer]) -> None:
    a, b = two_hubs
    user, other = uid(), uid()
    old = mint(user)
    on_a, on_b = HubClient(a.url, old), HubClient(b.url, mint(user))
    bystander = HubClient(b.url, mint(other))
    assert http_json("POST", a.http + "/api/rooms.list", {}, token=old)[0] == 200
    with HubClient(a.url, mint(uid("admin"), role="admin")) as admin:
        result = admin.rpc("tokens.revoke", user=user)
        assert result["user"] == user and result["tenant"] == "t1"
        assert on_a.wait_closed(CLOSE_WAIT_S)[0] == 4001
        assert on_b.wait_closed(CLOSE_WAIT_S)[0] == 4001
        assert still_open(bystander) and still_open(admin)
    # The old token is refused on connect on either process, and over HTTP.
    assert refused(a.url, old)[::2] == ("unauthorized", 4001)
    code, message, close = refused(b.url, old)
    assert (code, close) == ("unauthorized", 4001) and "revoked" in message
    assert http_json("POST", b.http + "/api/rooms.list", {}, token=old)[0] == 401
    # A token issued after the revocation works.
    next_second()
    fresh = mint(user)
    with HubClient(b.url, fresh) as again:
        assert still_open(again)
    assert http_json("POST", a.http + "/api/rooms.list", {}, token=fresh)[0] == 200
    bystander.close()


def test_refresh_with_a_revoked_token_is_refused(two_hubs: tuple[HubServer, HubServer]) -> None:
    a, b = two_hubs
    user = uid()
    stale = mint(user, ttl=7200)  # later expiry: would pass the "not older" rule
    with HubClient(a.url, mint(uid("admin"), role="admin")) as admin:
        admin.rpc("tokens.revoke", user=user)
        revoke_and_wait(admin, b.url, "t1")
    next_second()
    with HubClient(b.url, mint(user)) as c:
        reply = c.request("refresh", token=stale)
        assert not reply["ok"] and reply["error"]["code"] == "unauthorized"
        assert "revoked" in reply["error"]["message"]


def test_revoking_one_jti_closes_only_that_tokens_sockets(two_hubs: tuple[HubServer, HubServer]) -> None:
    import jwt

    a, b = two_hubs
    user = uid()
    doomed, kept = mint(user), mint(user)
    jti = jwt.decode(doomed, options={"verify_signature": False})["jti"]
    assert jti != jwt.decode(kept, options={"verify_signature": False})["jti"]
    d_a, d_b, k_a = HubClient(a.url, doomed), HubClient(b.url, doomed), HubClient(a.url, kept)
    with HubClient(b.url, mint(uid("admin"), role="admin")) as admin:
        assert admin.rpc("tokens.revoke", jti=jti) == {"tenant": "t1", "jti": jti}
        assert d_a.wait_closed(CLOSE_WAIT_S)[0] == 4001
        assert d_b.wait_closed(CLOSE_WAIT_S)[0] == 4001
        revoke_and_wait(admin, a.url, "t1")
    assert still_open(k_a)
    assert refused(b.url, doomed)[::2] == ("unauthorized", 4001)
    assert http_json("POST", a.http + "/api/rooms.list", {}, token=kept)[0] == 200
    k_a.close()


def test_an_admin_revokes_only_in_their_own_tenant(two_hubs: tuple[HubServer, HubServer]) -> None:
    a, b = two_hubs
    user = uid()
    token = mint(user, tenant="t1")
    victim = HubClient(a.url, token)
    with HubClient(b.url, mint(uid("admin"), role="admin", tenant="t2")) as admin:
        assert admin.rpc("tokens.revoke", user=user)["tenant"] == "t2"
        revoke_and_wait(admin, a.url, "t2")
    assert still_open(victim)
    assert http_json("POST", b.http + "/api/rooms.list", {}, token=token)[0] == 200
    victim.close()
    # Only admins may revoke at all.
    with HubClient(a.url, mint(uid(), role="provider")) as provider:
        reply = provider.request("rpc", method="tokens.revoke", params={"user": user})
        assert reply["error"]["code"] == "forbidden"


def test_revoke_tokens_command(two_hubs: tuple[HubServer, HubServer]) -> None:
    a, b = two_hubs
    user = uid()
    token = mint(user)
    c_a, c_b = HubClient(a.url, token), HubClient(b.url, token)
    call_command("revoke_tokens", user=user, tenant="t1", stdout=io.StringIO())
    assert c_a.wait_closed(CLOSE_WAIT_S)[0] == 4001
    assert c_b.wait_closed(CLOSE_WAIT_S)[0] == 4001
    assert refused(a.url, token)[::2] == ("unauthorized", 4001)


def test_erase_user_revokes_the_users_tokens(two_hubs: tuple[HubServer, HubServer]) -> None:
    from core.management.commands.erase_user import erase

    a, b = two_hubs
    user = uid()
    token = mint(user, tenant="t3")
    c_a, c_b = HubClient(a.url, token), HubClient(b.url, mint(user, tenant="t1"))
    erase(user)
    # Every tenant: the erasure knows the user id only.
    assert c_a.wait_closed(CLOSE_WAIT_S)[0] == 4001
    assert c_b.wait_closed(CLOSE_WAIT_S)[0] == 4001
    assert refused(b.url, token)[::2] == ("unauthorized", 4001)
    assert http_json("POST", a.http + "/api/rooms.list", {}, token=token)[0] == 401
