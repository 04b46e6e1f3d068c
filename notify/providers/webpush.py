"""Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payload encryption (RFC 8291), through
pywebpush over one pooled aiohttp session (connections reused per push service).

The push service is the subscription's endpoint itself (its origin is the VAPID audience); the
hub only posts to endpoints accepted at registration (notify.actions.check_endpoint). Neither the
key nor payloads are ever logged.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from django.conf import settings
from py_vapid import Vapid02
from pywebpush import WebPusher

from notify import vapid
from notify.providers.base import Outcome, Push, Result, Target, retry_after_seconds

# RFC 8030 5.2: a push service keeps a message at most TTL seconds; ours never outlive their event.
MAX_TTL_S = 28 * 24 * 3600
_JWT_LIFE_S = 12 * 3600


class WebPushProvider:
    platform = "web"

    def __init__(self, vapid_key: Vapid02, subject: str, timeout_s: float, pool: int = 256) -> None:
        self.vapid = vapid_key
        self.subject = subject
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.pool = pool
        self.session: aiohttp.ClientSession | None = None
        self.session_loop: asyncio.AbstractEventLoop | None = None
        # audience -> (Authorization header, renew after): one signature per push service per hours.
        self.jwts: dict[str, tuple[str, float]] = {}

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self.session is None or self.session.closed or self.session_loop is not loop:
            connector = aiohttp.TCPConnector(limit=self.pool, limit_per_host=self.pool, keepalive_timeout=60)
            self.session = aiohttp.ClientSession(connector=connector)
            self.session_loop = loop
        return self.session

    def _authorization(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        aud = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self.jwts.get(aud)
        if cached is not None and cached[1] > now:
            return cached[0]
        header = self.vapid.sign({"sub": self.subject, "aud": aud, "exp": int(now) + _JWT_LIFE_S})["Authorization"]
        self.jwts[aud] = (header, now + _JWT_LIFE_S - 3600)
        return str(header)

    async def send(self, target: Target, push: Push) -> Result:
        ttl = int(min(MAX_TTL_S, push.expires_at - time.time()))
        if ttl <= 0:
            return Result(Outcome.FAILED, reason="expired before sending")
        body = orjson.dumps({"kind": push.kind, "title": push.title, "body": push.body, "data": dict(push.data),
                             "collapse_key": push.collapse_key})
        headers: dict[str, Any] = {
            "Authorization": self._authorization(target.token),
            "Urgency": "high" if push.urgent else "normal",
            # RFC 8030 5.4: a newer message with the same topic replaces an undelivered one.
            "Topic": _topic(push.collapse_key),
        }
        sub = {"endpoint": target.token, "keys": dict(target.keys)}
        try:
            pusher = WebPusher(sub, aiohttp_session=self._session())
            resp = await pusher.send_async(body, headers, ttl=ttl, content_encoding="aes128gcm",
                                           timeout=self.timeout)
        except TimeoutError:
            return Result(Outcome.RETRY, reason="timeout")
        except aiohttp.ClientError as exc:
            return Result(Outcome.RETRY, reason=f"connection: {type(exc).__name__}")
        except Exception as exc:  # noqa: BLE001 - a bad subscription key fails encryption
            return Result(Outcome.FAILED, reason=f"encrypt: {type(exc).__name__}")
        assert not isinstance(resp, str)
        return _result(resp.status, resp.headers.get("Retry-After"))

    async def aclose(self) -> None:
        if self.session is not None and not self.session.closed:
            await self.session.close()
        self.session = None


def _topic(key: str) -> str:
    # RFC 8030: at most 32 characters of the base64url alphabet.
    import hashlib

    return hashlib.blake2b(key.encode(), digest_size=24).hexdigest()[:32]


def _result(status: int, retry_after: str | None) -> Result:
    if 200 <= status < 300:
        return Result(Outcome.SENT, status=status)
    if status in (404, 410):
        return Result(Outcome.UNREGISTERED, status=status, reason="subscription gone")
    if status == 429 or status >= 500:
        return Result(Outcome.RETRY, status=status, reason="throttled" if status == 429 else "service error",
                      retry_after_s=retry_after_seconds(retry_after))
    if status == 413:
        return Result(Outcome.FAILED, status=status, reason="payload too large")
    if status in (401, 403):
        return Result(Outcome.FAILED, status=status, reason="VAPID rejected")
    return Result(Outcome.FAILED, status=status, reason=f"HTTP {status}")


def from_settings() -> WebPushProvider | None:
    key = vapid.private_key()
    if key is None:
        return None
    return WebPushProvider(Vapid02.from_pem(_pem(key)), settings.WEBPUSH_VAPID_SUBJECT, settings.WEBPUSH_TIMEOUT_S)


def _pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
