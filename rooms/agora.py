"""Agora RTC tokens (agora-token-builder, token format "006") for call participants.

The App ID and certificate come from the environment (AGORA_APP_ID / AGORA_APP_CERTIFICATE).
In development and tests the settings fall back to clearly marked dev credentials, and results
carry `"development": true`; outside development those dev credentials are refused at call time.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

from agora_token_builder.RtcTokenBuilder import Role_Publisher, RtcTokenBuilder
from django.conf import settings

from core.errors import unavailable

MAX_TTL_S = 24 * 3600
UID_MAX = 2**32 - 1


def ttl_s() -> int:
    """Token lifetime: AGORA_TOKEN_TTL_S (default 1 h), clamped to [60 s, 24 h]."""
    return max(60, min(settings.AGORA_TOKEN_TTL_S, MAX_TTL_S))


def channel_name(call_id: str) -> str:
    # Agora channel names: up to 64 bytes of [a-zA-Z0-9 !#$%&()+-:;<=.>?@[]^_{|}~,]; our ids are hex.
    return f"call_{call_id}"[:64]


def stable_uid(call_id: str, user: str) -> int:
    """A 32-bit unsigned, nonzero uid derived from (call, user). calls.py prefers participant indices
    (unique by construction); this is the fallback for callers without an index."""
    digest = hashlib.sha256(f"{call_id}:{user}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % UID_MAX + 1


def credentials() -> tuple[str, str, bool]:
    """(app_id, certificate, development). Dev credentials outside development are refused."""
    dev = settings.AGORA_USING_DEV
    if dev and not settings.DEVELOPMENT:
        raise unavailable("calls are not configured: set AGORA_APP_ID and AGORA_APP_CERTIFICATE")
    return settings.AGORA_APP_ID, settings.AGORA_APP_CERTIFICATE, dev


def build_token(channel: str, uid: int, now: float | None = None) -> dict[str, Any]:
    """A publisher RTC token for `uid` on `channel`:
    {app_id, channel, uid, token, expires_at, expires_at_ms[, development]}.

    `expires_at` is in seconds since the epoch (the token's privilege expiry, as Agora counts it);
    `expires_at_ms` the same instant in milliseconds, the protocol's unit for times.
    """
    if not 0 < uid <= UID_MAX:
        raise ValueError("uid must be a nonzero 32-bit unsigned integer")
    app_id, certificate, dev = credentials()
    expires_at = int(now if now is not None else time.time()) + ttl_s()
    token = RtcTokenBuilder.buildTokenWithUid(app_id, certificate, channel, uid, Role_Publisher, expires_at)
    out: dict[str, Any] = {"app_id": app_id, "channel": channel, "uid": uid, "token": token,
                           "expires_at": expires_at, "expires_at_ms": expires_at * 1000}
    if dev:
        out["development"] = True
    return out
