"""A fake Apple Push Notification service (token auth), HTTP/2 only over TLS, as Apple runs it.

It checks what APNs checks: HTTP/2 (ALPN offers only h2), POST /3/device/<hex token>, an
`authorization: bearer <JWT>` signed ES256 by a key it knows (kid) for the right team (iss) and
less than an hour old (iat), apns-topic among the team's apps, apns-push-type, apns-priority 5|10,
a numeric apns-expiration, apns-collapse-id <= 64 bytes, a JSON payload with `aps` of at most 4 KB.
Refusals carry Apple's status codes and bodies {"reason": ...} (410 adds "timestamp").

Faults, each applied to one request in order: {"status": 500, "reason": "InternalServerError"},
{"status": 503, "reason": "ServiceUnavailable"}, {"status": 429, "reason": "TooManyRequests"},
{"status": 403, "reason": "ExpiredProviderToken"}, {"timeout": 2.0} (answer only after that long).
Tokens in `unregistered` get 410 Unregistered.

    server = start()                        # a test: running on a thread of this process
    provider = server.provider()            # an ApnsProvider pointed at it
    server.env()                            # NOTIFY_APNS_* for a hub process
    server.stop()
    spawned = spawn()                       # a benchmark: in a process of its own
    provider_for(spawned.env); spawned.stats(); spawned.accepted(); spawned.stop()

By hand: `python -m tests.fakes.apns [--port 8444]` prints where it is and the settings as JSON.
"""
from __future__ import annotations

import asyncio
import collections
import json
import re
import secrets
import string
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes.asgi_tls import (
    Receive,
    Scope,
    Send,
    SpawnedFake,
    TlsAsgiServer,
    fake_cli,
    lifespan,
    read_body,
    respond,
    serve_forever,
)

MAX_PAYLOAD_BYTES = 4096
TOKEN_MAX_AGE_S = 3600
DEVICE_PATH = re.compile(r"/3/device/([^/]*)")
HEX_TOKEN = re.compile(r"[0-9a-fA-F]{64,200}")
PUSH_TYPES = {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity",
              "pushtotalk", "controls", "widgets"}


def make_signing_key() -> tuple[str, str, ec.EllipticCurvePublicKey]:
    """A .p8 signing key as Apple issues it (PKCS#8 PEM, P-256), its 10-character key id, its public half."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    key_id = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(10))
    return pem, key_id, key.public_key()


def device_token() -> str:
    return secrets.token_hex(32)


@dataclass
class FakeApns:
    """The fake's state and its ASGI app (runs on the server's loop only)."""
    clock_offset_s: float = 0.0
    keys: dict[str, tuple[str, ec.EllipticCurvePublicKey]] = field(default_factory=dict)  # kid: team, public key
    topics: dict[str, set[str]] = field(default_factory=dict)  # team: bundle ids
    unregistered: set[str] = field(default_factory=set)
    faults: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    accepted: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=10_000))
    stats: collections.Counter[str] = field(default_factory=collections.Counter)
    connections: set[tuple[str, int]] = field(default_factory=set)
    provider_tokens: set[str] = field(default_factory=set)
    # Tokens whose signature was checked (APNs too checks a connection's token once, then its age).
    verified: dict[str, tuple[str, float]] = field(default_factory=dict)  # token: kid, iat

    def now(self) -> float:
        return time.time() + self.clock_offset_s

    def trust(self, key_id: str, team_id: str, public_key: ec.EllipticCurvePublicKey, *topics: str) -> None:
        self.keys[key_id] = (team_id, public_key)
        self.topics.setdefault(team_id, set()).update(topics)

    def reset(self) -> None:
        self.unregistered.clear()
        self.faults.clear()
        self.accepted.clear()
        self.stats.clear()
        self.connections.clear()
        self.provider_tokens.clear()
        self.verified.clear()
        self.clock_offset_s = 0.0

    def summary(self) -> dict[str, Any]:
        return {**self.stats, "connections": len(self.connections), "provider_tokens": len(self.provider_tokens)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] in ("/_fake/stats", "/_fake/accepted"):
            state = self.summary() if scope["path"] == "/_fake/stats" else list(self.accepted)
            await respond(send, 200, json.dumps(state).encode())
            return
        self.stats["requests"] += 1
        self.stats[f"http/{scope.get('http_version')}"] += 1
        client = scope.get("client")
        if client:
            self.connections.add((str(client[0]), int(client[1])))
        body = await read_body(receive, 64 * 1024)
        headers: dict[str, list[str]] = collections.defaultdict(list)
        for name, value in scope["headers"]:
            headers[name.decode().lower()].append(value.decode(errors="replace"))
        apns_id = (headers.get("apns-id") or [str(uuid.uuid4())])[0]
        status, reason = await self._check(scope, headers, body)
        if status == 200:
            self.stats["accepted"] += 1
            await respond(send, 200, b"", [(b"apns-id", apns_id.encode())])
            return
        self.stats[f"refused/{reason}"] += 1
        answer: dict[str, Any] = {"reason": reason}
        if status == 410:
            answer["timestamp"] = int(self.now() * 1000)
        extra = [(b"apns-id", apns_id.encode())]
        await respond(send, status, json.dumps(answer).encode(), extra)

    async def _check(self, scope: Scope, headers: dict[str, list[str]], body: bytes | None) -> tuple[int, str]:
        if self.faults:
            fault = self.faults.popleft()
            self.stats["faults"] += 1
            if "timeout" in fault:
                await asyncio.sleep(float(fault["timeout"]))
            return int(fault.get("status", 503)), str(fault.get("reason", "ServiceUnavailable"))
        if scope.get("http_version") != "2":
            return 400, "BadPath"  # APNs speaks HTTP/2 only; an HTTP/1.1 client never gets this far
        for name, values in headers.items():
            if name.startswith("apns-") and len(values) > 1:
                return 400, "DuplicateHeaders"
        match = DEVICE_PATH.fullmatch(scope["path"])
        if match is None:
            return 404, "BadPath"
        if scope["method"] != "POST":
            return 405, "MethodNotAllowed"
        token = match.group(1)
        if not token:
            return 400, "MissingDeviceToken"
        # Provider token
        auth = (headers.get("authorization") or [""])[0]
        if not auth:
            return 403, "MissingProviderToken"
        if auth[:7].lower() != "bearer ":
            return 403, "InvalidProviderToken"
        refusal = self._check_provider_token(auth[7:])
        if refusal:
            return refusal
        # Headers
        topic = (headers.get("apns-topic") or [""])[0]
        if not topic:
            return 400, "MissingTopic"
        team = self.keys[self.verified[auth[7:]][0]][0]
        if topic not in self.topics.get(team, set()):
            return 400, "TopicDisallowed"
        push_type = (headers.get("apns-push-type") or ["alert"])[0]
        if push_type not in PUSH_TYPES:
            return 400, "InvalidPushType"
        priority = (headers.get("apns-priority") or ["10"])[0]
        if priority not in ("1", "5", "10"):
            return 400, "BadPriority"
        expiration = (headers.get("apns-expiration") or ["0"])[0]
        if not expiration.isdigit():
            return 400, "BadExpirationDate"
        collapse = (headers.get("apns-collapse-id") or [""])[0]
        if len(collapse.encode()) > 64:
            return 400, "BadCollapseId"
        apns_id = (headers.get("apns-id") or [""])[0]
        if apns_id:
            try:
                uuid.UUID(apns_id)
            except ValueError:
                return 400, "BadMessageId"
        if not HEX_TOKEN.fullmatch(token):
            return 400, "BadDeviceToken"
        # Payload
        if body is None or len(body) > MAX_PAYLOAD_BYTES:
            return 413, "PayloadTooLarge"
        if not body:
            return 400, "PayloadEmpty"
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, "PayloadEmpty"  # Apple names no separate reason for unparsable JSON
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return 400, "PayloadEmpty"
        if push_type == "alert" and "alert" not in payload["aps"]:
            return 400, "InvalidPushType"
        if int(expiration) and int(expiration) < self.now():
            return 200, ""  # already expired: APNs accepts and drops it (not delivered)
        if token in self.unregistered:
            return 410, "Unregistered"
        self.accepted.append({"token": token, "topic": topic, "push_type": push_type, "priority": int(priority),
                              "expiration": int(expiration), "collapse_id": collapse, "payload": payload,
                              "received_at": time.time()})
        return 200, ""

    def _check_provider_token(self, token: str) -> tuple[int, str] | None:
        known_token = self.verified.get(token)
        if known_token is not None and known_token[0] in self.keys:
            return self._check_age(known_token[1])
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return 403, "InvalidProviderToken"
        if header.get("alg") != "ES256":
            return 403, "InvalidProviderToken"
        known = self.keys.get(str(header.get("kid", "")))
        if known is None:
            return 403, "InvalidProviderToken"
        team, public_key = known
        try:
            claims = jwt.decode(token, public_key, algorithms=["ES256"],
                                options={"require": ["iss", "iat"], "verify_iat": False})
        except jwt.PyJWTError:
            return 403, "InvalidProviderToken"
        if claims.get("iss") != team:
            return 403, "InvalidProviderToken"
        refusal = self._check_age(float(claims["iat"]))
        if refusal is None:
            if len(self.verified) > 10_000:
                self.verified.clear()
            self.verified[token] = (str(header["kid"]), float(claims["iat"]))
            self.provider_tokens.add(token)
        return refusal

    def _check_age(self, iat: float) -> tuple[int, str] | None:
        age = self.now() - iat
        if age > TOKEN_MAX_AGE_S:
            return 403, "ExpiredProviderToken"
        if age < -300:
            return 403, "InvalidProviderToken"
        return None


class FakeApnsServer(TlsAsgiServer):
    """A FakeApns served over TLS (ALPN h2 only) on its own thread, with one team, key and app."""

    def __init__(self, port: int = 0, team_id: str = "TEAM123456", topic: str = "com.example.hub") -> None:
        self.fake = FakeApns()
        super().__init__(self.fake, port=port, alpn=("h2",), name="fake-apns")
        self.team_id, self.topic = team_id, topic
        self.signing_key, self.key_id, public_key = make_signing_key()
        self.fake.trust(self.key_id, team_id, public_key, topic)
        self.key_file = Path(self.dir) / f"AuthKey_{self.key_id}.p8"
        self.key_file.write_text(self.signing_key)

    def inject(self, *faults: dict[str, Any]) -> None:
        self.call(self.fake.faults.extend, faults)

    def unregister(self, *tokens: str) -> None:
        self.call(self.fake.unregistered.update, tokens)

    def reset(self) -> None:
        self.call(self.fake.reset)

    def configure(self, **values: Any) -> None:
        """Set clock_offset_s on the fake."""
        def apply() -> None:
            for name, value in values.items():
                setattr(self.fake, name, value)
        self.call(apply)

    def stats(self) -> dict[str, Any]:
        return dict(self.call(self.fake.summary))

    def accepted(self) -> list[dict[str, Any]]:
        return list(self.call(lambda: list(self.fake.accepted)))

    def env(self) -> dict[str, str]:
        return {"NOTIFY_APNS_KEY_FILE": str(self.key_file), "NOTIFY_APNS_KEY_ID": self.key_id,
                "NOTIFY_APNS_TEAM_ID": self.team_id, "NOTIFY_APNS_TOPIC": self.topic,
                "NOTIFY_APNS_BASE_URL": self.url, "NOTIFY_APNS_CA_FILE": str(self.ca_file)}

    def provider(self, **kw: Any) -> Any:
        return provider_for(self.env(), **kw)


def provider_for(env: dict[str, str], **kw: Any) -> Any:
    """An ApnsProvider configured by NOTIFY_APNS_* values (a fake's `env`)."""
    from notify.providers.apns import ApnsProvider

    return ApnsProvider(Path(env["NOTIFY_APNS_KEY_FILE"]).read_bytes(), env["NOTIFY_APNS_KEY_ID"],
                        env["NOTIFY_APNS_TEAM_ID"], env["NOTIFY_APNS_TOPIC"], base_url=env["NOTIFY_APNS_BASE_URL"],
                        ca_file=env["NOTIFY_APNS_CA_FILE"], **kw)


def start(port: int = 0, team_id: str = "TEAM123456", topic: str = "com.example.hub") -> FakeApnsServer:
    """Start a fake APNs (for benchmarks and tests); `stop()` it when done."""
    server = FakeApnsServer(port=port, team_id=team_id, topic=topic)
    server.start()
    return server


def spawn() -> SpawnedFake:
    """Start a fake APNs in a process of its own (benchmarks); `stop()` it when done."""
    return SpawnedFake("tests.fakes.apns")


if __name__ == "__main__":
    args = fake_cli("A fake APNs (token auth, HTTP/2 over TLS)", 8444)
    srv = FakeApnsServer(port=args.port)
    serve_forever(srv, {"url": srv.url, "ca_file": str(srv.ca_file), "env": srv.env()})
