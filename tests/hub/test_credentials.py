"""hub.credentials: the deployment's tokens (secret, policy, revocations) on a clock tests can move."""
from __future__ import annotations

import time

import pytest
from django.conf import settings

from hub import auth, credentials, revocation
from tests.hub.fakes import Clock, frozen_credentials
from tests.support import uid


def test_tokens_are_minted_and_checked_on_the_credentials_clock() -> None:
    clock = Clock()
    with frozen_credentials(clock):
        token = credentials.mint(uid(), "customer", "t1", ttl=60)
        claims = credentials.verify(token)
        assert (claims.iat, claims.exp) == (clock(), clock() + 60)
        clock.wall += 59
        assert credentials.verify(token).exp == claims.exp
        clock.wall += 1
        with pytest.raises(auth.TokenError, match="token expired"):
            credentials.verify(token)
    assert credentials.now() == pytest.approx(time.time(), abs=5)  # the real clock again


def test_credentials_refuse_revoked_tokens() -> None:
    """credentials.verify, the one check of connect, refresh and HTTP, consults the revocations."""
    user = uid()
    old = auth.mint(user, "customer", settings.HUB_SECRET, tenant="t1", now=time.time() - 5)
    other_tenant = auth.mint(user, "customer", settings.HUB_SECRET, tenant="t2", now=time.time() - 5)
    assert credentials.verify(old).user == user
    revocation.apply(revocation.Revocation("t1", user=user, not_before=int(time.time()) - 1))
    with pytest.raises(auth.TokenError, match="revoked"):
        credentials.verify(old)
    assert credentials.verify(other_tenant).tenant == "t2"
    assert credentials.verify(auth.mint(user, "customer", settings.HUB_SECRET, tenant="t1")).user == user
    # One token by its id, in its tenant only.
    token = auth.mint(user, "customer", settings.HUB_SECRET, tenant="t2")
    jti = credentials.verify(token).jti
    assert jti is not None
    revocation.apply(revocation.Revocation("t1", jti=jti))
    assert credentials.verify(token).jti == jti
    revocation.apply(revocation.Revocation("t2", jti=jti))
    with pytest.raises(auth.TokenError, match="revoked"):
        credentials.verify(token)
