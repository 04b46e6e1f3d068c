"""JWT HS256 tokens: minted for development, verified on connect/refresh and HTTP. No Django."""
from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

ROLES = ("customer", "serviceman", "provider", "enterprise", "admin")
# Backend services publish through HTTP; never a socket user.
SERVICE_ROLE = "service"
ALL_ROLES = ROLES + (SERVICE_ROLE,)
ALGORITHM = "HS256"
# The tenant of a token without one (development only; elsewhere the claim is required).
DEFAULT_TENANT = "default"
# User ids and tenants end up inside channel names and Redis keys, whose separators (`:`, `|`, `/`,
# spaces) they must never contain: one character set, checked wherever a token is made or read.
USER_ID = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
TENANT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class TokenError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Policy:
    """What a deployment demands of a token beyond its signature and expiry.

    `issuer` / `audience`: when set, the `iss` / `aud` claims must match. `max_ttl_s`: a token may not
    live longer than this (from `iat`, and from now), so a leaked long-lived token is refused.
    `require_tenant`: outside development a token without a `tenant` claim is refused instead of
    landing in the `default` tenant.
    """

    issuer: str | None = None
    audience: str | None = None
    max_ttl_s: int | None = None
    require_tenant: bool = False


OPEN = Policy()


@dataclass(frozen=True, slots=True)
class Claims:
    user: str
    role: str
    tenant: str
    exp: int
    # Issue time and token id, for revocation (hub.revocation): None when the token has none.
    iat: int | None = None
    jti: str | None = None


# A token id is opaque to the hub; bounded so a revocation entry stays small.
JTI = re.compile(r"[A-Za-z0-9._~+/=-]{1,128}")


def mint(user: str, role: str, secret: str, tenant: str = "default", ttl: int = 3600,
         now: float | None = None, issuer: str | None = None, audience: str | None = None) -> str:
    if role not in ALL_ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ALL_ROLES)}")
    if not USER_ID.fullmatch(user):
        raise ValueError("user ids are 1-128 characters of A-Z a-z 0-9 . _ @ + -")
    if not TENANT_ID.fullmatch(tenant):
        raise ValueError("tenants are 1-64 characters of A-Z a-z 0-9 . _ -")
    issued = int(now if now is not None else time.time())
    payload: dict[str, object] = {"sub": user, "role": role, "tenant": tenant, "iat": issued,
                                   "exp": issued + int(ttl), "jti": secrets.token_urlsafe(12)}
    if issuer:
        payload["iss"] = issuer
    if audience:
        payload["aud"] = audience
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def _check_times(payload: dict[str, Any], now: float) -> None:
    """PyJWT's rules for `iat`, `nbf` and `exp`, against `now` instead of its own reading of the clock."""
    try:
        iat = int(payload["iat"]) if "iat" in payload else None
        nbf = int(payload["nbf"]) if "nbf" in payload else None
        exp = int(payload["exp"])
    except (ValueError, TypeError, OverflowError) as exc:
        raise TokenError("invalid token") from exc
    if (iat is not None and iat > now) or (nbf is not None and nbf > now):
        raise TokenError("invalid token")  # not valid yet
    if exp <= now:
        raise TokenError("token expired")


def verify(token: object, secret: str, policy: Policy = OPEN, now: float | None = None) -> Claims:
    """Signature, algorithm (HS256 only: `none` and others refused), expiry, claim types, and the
    deployment's `policy` (issuer, audience, longest lifetime, tenant claim). `now` (seconds since
    the epoch) is the time the token is checked at; the clock when None."""
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise TokenError("token must be a non-empty string")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError("malformed token") from exc
    if header.get("alg") != ALGORITHM:
        raise TokenError("token algorithm not accepted")
    current = now if now is not None else time.time()
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], issuer=policy.issuer, audience=policy.audience,
            # The times are checked below, against `current`: a clock the caller may inject.
            options={"require": ["exp", "sub", "role"], "verify_aud": policy.audience is not None,
                     "verify_exp": False, "verify_iat": False, "verify_nbf": False})
    except jwt.InvalidIssuerError as exc:
        raise TokenError("token issuer not accepted") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("token audience not accepted") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the {exc.claim!r} claim") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("invalid token") from exc
    _check_times(payload, current)
    if policy.require_tenant and "tenant" not in payload:
        raise TokenError("token lacks the 'tenant' claim")
    sub, role, exp = payload.get("sub"), payload.get("role"), payload["exp"]
    tenant = payload.get("tenant", DEFAULT_TENANT)
    if not isinstance(sub, str) or not USER_ID.fullmatch(sub):
        raise TokenError("invalid sub claim: 1-128 characters of A-Z a-z 0-9 . _ @ + -")
    if role not in ALL_ROLES:
        raise TokenError("invalid role claim")
    if not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
        raise TokenError("invalid tenant claim: 1-64 characters of A-Z a-z 0-9 . _ -")
    if not isinstance(exp, int):
        raise TokenError("invalid exp claim")
    iat, jti = payload.get("iat"), payload.get("jti")
    if jti is not None and (not isinstance(jti, str) or not JTI.fullmatch(jti)):
        raise TokenError("invalid jti claim: 1-128 characters of A-Z a-z 0-9 . _ ~ + / = -")
    if policy.max_ttl_s is not None:
        # Measured from now as well as from `iat`: an old `iat` must not excuse a far-off `exp`.
        if exp - current > policy.max_ttl_s or (isinstance(iat, int) and exp - iat > policy.max_ttl_s):
            raise TokenError(f"token lifetime exceeds {policy.max_ttl_s} s")
    return Claims(user=sub, role=role, tenant=tenant, exp=exp, iat=int(iat) if isinstance(iat, (int, float)) else None,
                  jti=jti)
