"""JWT HS256 tokens: minted for development, verified on connect/refresh and HTTP. No Django."""
from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ROLES = ("customer", "serviceman", "provider", "enterprise", "admin")
# Backend services publish through HTTP; never a socket user.
SERVICE_ROLE = "service"
ALL_ROLES = ROLES + (SERVICE_ROLE,)
ALGORITHM = "HS256"


class TokenError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Claims:
    user: str
    role: str
    tenant: str
    exp: int


def mint(user: str, role: str, secret: str, tenant: str = "default", ttl: int = 3600,
         now: float | None = None) -> str:
    if role not in ALL_ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ALL_ROLES)}")
    if not user:
        raise ValueError("user must not be empty")
    issued = int(now if now is not None else time.time())
    payload = {"sub": user, "role": role, "tenant": tenant, "iat": issued, "exp": issued + int(ttl)}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify(token: object, secret: str) -> Claims:
    """Signature, algorithm (HS256 only: `none` and others refused), expiry and claim types."""
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise TokenError("token must be a non-empty string")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError("malformed token") from exc
    if header.get("alg") != ALGORITHM:
        raise TokenError("token algorithm not accepted")
    try:
        payload = jwt.decode(token, secret, algorithms=[ALGORITHM],
                             options={"require": ["exp", "sub", "role"]})
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("invalid token") from exc
    sub, role, tenant, exp = payload.get("sub"), payload.get("role"), payload.get("tenant", "default"), payload["exp"]
    if not isinstance(sub, str) or not sub or len(sub) > 128 or ":" in sub:
        raise TokenError("invalid sub claim")
    if role not in ALL_ROLES:
        raise TokenError("invalid role claim")
    if not isinstance(tenant, str) or len(tenant) > 128:
        raise TokenError("invalid tenant claim")
    if not isinstance(exp, int):
        raise TokenError("invalid exp claim")
    return Claims(user=sub, role=role, tenant=tenant, exp=exp)
