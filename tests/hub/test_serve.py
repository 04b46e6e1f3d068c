"""`manage.py serve` (hub/management/commands/serve.py) beside a sibling on one port. (Its one-line
start-up errors: test_mint_token.py; plain uvicorn and daphne: test_servers.py.)"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.loadclient import frame_text
from tests.support import HubServer, free_port, http_json, mint, uid

pytestmark = pytest.mark.services


def test_serve_reuse_port_drain_hands_new_connections_to_the_sibling() -> None:
    """`serve --reuse-port`: a draining process stops listening at once, so every new connection to
    the shared address reaches the other process (none meets the drain's 503)."""
    port = free_port()
    draining = HubServer(port=port, reuse_port=True, env={"HUB_DRAIN_GRACE_S": "3"})
    sibling = HubServer(port=port, reuse_port=True)
    try:
        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(hub.start, 90) for hub in (draining, sibling)]:
                started.result()
        deadline = time.time() + 90
        while not all("hub serving on" in hub.log() for hub in (draining, sibling)):  # both listen
            assert time.time() < deadline, draining.log() + sibling.log()
            time.sleep(0.2)
        assert draining.proc is not None
        draining.proc.send_signal(signal.SIGTERM)
        while "draining" not in draining.log():
            assert time.time() < deadline, draining.log()
            time.sleep(0.05)
        answers = [http_json("GET", draining.http + "/readyz")[0] for _ in range(30)]
        assert answers == [200] * 30  # the sibling answered each (the draining process says 503)
        assert draining.proc.wait(30) == 0
    finally:
        draining.stop()
        sibling.stop()


def _close_code(stream: bytes) -> int | None:
    """The code of the close frame in a run of server frames (unmasked), if one arrived whole."""
    at = 0
    while at + 2 <= len(stream):
        opcode, n = stream[at] & 0x0F, stream[at + 1] & 0x7F
        at += 2
        if n == 126:
            n, at = struct.unpack(">H", stream[at:at + 2])[0], at + 2
        elif n == 127:
            n, at = struct.unpack(">Q", stream[at:at + 8])[0], at + 8
        if at + n > len(stream):
            return None
        if opcode == 0x8:
            return int(struct.unpack(">H", stream[at:at + 2])[0])
        at += n
    return None


def test_a_slow_reader_still_gets_its_close_code(live_hub: HubServer) -> None:
    """The hub closes a socket (4010, too many bad frames) while replies for it are still queued
    behind a client that reads slowly: the close frame waits its turn (`HUB_CLOSE_TIMEOUT_S`), so
    the client, reading 3 s later, gets every reply and the code. (Autobahn's own second would drop
    the connection, queued frames and all.)"""
    user = uid("slow")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # the hub's frames back up at once
        s.connect(("127.0.0.1", live_hub.port))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        s.sendall(frame_text(json.dumps({"id": 1, "cmd": "connect", "token": mint(user)}).encode()))
        s.sendall(b"".join(frame_text(json.dumps({"id": 2 + i, "cmd": "presence", "channel": f"user:{user}"}).encode())
                           for i in range(1000)))
        s.sendall(frame_text(b"not json") * 25)
        time.sleep(3)
        s.settimeout(30)
        stream = b""
        while _close_code(stream) is None:
            chunk = s.recv(65536)  # ConnectionResetError: the hub dropped it, close frame and all
            assert chunk, f"the connection ended without a close frame after {len(stream)} bytes"
            stream += chunk
    assert _close_code(stream) == 4010
