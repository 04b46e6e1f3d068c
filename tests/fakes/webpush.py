"""A Web Push service (RFC 8030) that checks what a real one checks, over real HTTP.

For each subscription it made (`subscription()`), it holds the browser's side: the P-256 key pair
and auth secret. A push must carry a VAPID (RFC 8292) `Authorization: vapid t=<JWT>,k=<key>` whose
ES256 signature verifies with `k`, whose `aud` is this service's origin, whose `exp` is in the
future and at most 24 h away, and whose `sub` is a mailto: or https: contact; a `TTL`; and an
aes128gcm body (RFC 8291) that decrypts with the subscription's keys. Accepted pushes are kept
(decrypted) in `received`; a bad one gets the service's 400/401/403.

Faults, per subscription, in order: `fail(sub_id, 503)`, `fail(sub_id, 429, retry_after=2)`,
`fail(sub_id, 410)` (gone), `fail(sub_id, "timeout")` (no answer for `hang_s`).
"""
from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Received:
    sub: str
    message: dict[str, Any]
    headers: dict[str, str]
    at: float


@dataclass
class _Sub:
    key: ec.EllipticCurvePrivateKey
    auth: bytes
    faults: list[Any] = field(default_factory=list)
    gone: bool = False


class FakeWebPush:
    def __init__(self, hang_s: float = 30.0) -> None:
        self.hang_s = hang_s
        self.subs: dict[str, _Sub] = {}
        self.received: list[Received] = []
        self.rejected: list[tuple[str, int, str]] = []  # (sub, status, why)
        self.requests = 0
        self.hits: dict[str, int] = {}  # requests per subscription, whatever the answer
        self.vapid_keys: set[str] = set()  # the `k` values seen (the hub's public key)
        # A token verified once is checked again only for its expiry and audience (as a real
        # service caches it): the signature check costs more than the rest of a push.
        self.verified: dict[str, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.port = 0
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None

    # --- set-up --------------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeWebPush:
        self.thread = threading.Thread(target=self._serve, daemon=True, name="fake-webpush")
        self.thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fake web push did not start")
        return self

    def _serve(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/push/{sub}", self._push)
        app.router.add_get("/stats", self._stats)
        runner = self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2, handler_cancellation=True)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        loop.run_until_complete(site.start())
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(5)

    def subscription(self) -> tuple[str, dict[str, Any]]:
        """A browser's PushSubscription JSON for a new subscription: (its id, the JSON)."""
        sub_id = secrets.token_hex(8)
        key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        self.subs[sub_id] = _Sub(key, auth)
        public = key.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint)
        return sub_id, {"endpoint": f"{self.base}/push/{sub_id}",
                        "keys": {"p256dh": b64url(public), "auth": b64url(auth)}}

    def fail(self, sub_id: str, *faults: Any, retry_after: float | None = None) -> None:
        """Answer the next pushes to `sub_id` with these statuses ("timeout": no answer)."""
        for f in faults:
            self.subs[sub_id].faults.append((f, retry_after))

    # --- reading what arrived ---------------------------------------------------------------------

    def messages(self, sub_id: str | None = None) -> list[Received]:
        with self.cond:
            return [r for r in self.received if sub_id is None or r.sub == sub_id]

    def wait(self, sub_id: str | None = None, count: int = 1, timeout: float = 10) -> list[Received]:
        deadline = time.time() + timeout
        with self.cond:
            while True:
                got = [r for r in self.received if sub_id is None or r.sub == sub_id]
                if len(got) >= count:
                    return got
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError(f"{len(got)} of {count} pushes arrived for {sub_id}")
                self.cond.wait(left)

    # --- the service ------------------------------------------------------------------------------

    async def _stats(self, request: web.Request) -> web.Response:
        """For a bench in another process: how many arrived, and when each id in `data` arrived."""
        with self.cond:
            at = {str(r.message.get("data", {}).get("n", "")): r.at for r in self.received}
            return web.json_response({"received": len(self.received), "rejected": len(self.rejected),
                                      "requests": self.requests, "at": at})

    def _reject(self, sub_id: str, status: int, why: str) -> web.Response:
        with self.cond:
            self.rejected.append((sub_id, status, why))
            self.cond.notify_all()
        return web.json_response({"code": status, "errno": 0, "error": why, "message": why}, status=status)

    async def _push(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        sub_id = request.match_info["sub"]
        self.hits[sub_id] = self.hits.get(sub_id, 0) + 1
        body = await request.read()
        sub = self.subs.get(sub_id)
        if sub is None or sub.gone:
            return self._reject(sub_id, 410 if sub is not None else 404, "subscription expired or unknown")
        if sub.faults:
            fault, retry_after = sub.faults.pop(0)
            if fault == "timeout":
                await asyncio.sleep(self.hang_s)
                return web.Response(status=504)
            if fault in (404, 410):
                sub.gone = True
            headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
            return web.json_response({"code": fault, "error": "injected"}, status=int(fault), headers=headers)
        why = self._check_vapid(request)
        if why:
            return self._reject(sub_id, 401 if "missing" in why else 403, why)
        ttl = request.headers.get("TTL")
        if ttl is None or not ttl.isdigit():
            return self._reject(sub_id, 400, "missing or bad TTL header")
        if request.headers.get("Content-Encoding") != "aes128gcm":
            return self._reject(sub_id, 400, "Content-Encoding must be aes128gcm")
        urgency = request.headers.get("Urgency", "normal")
        if urgency not in ("very-low", "low", "normal", "high"):
            return self._reject(sub_id, 400, "bad Urgency")
        topic = request.headers.get("Topic")
        if topic is not None and (len(topic) > 32 or any(
                c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in topic)):
            return self._reject(sub_id, 400, "bad Topic")
        if len(body) > 4096:
            return self._reject(sub_id, 413, "payload too large")
        try:
            plain = http_ece.decrypt(body, private_key=sub.key, auth_secret=sub.auth, version="aes128gcm")
            message = orjson.loads(plain)
        except Exception as exc:
            return self._reject(sub_id, 400, f"cannot decrypt: {type(exc).__name__}")
        with self.cond:
            self.received.append(Received(sub_id, message, {k.lower(): v for k, v in request.headers.items()},
                                          time.time()))
            self.cond.notify_all()
        return web.Response(status=201, headers={"Location": f"{self.base}/m/{secrets.token_hex(6)}"})

    def _check_vapid(self, request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        if not auth.lower().startswith("vapid "):
            return "missing VAPID authorization"
        parts: dict[str, str] = {}
        for tok in auth[6:].split(","):
            k, _, v = tok.strip().partition("=")
            parts[k] = v
        if "t" not in parts or "k" not in parts:
            return "missing t or k in the VAPID authorization"
        try:
            point = unb64url(parts["k"])
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            claims = jwt.decode(parts["t"], public, algorithms=["ES256"], audience=self.base,
                                options={"require": ["exp", "aud", "sub"]})
        except Exception as exc:
            return f"VAPID token invalid: {type(exc).__name__}"
        if claims["exp"] > time.time() + 24 * 3600:
            return "VAPID exp more than 24 h ahead"
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return "VAPID sub must be mailto: or https:"
        self.vapid_keys.add(parts["k"])
        return ""


def main() -> None:
    """Serve as its own process (benches): prints one JSON line {"base", "subs": [subscription]}."""
    import argparse
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--subs", type=int, default=100)
    args = parser.parse_args()
    fake = FakeWebPush().start()
    subs = [fake.subscription()[1] for _ in range(args.subs)]
    sys.stdout.write(orjson.dumps({"base": fake.base, "subs": subs}).decode() + "\n")
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
