"""The deployment's tokens: `hub.auth` with the secret and the policy taken from settings.

Every place that accepts a token (connect, refresh, HTTP, /metrics) verifies through here, so the
issuer, audience, longest lifetime and tenant rule are the same everywhere.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache

from django.conf import settings

from hub import auth, revocation

_clock: Callable[[], float] | None = None


def set_clock(clock: Callable[[], float] | None) -> None:
    """Replace the wall clock tokens are minted and checked at (seconds since the epoch; None: the
    real one), for tests: token expiry then moves when the test says."""
    global _clock
    _clock = clock


def now() -> float:
    """The time tokens are checked at (and a socket's expiry is measured from)."""
    return _clock() if _clock is not None else time.time()


@cache
def policy() -> auth.Policy:
    return auth.Policy(
        issuer=settings.HUB_TOKEN_ISSUER or None,
        audience=settings.HUB_TOKEN_AUDIENCE or None,
        max_ttl_s=settings.HUB_TOKEN_MAX_TTL_S,
        require_tenant=not settings.DEVELOPMENT,
    )


def verify(token: object) -> auth.Claims:
    """Signature, policy, and revocation (an in-memory look-up, no query: hub.revocation)."""
    claims = auth.verify(token, settings.HUB_SECRET, policy(), now=now())
    revocation.check(claims)
    return claims


def mint(user: str, role: str, tenant: str = "default", ttl: int = 3600) -> str:
    """A token this deployment accepts (development, tests, `mint_token`)."""
    return auth.mint(user, role, settings.HUB_SECRET, tenant=tenant, ttl=ttl, now=now(),
                     issuer=settings.HUB_TOKEN_ISSUER or None, audience=settings.HUB_TOKEN_AUDIENCE or None)
