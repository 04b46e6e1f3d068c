"""Android pushes through Firebase Cloud Messaging, HTTP v1 API.

A service account's key signs an OAuth2 assertion (google-auth); the bearer token it buys is cached
until close to expiry and refreshed on a worker thread, in the background while the old one still
has a little life, so the event loop never waits on the token endpoint unless it must. Messages go
over one reused connection pool (HTTP/2 when the service offers it by ALPN; see http2.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import http2
from .base import Outcome, Provider, Push, Result, Target

log = logging.getLogger("notify.fcm")

DEFAULT_BASE_URL = "https://fcm.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
MAX_TTL_S = 28 * 24 * 3600  # FCM keeps a message at most four weeks
# FCM refuses these data keys (reserved words and prefixes); the push's own keys must avoid them.
RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type"})
RESERVED_DATA_PREFIXES = ("google", "gcm")


def _expiry_timestamp(expiry: datetime.datetime | None) -> float:
    if expiry is None:  # google-auth gives none when the service gave no expires_in: assume the usual hour
        return time.time() + 3000
    if expiry.tzinfo is None:  # google-auth keeps naive UTC
        expiry = expiry.replace(tzinfo=datetime.UTC)
    return expiry.timestamp()


class AuthError(Exception):
    """The token endpoint refused or could not be reached (`retryable` says which)."""

    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class FcmProvider:
    platform = "android"

    def __init__(self, service_account_info: Mapping[str, Any], *, project_id: str = "",
                 base_url: str = DEFAULT_BASE_URL, token_url: str = "", ca_file: str = "",
                 timeout_s: float = 10.0, refresh_margin_s: float = 300.0, auth_backoff_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        from google.oauth2 import service_account

        # from_service_account_info checks the fields and the key; its errors never quote the key.
        credentials = service_account.Credentials.from_service_account_info(dict(service_account_info),
                                                                           scopes=[SCOPE])
        if token_url:
            credentials = credentials.with_token_uri(token_url)
        self._credentials = credentials
        self.project_id = project_id or str(service_account_info.get("project_id") or "")
        if not self.project_id:
            raise ValueError("FCM needs a project id (the service account's project_id or NOTIFY_FCM_PROJECT_ID)")
        self.send_url = f"{base_url.rstrip('/')}/v1/projects/{quote(self.project_id, safe='')}/messages:send"
        self._ca_file = ca_file
        self._timeout_s = timeout_s
        self._refresh_margin_s = refresh_margin_s
        self._auth_backoff_s = auth_backoff_s
        self._auth_error: AuthError | None = None
        self._auth_error_until = 0.0
        self._clock = clock
        self._token = ""
        self._expiry = 0.0
        self._refresh_task: asyncio.Task[str] | None = None
        self._http = http2.Client(ca_file=ca_file, timeout_s=timeout_s, http1=True, max_connections=10)
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # never the key or the token
        return f"FcmProvider(project_id={self.project_id!r}, send_url={self.send_url!r})"

    # --- the bearer token ---

    def _refresh_blocking(self) -> tuple[str, float]:
        import google.auth.exceptions
        import requests
        from google.auth.transport.requests import Request

        timeout_s, ca_file = self._timeout_s, self._ca_file

        class BoundedRequest(Request):  # google-auth's default waits two minutes for the endpoint
            def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                         timeout: Any = None, **kwargs: Any) -> Any:
                if ca_file:  # per request: requests lets REQUESTS_CA_BUNDLE override a session's verify
                    kwargs["verify"] = ca_file
                return super().__call__(url, method=method, body=body, headers=headers, timeout=timeout_s,
                                        **kwargs)

        session = requests.Session()
        try:
            self._credentials.refresh(BoundedRequest(session))
        except google.auth.exceptions.RefreshError as exc:
            # The message names the endpoint's error code ("invalid_grant: ..."), never the assertion.
            raise AuthError(f"oauth2: {str(exc.args[0] if exc.args else exc)[:200]}", bool(exc.retryable))
        except google.auth.exceptions.TransportError as exc:
            raise AuthError(f"oauth2 transport: {type(exc.args[0] if exc.args else exc).__name__}", True)
        finally:
            session.close()
        return str(self._credentials.token), _expiry_timestamp(self._credentials.expiry)

    async def _refresh(self) -> str:
        try:
            token, expiry = await asyncio.to_thread(self._refresh_blocking)
        except Exception as exc:
            failure = exc if isinstance(exc, AuthError) else AuthError(f"oauth2 internal: {type(exc).__name__}", True)
            if failure is not exc:
                log.exception("fcm token refresh failed unexpectedly")
            # Sends in the next few seconds get this answer at once instead of each asking again.
            self._auth_error = failure
            self._auth_error_until = self._clock() + (self._auth_backoff_s if failure.retryable
                                                      else 12 * self._auth_backoff_s)
            log.warning("fcm token refresh failed", extra={"reason": failure.reason})
            raise failure from None
        self._token, self._expiry, self._auth_error = token, expiry, None
        return token

    def _refreshing(self) -> asyncio.Task[str]:
        # One refresh at a time, however many sends want a token (tasks belong to their loop).
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._refresh_task, self._loop = None, loop
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.ensure_future(self._refresh())
            self._refresh_task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._refresh_task

    async def bearer(self) -> str:
        now = self._clock()
        remaining = self._expiry - now
        if self._token and remaining > self._refresh_margin_s:
            return self._token
        failed = self._auth_error is not None and now < self._auth_error_until
        if self._token and remaining > 30:
            if not failed:
                self._refreshing()  # still good for a while: refresh behind the sends
            return self._token
        if failed and self._auth_error is not None:
            raise self._auth_error
        return await asyncio.shield(self._refreshing())

    def _invalidate(self, token: str) -> None:
        if self._token == token:  # sends that failed with an older token do not drop a newer one
            self._token, self._expiry = "", 0.0

    # --- sending ---

    def message(self, target: Target, push: Push, now: float) -> dict[str, Any]:
        data = {str(k): str(v) for k, v in push.data.items()}
        data.setdefault("kind", push.kind)
        for key in list(data):
            if key in RESERVED_DATA_KEYS or key.startswith(RESERVED_DATA_PREFIXES):
                data[f"x_{key}"] = data.pop(key)  # FCM would refuse the whole message
        android: dict[str, Any] = {
            "priority": "high" if push.urgent else "normal",
            "ttl": f"{min(MAX_TTL_S, max(0, int(push.expires_at - now)))}s",
        }
        if push.collapse_key:
            android["collapse_key"] = push.collapse_key
        return {"message": {"token": target.token, "data": data,
                            "notification": {"title": push.title, "body": push.body}, "android": android}}

    async def send(self, target: Target, push: Push) -> Result:
        try:
            return await self._send(target, push)
        except Exception as exc:  # every attempt gets an answer; a fault here never ends a worker
            log.exception("fcm send failed unexpectedly")
            return Result(Outcome.RETRY, reason=f"internal: {type(exc).__name__}")

    async def _send(self, target: Target, push: Push) -> Result:
        now = self._clock()
        if push.expires_at <= now:
            return Result(Outcome.FAILED, reason="expired")
        if not target.token:
            return Result(Outcome.UNREGISTERED, reason="empty token")
        body = json.dumps(self.message(target, push, now), separators=(",", ":")).encode()
        for attempt in range(2):
            try:
                token = await self.bearer()
            except AuthError as exc:
                return Result(Outcome.RETRY if exc.retryable else Outcome.FAILED, reason=exc.reason)
            try:
                resp = await self._http.post(self.send_url, body, [
                    ("authorization", f"Bearer {token}"), ("content-type", "application/json; charset=UTF-8")])
            except http2.TransportFailure as exc:
                return Result(Outcome.RETRY, reason=exc.reason)
            if resp.status == 401 and attempt == 0:
                # The token was revoked or expired early: one fresh token, one more try.
                self._invalidate(token)
                continue
            return self.outcome(resp)
        raise AssertionError("unreachable")

    @staticmethod
    def outcome(resp: http2.Response) -> Result:
        code = resp.status
        if code == 200:
            return Result(Outcome.SENT, status=200)
        status, error_code, fields = "", "", []
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            error = resp.json()["error"]
            status = str(error.get("status") or "")
            for detail in error.get("details") or []:
                if str(detail.get("@type", "")).endswith("google.firebase.fcm.v1.FcmError"):
                    error_code = str(detail.get("errorCode") or "")
                for violation in detail.get("fieldViolations") or []:
                    fields.append(str(violation.get("field") or ""))
        reason = error_code or status or f"http {code}"
        if error_code != "UNREGISTERED" and code == 400 and "message.token" in fields:
            # A token FCM says is not a registration token at all can never be delivered to.
            return http2.result(resp, f"{reason}: message.token", unregistered=True)
        return http2.result(resp, reason, unregistered=error_code == "UNREGISTERED")

    async def aclose(self) -> None:
        if self._refresh_task is not None and not self._refresh_task.done():
            self._refresh_task.cancel()
        await self._http.aclose()


def from_settings() -> Provider | None:
    """The provider configured by NOTIFY_FCM_* settings, or None when Android push is not set up."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    path = settings.NOTIFY_FCM_CREDENTIALS_FILE
    inline = settings.NOTIFY_FCM_SERVICE_ACCOUNT_KEY
    if not (path or inline):
        return None
    source = "NOTIFY_FCM_SERVICE_ACCOUNT_KEY" if inline else "NOTIFY_FCM_CREDENTIALS_FILE"
    try:
        info = json.loads(inline or Path(path).read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        return FcmProvider(info, project_id=settings.NOTIFY_FCM_PROJECT_ID, base_url=settings.NOTIFY_FCM_BASE_URL,
                           token_url=settings.NOTIFY_FCM_TOKEN_URL, ca_file=settings.NOTIFY_FCM_CA_FILE,
                           timeout_s=settings.NOTIFY_FCM_TIMEOUT_S)
    except (OSError, ValueError, TypeError) as exc:
        # Names the setting and the kind of fault, never the key.
        raise ImproperlyConfigured(f"{source} is not a usable service-account key: {type(exc).__name__}") from None
