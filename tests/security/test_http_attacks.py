"""HTTP attacks on a live hub (`manage.py serve`: daphne with hub.guard installed in it): huge and
chunked bodies (413 before they are read), trickled headers and bodies (408), request floods with
and without a token (429), a spoofed X-Forwarded-For."""
from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support import HubServer, mint, running_hubs, uid

LIMITS = {"HUB_HTTP_MAX_BODY_BYTES": "65536", "HUB_HTTP_REQUEST_TIMEOUT_S": "2", "HUB_HTTP_ANON_PER_MIN": "5",
          "HUB_HTTP_PER_MIN": "8"}


@pytest.fixture(scope="module")
def tight_hub() -> Iterator[HubServer]:
    with running_hubs(1, LIMITS) as (server,):
        yield server


def raw_request(port: int, head: bytes, body_parts: list[bytes] = (), pause: float = 0,  # type: ignore[assignment]
                timeout: float = 10) -> tuple[int, dict[str, str], bytes, float]:
    """Send `head` then the parts (pausing between them); return (status, headers, body, seconds)."""
    if head:  # one request per connection: the reply ends when the server closes it
        line, _, rest = head.partition(b"\r\n")
        head = line + b"\r\nConnection: close\r\n" + rest
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        for part in body_parts:
            try:
                s.sendall(part)
            except OSError:
                break  # the server answered and closed: stop sending, read what it said
            time.sleep(pause)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - t0
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body, elapsed


def test_a_declared_huge_body_is_refused_before_it_is_sent(tight_hub: HubServer) -> None:
    head = (b"POST /api/rooms.create HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 314572800\r\n\r\n")
    status, _, body, elapsed = raw_request(tight_hub.port, head, [b"x" * 65536] * 4)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "too_large"
    assert elapsed < 5


def test_a_chunked_body_is_cut_off_at_the_limit(tight_hub: HubServer) -> None:
    head = (b"POST /api/rooms.create HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (32768, b"x" * 32768)
    status, _, body, _ = raw_request(tight_hub.port, head, [chunk] * 8)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "too_large"


def test_a_trickled_body_times_out(tight_hub: HubServer) -> None:
    head = (b"POST /api/rooms.create HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 40\r\n\r\n")
    status, _, body, elapsed = raw_request(tight_hub.port, head, [b" "] * 10, pause=0.5)
    assert status == 408
    assert elapsed < 4  # the 2 s deadline, not the 5 s the client would take


def test_trickled_headers_time_out(tight_hub: HubServer) -> None:
    parts = [bytes([c]) for c in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"]
    status, _, _, elapsed = raw_request(tight_hub.port, b"", parts, pause=0.3)
    assert status == 408
    assert elapsed < 5


def test_unauthenticated_requests_have_a_small_budget(tight_hub: HubServer) -> None:
    head = b"GET /api/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    assert [raw_request(tight_hub.port, head)[0] for _ in range(5)] == [200] * 5
    status, headers, body, _ = raw_request(tight_hub.port, head)
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert json.loads(body)["error"]["retry_after_ms"] > 0
    # Probes are not counted: a load balancer's health checks never run out.
    assert raw_request(tight_hub.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 200
    # A spoofed X-Forwarded-For does not buy a fresh budget (no trusted proxy configured).
    spoofed = b"GET /api/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"
    assert raw_request(tight_hub.port, spoofed)[0] == 429


def test_each_user_has_a_budget_across_their_tokens(tight_hub: HubServer) -> None:
    user = uid()
    body = b"{}"

    def call(token: str) -> int:
        head = (f"POST /api/rooms.list HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        return raw_request(tight_hub.port, head, [body])[0]

    first = [call(mint(user, ttl=600)) for _ in range(8)]
    assert 429 not in first
    assert call(mint(user, ttl=900)) == 429  # a second token of the same user shares the budget
    assert call(mint(uid(), ttl=600)) != 429  # another user does not
