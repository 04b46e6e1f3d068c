"""The HTTP client the FCM and APNs providers share: httpcore's connection pool, the engine under httpx.

Pushes are small requests, many per second over one HTTP/2 connection; httpx's request and URL
models cost as much CPU per push as HTTP/2 itself, so the providers use the pool directly (same TLS,
ALPN, HTTP/2 and connection reuse as an httpx.AsyncClient, about 40% less CPU per push).
"""
from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpcore


class Response(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class TransportFailure(Exception):
    """No answer: a timeout, a refused or lost connection, a protocol error (worth a retry)."""

    def __init__(self, reason: str, timeout: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout


class Client:
    """A pool of connections for one event loop at a time (a new loop gets a new pool)."""

    def __init__(self, *, ca_file: str = "", timeout_s: float = 10.0, http1: bool = True,
                 max_connections: int = 10) -> None:
        self._ca_file = ca_file
        self._http1 = http1
        self._max_connections = max_connections
        self._timeouts = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
        self._pool: httpcore.AsyncConnectionPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def pool(self) -> httpcore.AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            # A staging service or a local fake signed by a private CA; the system's trust otherwise.
            context = ssl.create_default_context(cafile=self._ca_file or None)
            self._pool = httpcore.AsyncConnectionPool(ssl_context=context, http1=self._http1, http2=True,
                                                      max_connections=self._max_connections,
                                                      max_keepalive_connections=self._max_connections,
                                                      keepalive_expiry=None)
            self._loop = loop
        return self._pool

    async def post(self, url: str, body: bytes, headers: list[tuple[str, str]]) -> Response:
        host = urlsplit(url).netloc
        # HTTP/1.1 needs Host (HTTP/2 turns it into :authority); both get the body's length.
        request_headers = [("host", host), ("content-length", str(len(body))), *headers]
        try:
            resp = await self.pool().request("POST", url, headers=request_headers, content=body,
                                             extensions={"timeout": self._timeouts})
        except httpcore.TimeoutException:
            raise TransportFailure("timeout", True) from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as exc:
            raise TransportFailure(f"connection: {type(exc).__name__}", False) from None
        return Response(resp.status, {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers},
                        resp.content)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and self._loop is asyncio.get_running_loop():
            await pool.aclose()
