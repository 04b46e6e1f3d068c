"""A fake Firebase Cloud Messaging (HTTP v1) with Google's OAuth2 token endpoint, over TLS + HTTP/2.

It checks what the real services check: the token endpoint takes only a JWT-bearer assertion signed
(RS256) by a service account it knows, with that account's key id, iss, Google's endpoint as aud, a scope
and a lifetime of at most an hour; the send endpoint takes only an unexpired bearer token with the
messaging scope for the project in the path, and a message of FCM's schema (unknown fields, non-string
data, reserved data keys, bad priority/ttl, more than 4 KB, no or several targets are refused). Errors
are in Google's format: {"error": {"code", "message", "status", "details": [FcmError, BadRequest]}}.

Faults, each applied to one send request in order: {"status": 503}, {"status": 429, "retry_after": 7},
{"status": 500}, {"status": 401}, {"timeout": 2.0} (answer only after that many seconds). Token
endpoint faults: `inject_token(...)` with the same shapes. Tokens in `unregistered` get FCM's 404
UNREGISTERED.

    server = start()                        # a test: running on a thread of this process
    provider = server.provider()            # an FcmProvider pointed at it
    server.env()                            # NOTIFY_FCM_* for a hub process
    server.stop()
    spawned = spawn()                       # a benchmark: in a process of its own
    provider_for(spawned.env); spawned.stats(); spawned.accepted(); spawned.stop()

By hand: `python -m tests.fakes.fcm [--port 8443]` prints where it is and the settings as JSON.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

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

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The audience Google's endpoint takes (google-auth signs it whatever token_uri it posts to).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
MAX_MESSAGE_BYTES = 4096
TOKEN_RE = re.compile(r"[A-Za-z0-9_:\-]{20,4096}")
DURATION_RE = re.compile(r"\d{1,12}(\.\d{1,9})?s")
SEND_PATH = re.compile(r"/v1/projects/([^/]+)/messages:send")
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

# The fields of the v1 Message and the parts this project could send (the rest of the schema is
# accepted by name, checked no deeper).
MESSAGE_FIELDS = {"name", "data", "notification", "android", "webpush", "apns", "fcm_options", "token", "topic",
                  "condition"}
NOTIFICATION_FIELDS = {"title", "body", "image"}
ANDROID_FIELDS = {"collapse_key", "priority", "ttl", "restricted_package_name", "data", "notification",
                  "fcm_options", "direct_boot_ok"}


def make_service_account(project_id: str, token_uri: str) -> tuple[dict[str, Any], rsa.RSAPublicKey]:
    """A service-account key file's content (a fresh RSA key) and the public half the fake trusts."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    email = f"push-test@{project_id}.iam.gserviceaccount.com"
    info = {"type": "service_account", "project_id": project_id, "private_key_id": secrets.token_hex(20),
            "private_key": pem, "client_email": email, "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
            "universe_domain": "googleapis.com"}
    return info, key.public_key()


def _error(code: int, status: str, message: str, error_code: str = "",
           violations: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    details: list[dict[str, Any]] = []
    if error_code:
        details.append({"@type": FCM_ERROR, "errorCode": error_code})
    if violations:
        details.append({"@type": BAD_REQUEST,
                        "fieldViolations": [{"field": f, "description": d} for f, d in violations]})
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        body["details"] = details
    return {"error": body}


class Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _unknown(fields: dict[str, Any], known: set[str], at: str) -> None:
    for name in fields:
        if name not in known:
            raise Invalid(at, f"Invalid JSON payload received. Unknown name \"{name}\" at '{at}': Cannot find field.")


def _strings(value: Any, at: str) -> None:
    if not isinstance(value, dict):
        raise Invalid(at, f"Invalid value at '{at}' (type.googleapis.com/google.protobuf.Map), {value!r}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise Invalid(f"{at}[{key}]", f"Invalid value at '{at}[{key}].value' (TYPE_STRING), {item!r}")


def validate(body: Any) -> dict[str, Any]:
    """The message FCM would accept, or Invalid naming the field, as FCM's schema checks would."""
    if not isinstance(body, dict):
        raise Invalid("", "Invalid JSON payload received. Expected an object.")
    _unknown(body, {"message", "validate_only"}, "")
    message = body.get("message")
    if not isinstance(message, dict):
        raise Invalid("message", "Request contains an invalid argument.")
    _unknown(message, MESSAGE_FIELDS, "message")
    targets = [t for t in ("token", "topic", "condition") if t in message]
    if len(targets) != 1:
        raise Invalid("message", "Exactly one of token, topic or condition must be specified.")
    if "data" in message:
        _strings(message["data"], "message.data")
        for key in message["data"]:
            if key in ("from", "notification", "message_type") or key.startswith(("google", "gcm")):
                raise Invalid("message.data", f"Invalid data payload key: {key}")
    notification = message.get("notification", {})
    if not isinstance(notification, dict):
        raise Invalid("message.notification", "Invalid value at 'message.notification'")
    _unknown(notification, NOTIFICATION_FIELDS, "message.notification")
    for name, value in notification.items():
        if not isinstance(value, str):
            raise Invalid(f"message.notification.{name}", f"Invalid value at 'message.notification.{name}'")
    android = message.get("android", {})
    if not isinstance(android, dict):
        raise Invalid("message.android", "Invalid value at 'message.android'")
    _unknown(android, ANDROID_FIELDS, "message.android")
    if "priority" in android and str(android["priority"]).upper() not in ("NORMAL", "HIGH"):
        raise Invalid("message.android.priority",
                      f"Invalid value at 'message.android.priority' (type.googleapis.com/"
                      f"google.firebase.fcm.v1.AndroidMessagePriority), {android['priority']!r}")
    if "ttl" in android and not (isinstance(android["ttl"], str) and DURATION_RE.fullmatch(android["ttl"])):
        raise Invalid("message.android.ttl", "Invalid value at 'message.android.ttl' (type.googleapis.com/"
                                             "google.protobuf.Duration), Illegal duration format")
    if "ttl" in android and float(android["ttl"][:-1]) > 28 * 24 * 3600:
        raise Invalid("message.android.ttl", "TTL must be at most 4 weeks")
    if "collapse_key" in android and not isinstance(android["collapse_key"], str):
        raise Invalid("message.android.collapse_key", "Invalid value at 'message.android.collapse_key'")
    if "data" in android:
        _strings(android["data"], "message.android.data")
    size = len(json.dumps({"data": message.get("data", {}), "notification": notification}).encode())
    if size > MAX_MESSAGE_BYTES:
        raise Invalid("message", "Android message is too big")
    if "token" in message and not (isinstance(message["token"], str) and TOKEN_RE.fullmatch(message["token"])):
        raise Invalid("message.token", "The registration token is not a valid FCM registration token")
    return message


@dataclass
class AccessToken:
    account: str
    project_id: str
    scopes: set[str]
    expires_at: float


@dataclass
class FakeFcm:
    """The fake's state and its ASGI app (runs on the server's loop only)."""
    url: str = ""
    expires_in: int = 3599
    clock_offset_s: float = 0.0
    accounts: dict[str, tuple[str, str, rsa.RSAPublicKey]] = field(default_factory=dict)  # email: kid, project, key
    tokens: dict[str, AccessToken] = field(default_factory=dict)
    unregistered: set[str] = field(default_factory=set)
    faults: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    token_faults: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    accepted: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=10_000))
    stats: collections.Counter[str] = field(default_factory=collections.Counter)
    connections: set[tuple[str, int]] = field(default_factory=set)
    bearers_seen: set[str] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    def now(self) -> float:
        return time.time() + self.clock_offset_s

    def trust(self, info: dict[str, Any], public_key: rsa.RSAPublicKey) -> None:
        self.accounts[info["client_email"]] = (info["private_key_id"], info["project_id"], public_key)

    def reset(self) -> None:
        self.tokens.clear()
        self.unregistered.clear()
        self.faults.clear()
        self.token_faults.clear()
        self.accepted.clear()
        self.stats.clear()
        self.connections.clear()
        self.bearers_seen.clear()
        self.expires_in, self.clock_offset_s = 3599, 0.0

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def summary(self) -> dict[str, Any]:
        return {**self.stats, "connections": len(self.connections), "bearers": len(self.bearers_seen - {""})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/_fake/stats":
            await self._json(send, 200, self.summary())
        elif path == "/_fake/accepted":
            await respond(send, 200, json.dumps(list(self.accepted)).encode())
        elif path == "/token":
            await self._token(scope, receive, send)
        elif SEND_PATH.fullmatch(path):
            await self._send(scope, receive, send)
        else:
            # Read the body first: Hypercorn drops the connection if a request's DATA arrives after its answer.
            await read_body(receive, 64 * 1024)
            await self._json(send, 404, _error(404, "NOT_FOUND", "Requested entity was not found."))

    @staticmethod
    async def _json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
                    ) -> None:
        await respond(send, status, json.dumps(body).encode(), headers)

    async def _fault(self, queue: collections.deque[dict[str, Any]], send: Send, oauth: bool) -> bool:
        if not queue:
            return False
        fault = queue.popleft()
        self.stats["faults"] += 1
        if "timeout" in fault:
            await asyncio.sleep(float(fault["timeout"]))
        status = int(fault.get("status", 503))
        headers = [(b"retry-after", str(fault["retry_after"]).encode())] if "retry_after" in fault else []
        names = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 429: "QUOTA_EXCEEDED", 500: "INTERNAL",
                 503: "UNAVAILABLE"}
        if oauth:
            body: dict[str, Any] = {"error": "internal_failure", "error_description": "Backend error"}
        else:
            body = _error(status, "RESOURCE_EXHAUSTED" if status == 429 else names.get(status, "UNKNOWN"),
                          "The service is currently unavailable." if status >= 500 else "Fault injected.",
                          names.get(status, "UNSPECIFIED_ERROR"))
        await self._json(send, status, body, headers)
        return True

    async def _token(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats["token_requests"] += 1
        raw = await read_body(receive, 64 * 1024)
        if await self._fault(self.token_faults, send, oauth=True):
            return
        headers = dict(scope["headers"])
        if scope["method"] != "POST" or not headers.get(b"content-type", b"").startswith(
                b"application/x-www-form-urlencoded") or raw is None:
            await self._json(send, 400, {"error": "invalid_request", "error_description": "Bad Request"})
            return
        form = urllib.parse.parse_qs(raw.decode(errors="replace"))
        if form.get("grant_type") != [JWT_BEARER]:
            await self._json(send, 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
            return
        assertion = (form.get("assertion") or [""])[0]
        refusal = self._check_assertion(assertion)
        if refusal:
            self.stats["token_refused"] += 1
            await self._json(send, 400, {"error": "invalid_grant", "error_description": refusal})
            return
        claims = jwt.decode(assertion, options={"verify_signature": False})
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        self.tokens[token] = AccessToken(claims["iss"], self.accounts[claims["iss"]][1],
                                         set(str(claims.get("scope", "")).split()), self.now() + self.expires_in)
        self.stats["tokens_issued"] += 1
        await self._json(send, 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})

    def _check_assertion(self, assertion: str) -> str:
        try:
            header = jwt.get_unverified_header(assertion)
            iss = jwt.decode(assertion, options={"verify_signature": False}).get("iss", "")
        except jwt.PyJWTError:
            return "Invalid JWT: malformed"
        account = self.accounts.get(iss)
        if account is None:
            return "Invalid grant: account not found"
        kid, _project, public_key = account
        if header.get("alg") != "RS256" or header.get("kid") != kid:
            return "Invalid JWT Signature."
        try:
            claims = jwt.decode(assertion, public_key, algorithms=["RS256"],
                                audience=[GOOGLE_TOKEN_AUDIENCE, self.token_url],
                                options={"require": ["iss", "aud", "iat", "exp", "scope"], "verify_exp": False,
                                         "verify_iat": False})
        except jwt.InvalidAudienceError:
            return "Invalid JWT: audience"
        except jwt.PyJWTError:
            return "Invalid JWT Signature."
        now = self.now()
        iat, exp = float(claims["iat"]), float(claims["exp"])
        if exp - iat > 3600 or iat > now + 300 or exp < now:
            return ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                    "Check your iat and exp values in the JWT claim.")
        return ""

    async def _send(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats["send_requests"] += 1
        client = scope.get("client")
        if client:
            self.connections.add((str(client[0]), int(client[1])))
        self.stats[f"http/{scope.get('http_version')}"] += 1
        raw = await read_body(receive, 64 * 1024)
        if await self._fault(self.faults, send, oauth=False):
            return
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode(errors="replace")
        bearer = auth[7:] if auth[:7].lower() == "bearer " else ""
        self.bearers_seen.add(bearer)
        token = self.tokens.get(bearer)
        if token is None or token.expires_at <= self.now():
            await self._json(send, 401, _error(
                401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential."),
                [(b"www-authenticate", b'Bearer realm="https://accounts.google.com/"')])
            return
        project = urllib.parse.unquote(SEND_PATH.fullmatch(scope["path"]).group(1))  # type: ignore[union-attr]
        if not token.scopes & {SCOPE, CLOUD_SCOPE}:
            await self._json(send, 403, _error(403, "PERMISSION_DENIED",
                                               "Request had insufficient authentication scopes."))
            return
        if project != token.project_id:
            await self._json(send, 403, _error(
                403, "PERMISSION_DENIED", f"Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist)."))
            return
        if scope["method"] != "POST" or raw is None:
            await self._json(send, 400, _error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.",
                                               "INVALID_ARGUMENT"))
            return
        try:
            message = validate(json.loads(raw))
        except ValueError:
            await self._json(send, 400, _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.",
                                               violations=[("", "Invalid JSON payload received.")]))
            return
        except Invalid as exc:
            self.stats["invalid"] += 1
            await self._json(send, 400, _error(400, "INVALID_ARGUMENT", exc.message, "INVALID_ARGUMENT",
                                               [(exc.field, exc.message)]))
            return
        if message.get("token") in self.unregistered:
            await self._json(send, 404, _error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"))
            return
        self.stats["accepted"] += 1
        self.accepted.append({**message, "received_at": time.time()})
        mid = next(self._ids)
        await self._json(send, 200, {"name": f"projects/{project}/messages/0:{mid}%{secrets.token_hex(8)}"})


class FakeFcmServer(TlsAsgiServer):
    """A FakeFcm served over TLS on its own thread, with one service account it trusts."""

    def __init__(self, port: int = 0, project_id: str = "push-fake") -> None:
        self.fake = FakeFcm()
        super().__init__(self.fake, port=port, name="fake-fcm")
        self.fake.url = self.url
        self.project_id = project_id
        self.service_account, public_key = make_service_account(project_id, self.fake.token_url)
        self.fake.trust(self.service_account, public_key)
        self.credentials_file = Path(self.dir) / "service-account.json"
        self.credentials_file.write_text(json.dumps(self.service_account))

    def inject(self, *faults: dict[str, Any]) -> None:
        self.call(self.fake.faults.extend, faults)

    def inject_token(self, *faults: dict[str, Any]) -> None:
        self.call(self.fake.token_faults.extend, faults)

    def unregister(self, *tokens: str) -> None:
        self.call(self.fake.unregistered.update, tokens)

    def reset(self) -> None:
        self.call(self.fake.reset)

    def configure(self, **values: Any) -> None:
        """Set expires_in / clock_offset_s on the fake."""
        def apply() -> None:
            for name, value in values.items():
                setattr(self.fake, name, value)
        self.call(apply)

    def revoke_tokens(self) -> None:
        self.call(self.fake.revoke_tokens)

    def stats(self) -> dict[str, Any]:
        return dict(self.call(self.fake.summary))

    def accepted(self) -> list[dict[str, Any]]:
        return list(self.call(lambda: list(self.fake.accepted)))

    def env(self) -> dict[str, str]:
        return {"NOTIFY_FCM_CREDENTIALS_FILE": str(self.credentials_file), "NOTIFY_FCM_BASE_URL": self.url,
                "NOTIFY_FCM_TOKEN_URL": self.fake.token_url, "NOTIFY_FCM_CA_FILE": str(self.ca_file)}

    def provider(self, **kw: Any) -> Any:
        return provider_for(self.env(), **kw)


def provider_for(env: dict[str, str], **kw: Any) -> Any:
    """An FcmProvider configured by NOTIFY_FCM_* values (a fake's `env`)."""
    from notify.providers.fcm import FcmProvider

    info = json.loads(Path(env["NOTIFY_FCM_CREDENTIALS_FILE"]).read_text())
    return FcmProvider(info, base_url=env["NOTIFY_FCM_BASE_URL"], token_url=env["NOTIFY_FCM_TOKEN_URL"],
                       ca_file=env["NOTIFY_FCM_CA_FILE"], **kw)


def start(port: int = 0, project_id: str = "push-fake") -> FakeFcmServer:
    """Start a fake FCM (for benchmarks and tests); `stop()` it when done."""
    server = FakeFcmServer(port=port, project_id=project_id)
    server.start()
    return server


def spawn() -> SpawnedFake:
    """Start a fake FCM in a process of its own (benchmarks); `stop()` it when done."""
    return SpawnedFake("tests.fakes.fcm")


if __name__ == "__main__":
    args = fake_cli("A fake FCM HTTP v1 service and OAuth2 token endpoint (TLS, HTTP/2)", 8443)
    srv = FakeFcmServer(port=args.port)
    serve_forever(srv, {"url": srv.url, "ca_file": str(srv.ca_file), "env": srv.env()})
