"""Serve a fake's ASGI app over TLS (HTTP/2 by ALPN) on its own thread, as the real services do.

Hypercorn does the HTTP/2 framing, so what the provider under test speaks is what it would speak to
the real host: TLS 1.2+, ALPN, HPACK, streams multiplexed on one connection. The certificate is a
self-signed one made at start for 127.0.0.1 and localhost; `ca_file` is what a client must trust.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import logging
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A P-256 certificate for 127.0.0.1/localhost that is its own CA (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "push fake")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class TlsAsgiServer:
    """Runs `app` under Hypercorn on 127.0.0.1 (a free port unless given), TLS with ALPN `alpn`."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, port: int = 0,
                 alpn: tuple[str, ...] = ("h2", "http/1.1"), name: str = "fake") -> None:
        self.app = app
        self.alpn = list(alpn)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.tls_cert_file, self.tls_key_file = self_signed_cert(self.dir)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(1024)
        self.port = int(self.sock.getsockname()[1])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._stop: asyncio.Event | None = None
        self._serving: asyncio.Future[None] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.tls_cert_file

    def client_ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def start(self) -> TlsAsgiServer:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"fd://{self.sock.detach()}"]  # Hypercorn owns the listening socket from here
        config.certfile, config.keyfile = str(self.tls_cert_file), str(self.tls_key_file)
        config.alpn_protocols = self.alpn
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 0.5
        config.keep_alive_timeout = 300  # the services keep idle connections for long
        config.keep_alive_max_requests = 2**31  # and never close one after N requests
        config.h2_max_concurrent_streams = 1000  # APNs advertises 1000
        self.thread.start()

        async def begin() -> None:
            self._stop = asyncio.Event()
            app: Any = self.app
            self._serving = asyncio.ensure_future(serve(app, config, shutdown_trigger=self._stop.wait, mode="asgi"))

        self.call_async(begin())

        async def started() -> None:  # a bad certificate or config ends serve() at once: say so here
            await asyncio.sleep(0.05)
            if self._serving is not None and self._serving.done():
                self._serving.result()
        self.call_async(started())
        return self

    def call_async(self, coro: Awaitable[Any]) -> Any:
        async def run() -> Any:
            return await coro
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) on the server's loop (thread-safe access to the fake's state)."""
        async def run() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        async def end() -> None:
            if self._stop is not None and self._serving is not None:
                self._stop.set()
                try:
                    await asyncio.wait_for(self._serving, 5)
                except Exception:
                    pass
        if self.thread.is_alive():
            # Hypercorn cancels open connections' tasks on the way out and asyncio logs each as an error.
            log = logging.getLogger("asyncio")
            level = log.level
            log.setLevel(logging.CRITICAL)
            try:
                self.call_async(end())
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(5)
            finally:
                log.setLevel(level)
        shutil.rmtree(self.dir, ignore_errors=True)


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it exceeds `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
                  content_type: bytes = b"application/json; charset=UTF-8") -> None:
    out = list(headers or [])
    if body:
        out.append((b"content-type", content_type))
    out.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class SpawnedFake:
    """A fake running in a process of its own (benchmarks: its CPU is not the measured process's).

    `env` holds the NOTIFY_* settings that point a provider or a hub at it; `stats()` and
    `accepted()` read the fake's `/_fake/...` control endpoints.
    """

    def __init__(self, module: str, *args: str, timeout_s: float = 30.0) -> None:
        root = Path(__file__).resolve().parent.parent.parent
        self.proc = subprocess.Popen([sys.executable, "-m", module, "--port", "0", *args], cwd=root,
                                     stdout=subprocess.PIPE, text=True)
        ready: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        threading.Thread(target=lambda: ready.put(stdout.readline()), daemon=True).start()
        try:
            line = ready.get(timeout=timeout_s)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"{module} did not start within {timeout_s} s") from None
        if not line:
            self.stop()
            raise RuntimeError(f"{module} exited before it was ready")
        started = json.loads(line)
        self.url: str = started["url"]
        self.ca_file: str = started["ca_file"]
        self.env: dict[str, str] = started["env"]

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10,
                                    context=ssl.create_default_context(cafile=self.ca_file)) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return dict(self._get("/_fake/stats"))

    def accepted(self) -> list[dict[str, Any]]:
        """What the fake accepted (its last 10,000), each with `received_at` (unix seconds)."""
        return list(self._get("/_fake/accepted"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def serve_forever(server: TlsAsgiServer, started: dict[str, Any]) -> None:
    """A fake's `python -m` entry point: print one JSON line saying where it is, run until SIGTERM/^C."""
    def stop(*_: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    server.start()
    try:
        print(json.dumps(started), flush=True)
        while server.thread.is_alive():
            server.thread.join(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def fake_cli(description: str, default_port: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=default_port, help="0: any free port")
    return parser.parse_args()
