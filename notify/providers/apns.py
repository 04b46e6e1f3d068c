"""iOS pushes through the Apple Push Notification service: token (.p8 key) auth over HTTP/2.

The provider token is an ES256 JWT (kid = key id, iss = team id, iat) reused for up to 50 minutes:
Apple refuses tokens older than an hour and answers TooManyProviderTokenUpdates to a provider that
makes them more often than every 20 minutes. Every push is one stream on one reused HTTP/2
connection (APNs speaks nothing else).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import http2
from .base import Outcome, Provider, Push, Result, Target

log = logging.getLogger("notify.apns")

DEFAULT_BASE_URL = "https://api.push.apple.com"  # development builds' tokens: https://api.sandbox.push.apple.com
MAX_PAYLOAD_BYTES = 4096
MAX_COLLAPSE_ID_BYTES = 64
TOKEN_REUSE_S = 50 * 60
# Device tokens are hex (32 bytes today; Apple says not to rely on the length). Anything else is
# refused here: it goes into the request path.
DEVICE_TOKEN_RE = re.compile(r"[0-9a-fA-F]{16,400}")
# A bundle id (with Apple's suffixes such as .voip): it goes into a header, so nothing else passes.
TOPIC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,254}")


def collapse_id(key: str) -> str:
    """The collapse key as an apns-collapse-id: itself when it fits in 64 bytes, else a stable digest."""
    if len(key.encode()) <= MAX_COLLAPSE_ID_BYTES:
        return key
    return hashlib.sha256(key.encode()).hexdigest()


class ApnsProvider:
    platform = "ios"

    def __init__(self, signing_key: bytes | str, key_id: str, team_id: str, topic: str, *,
                 base_url: str = DEFAULT_BASE_URL, ca_file: str = "", timeout_s: float = 10.0,
                 token_reuse_s: float = TOKEN_REUSE_S, clock: Callable[[], float] = time.time) -> None:
        pem = signing_key.encode() if isinstance(signing_key, str) else signing_key
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("an APNs signing key is a P-256 (ES256) private key")
        if not (key_id and team_id):
            raise ValueError("an APNs signing key needs its key id and the team id")
        self._key = key
        self.key_id, self.team_id, self.topic = key_id, team_id, topic
        self.base_url = base_url.rstrip("/")
        self._ca_file = ca_file
        self._timeout_s = timeout_s
        self._token_reuse_s = token_reuse_s
        self._clock = clock
        self._token = ""
        self._token_iat = 0.0
        # HTTP/2 only (APNs speaks nothing else): by ALPN over TLS, by prior knowledge for plain http.
        self._http = http2.Client(ca_file=ca_file, timeout_s=timeout_s, http1=False, max_connections=10)

    def __repr__(self) -> str:  # never the key or the token
        return f"ApnsProvider(team_id={self.team_id!r}, key_id={self.key_id!r}, base_url={self.base_url!r})"

    def provider_token(self) -> str:
        now = self._clock()
        if not self._token or now - self._token_iat >= self._token_reuse_s or now < self._token_iat - 60:
            iat = int(now)
            self._token = jwt.encode({"iss": self.team_id, "iat": iat}, self._key, algorithm="ES256",
                                     headers={"kid": self.key_id})
            self._token_iat = float(iat)
        return self._token

    def _invalidate(self, token: str) -> None:
        if self._token == token:  # many sends may fail with the same token: one new token, not many
            self._token = ""

    def payload(self, push: Push) -> bytes:
        body: dict[str, Any] = {str(k): str(v) for k, v in push.data.items() if k != "aps"}
        body.setdefault("kind", push.kind)
        body["aps"] = {"alert": {"title": push.title, "body": push.body}}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    async def send(self, target: Target, push: Push) -> Result:
        try:
            return await self._send(target, push)
        except Exception as exc:  # every attempt gets an answer; a fault here never ends a worker
            log.exception("apns send failed unexpectedly")
            return Result(Outcome.RETRY, reason=f"internal: {type(exc).__name__}")

    async def _send(self, target: Target, push: Push) -> Result:
        if push.expires_at <= self._clock():
            return Result(Outcome.FAILED, reason="expired")
        if not DEVICE_TOKEN_RE.fullmatch(target.token):
            return Result(Outcome.UNREGISTERED, reason="BadDeviceToken: not a hex device token")
        topic = target.app or self.topic
        if not TOPIC_RE.fullmatch(topic):
            return Result(Outcome.FAILED, reason="no usable apns-topic (NOTIFY_APNS_TOPIC or the device's app)")
        payload = self.payload(push)
        if len(payload) > MAX_PAYLOAD_BYTES:
            return Result(Outcome.FAILED, reason="PayloadTooLarge")
        token = self.provider_token()
        headers = [("authorization", f"bearer {token}"), ("apns-topic", topic), ("apns-push-type", "alert"),
                   ("apns-priority", "10" if push.urgent else "5"),
                   ("apns-expiration", str(max(1, int(push.expires_at))))]
        if push.collapse_key:
            headers.append(("apns-collapse-id", collapse_id(push.collapse_key)))
        try:
            resp = await self._http.post(f"{self.base_url}/3/device/{target.token}", payload, headers)
        except http2.TransportFailure as exc:
            return Result(Outcome.RETRY, reason=exc.reason)
        result = self.outcome(resp)
        if result.reason == "ExpiredProviderToken":
            self._invalidate(token)
        return result

    @staticmethod
    def outcome(resp: http2.Response) -> Result:
        code = resp.status
        if code == 200:
            return Result(Outcome.SENT, status=200)
        reason = ""
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            reason = str(resp.json().get("reason") or "")
        reason = reason or f"http {code}"
        if code == 403 and reason == "ExpiredProviderToken":
            # A new provider token is made for the next attempt, which may come at once.
            return Result(Outcome.RETRY, status=code, reason=reason, retry_after_s=0.0)
        return http2.result(resp, reason, unregistered=code == 410 or (code == 400 and reason == "BadDeviceToken"))

    async def aclose(self) -> None:
        await self._http.aclose()


def from_settings() -> Provider | None:
    """The provider configured by NOTIFY_APNS_* settings, or None when iOS push is not set up."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    path = settings.NOTIFY_APNS_KEY_FILE
    inline = settings.NOTIFY_APNS_KEY
    if not (path or inline):
        return None
    source = "NOTIFY_APNS_KEY" if inline else "NOTIFY_APNS_KEY_FILE"
    missing = [name for name in ("NOTIFY_APNS_KEY_ID", "NOTIFY_APNS_TEAM_ID", "NOTIFY_APNS_TOPIC")
               if not getattr(settings, name, "")]
    if missing:
        raise ImproperlyConfigured(f"{source} is set but not {', '.join(missing)}")
    try:
        # A PEM in one environment line may carry its newlines as \n.
        key = inline.replace("\\n", "\n").encode() if inline else Path(path).read_bytes()
        return ApnsProvider(key, settings.NOTIFY_APNS_KEY_ID, settings.NOTIFY_APNS_TEAM_ID,
                            settings.NOTIFY_APNS_TOPIC, base_url=settings.NOTIFY_APNS_BASE_URL,
                            ca_file=settings.NOTIFY_APNS_CA_FILE, timeout_s=settings.NOTIFY_APNS_TIMEOUT_S)
    except (OSError, ValueError, TypeError) as exc:
        # Names the setting and the kind of fault, never the key.
        raise ImproperlyConfigured(f"{source} is not a usable .p8 signing key: {type(exc).__name__}") from None
