"""What an HTTP request must pass before Django sees it: a size, a deadline, and a budget.

- Bodies over `HUB_HTTP_MAX_BODY_BYTES` are refused with 413 from the `Content-Length` alone, or
  as soon as a streamed body passes the limit; nothing past the limit is read or stored.
- Headers and body of one request must arrive within `HUB_HTTP_REQUEST_TIMEOUT_S` (408), so a
  client trickling bytes cannot hold a connection.
- Every request spends from a per-minute budget shared by all hub processes (core.ratelimit):
  the caller's user when it sends a valid bearer token (`HUB_HTTP_PER_MIN`), otherwise its
  address (`HUB_HTTP_ANON_PER_MIN`, small). Past it: 429 with `Retry-After`. Probes and static
  files are not counted.

`GuardMiddleware` enforces all three under any ASGI server. Daphne reads a whole request before
the application runs (large bodies go to a temporary file), so under `manage.py serve`
`install_daphne_guards` applies the size and the deadline inside daphne as the bytes arrive.
"""
from __future__ import annotations

import asyncio
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from typing import Any

import orjson
from django.conf import settings

from core import ratelimit
from core.errors import BAD_REQUEST, RATE_LIMITED, TOO_LARGE, HubError
from hub import auth, credentials

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

UNCOUNTED = ("/healthz", "/readyz", "/static/")


def _error_body(code: str, message: str, retry_after_ms: int | None = None) -> bytes:
    return orjson.dumps({"error": HubError(code, message, retry_after_ms).as_dict()})


async def _respond(send: Send, status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@cache
def _trusted_proxies() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in settings.HUB_TRUSTED_PROXIES)


def client_address(scope: Scope) -> str:
    """The peer's address; behind a trusted proxy, the nearest untrusted hop of X-Forwarded-For.

    Only proxies listed in HUB_TRUSTED_PROXIES are believed: a client cannot pick its own address
    (and so its budget) by sending the header itself.
    """
    peer = (scope.get("client") or ("", 0))[0] or ""
    proxies = _trusted_proxies()
    if not proxies or not _in(peer, proxies):
        return peer
    hops: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            hops += [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, proxies):
            return hop
    return peer


def _in(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def budget_key(scope: Scope) -> tuple[str, int]:
    """(limiter key, requests per minute) for this request."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            try:
                claims = credentials.verify(value[7:].decode("latin-1").strip())
            except auth.TokenError:
                break  # the view answers 401; until then it spends the address's budget
            return f"http:u:{claims.tenant}:{claims.user}", settings.HUB_HTTP_PER_MIN
    return f"http:a:{client_address(scope)}", settings.HUB_HTTP_ANON_PER_MIN


class GuardMiddleware:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_body: int = settings.HUB_HTTP_MAX_BODY_BYTES
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _respond(send, 400, _error_body(BAD_REQUEST, "bad Content-Length"))
                    return
                if declared > max_body:
                    await _respond(send, 413, _error_body(TOO_LARGE, f"body over {max_body} bytes"))
                    return
        if not scope["path"].startswith(UNCOUNTED):
            key, per_minute = budget_key(scope)
            wait_ms = await ratelimit.limiter().acquire([ratelimit.Limit(key, per_minute, 1)])
            if wait_ms:
                await _respond(send, 429, _error_body(RATE_LIMITED, "too many requests; retry later", wait_ms),
                               [(b"retry-after", str(max(1, (wait_ms + 999) // 1000)).encode())])
                return
        body = await self._read_body(receive, send, max_body)
        if body is None:
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive, send: Send, max_body: int) -> bytes | None:
        deadline = time.monotonic() + settings.HUB_HTTP_REQUEST_TIMEOUT_S
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                await _respond(send, 408, _error_body(BAD_REQUEST, "request body too slow"))
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                await _respond(send, 413, _error_body(TOO_LARGE, f"body over {max_body} bytes"))
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would send it

    return replay


def install_daphne_guards() -> None:
    """Size and deadline inside daphne, before a byte past the limit is buffered (see module doc)."""
    from daphne import http_protocol, server
    from twisted.internet import reactor as twisted_reactor

    reactor: Any = twisted_reactor  # Twisted's reactor module is typed as an interface mypy misreads

    max_body: int = settings.HUB_HTTP_MAX_BODY_BYTES
    timeout: float = settings.HUB_HTTP_REQUEST_TIMEOUT_S

    def refuse(channel: Any, status: str, code: str, message: str) -> None:
        body = _error_body(code, message)
        channel.transport.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            # Refused before the request reached the application: a fresh id (every response has one).
            f"X-Request-Id: {secrets.token_hex(8)}\r\nConnection: close\r\n\r\n".encode() + body)
        channel.transport.loseConnection()

    class GuardedRequest(http_protocol.WebRequest):  # type: ignore[misc]
        def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
            self._refused = False
            self._received = 0
            channel.hub_requests = getattr(channel, "hub_requests", 0) + 1
            super().__init__(channel, *args, **kwargs)
            self._deadline = reactor.callLater(timeout, self._too_slow)

        def _refuse(self, status: str, code: str, message: str) -> None:
            self._refused = True
            if self._deadline.active():
                self._deadline.cancel()
            refuse(self.channel, status, code, message)

        def _too_slow(self) -> None:
            self._refuse("408 Request Timeout", BAD_REQUEST, "request headers or body too slow")

        def gotLength(self, length: int | None) -> None:
            super().gotLength(length if length is not None and length <= max_body else None)
            if length is not None and length > max_body:
                self._refuse("413 Payload Too Large", TOO_LARGE, f"body over {max_body} bytes")

        def handleContentChunk(self, data: bytes) -> None:
            if self._refused:
                return
            self._received += len(data)
            if self._received > max_body:
                self._refuse("413 Payload Too Large", TOO_LARGE, f"body over {max_body} bytes")
                return
            super().handleContentChunk(data)

        def process(self) -> Any:
            if self._deadline.active():
                self._deadline.cancel()
            if self._refused:
                return None
            return super().process()

        def connectionLost(self, reason: Any) -> None:
            if self._deadline.active():
                self._deadline.cancel()
            super().connectionLost(reason)

    class GuardedFactory(http_protocol.HTTPFactory):  # type: ignore[misc]
        def buildProtocol(self, addr: Any) -> Any:
            protocol = super().buildProtocol(addr)
            protocol.requestFactory = GuardedRequest

            channel = getattr(protocol, "_channel", protocol)  # Twisted wraps the HTTP/1.1 channel

            def no_request_yet() -> None:
                # A connection that has not finished even its first request line by now.
                transport = getattr(channel, "transport", None)
                if not getattr(channel, "hub_requests", 0) and transport is not None:
                    refuse(channel, "408 Request Timeout", BAD_REQUEST, "request line too slow")

            reactor.callLater(timeout, no_request_yet)
            return protocol

    server.HTTPFactory = GuardedFactory
