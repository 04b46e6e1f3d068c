"""The HTTP client the FCM and APNs providers share: httpcore's connection pool, the engine under httpx.

Pushes are small requests, many per second over one HTTP/2 connection; httpx's request and URL
models cost as much CPU per push as HTTP/2 itself, so the providers use the pool directly (same TLS,
ALPN, HTTP/2 and connection reuse as an httpx.AsyncClient, about 40% less CPU per push), over
asyncio's own streams rather than anyio's (a quarter less again).
"""
from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpcore

from .base import Outcome, Result, retry_after_seconds


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


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection on asyncio streams: what httpcore's anyio backend does, with less per read/write."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)  # b"" at the end, as httpcore expects
        except TimeoutError:
            raise httpcore.ReadTimeout("read timed out") from None
        except OSError as exc:  # ssl.SSLError included
            raise httpcore.ReadError(type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._reader.at_eof() or self._writer.is_closing():
            raise httpcore.WriteError("the connection was closed")  # before a byte of the request went out
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("write timed out") from None
        except (OSError, RuntimeError) as exc:
            raise httpcore.WriteError(type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            self._writer.close()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from None
        except OSError as exc:
            self._writer.close()
            raise httpcore.ConnectError(type(exc).__name__) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":  # httpcore reads the protocol ALPN chose from it
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":  # an idle connection with something to read was closed by the server
            return self._reader.at_eof() or self._reader.exception() is not None
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Any = None
                          ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None)
        except TimeoutError:
            raise httpcore.ConnectTimeout("connect timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(type(exc).__name__) from exc
        for option in socket_options or ():
            writer.get_extra_info("socket").setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("push providers connect over TCP only")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


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
                                                      keepalive_expiry=None, network_backend=AsyncioBackend())
            self._loop = loop
        return self._pool

    async def post(self, url: str, body: bytes, headers: list[tuple[str, str]]) -> Response:
        host = urlsplit(url).netloc
        # HTTP/1.1 needs Host (HTTP/2 turns it into :authority); both get the body's length.
        request_headers = [("host", host), ("content-length", str(len(body))), *headers]
        for attempt in range(2):
            try:
                resp = await self.pool().request("POST", url, headers=request_headers, content=body,
                                                 extensions={"timeout": self._timeouts})
                break
            except httpcore.WriteError:
                # The service had closed this idle connection (they do): nothing went out on it, so the
                # push goes once more, on a new connection. httpcore does not notice before writing.
                if attempt:
                    raise TransportFailure("connection: WriteError", False) from None
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


def result(resp: Response, reason: str, *, unregistered: bool = False) -> Result:
    """A refusal as an attempt's outcome, once the provider has read the service's reason: a device
    that is gone (`unregistered`), 429 and 5xx worth a retry after the service's Retry-After, and
    anything else failed for good."""
    if unregistered:
        return Result(Outcome.UNREGISTERED, status=resp.status, reason=reason)
    if resp.status == 429 or resp.status >= 500:
        return Result(Outcome.RETRY, status=resp.status, reason=reason,
                      retry_after_s=retry_after_seconds(resp.headers.get("retry-after")))
    return Result(Outcome.FAILED, status=resp.status, reason=reason)
