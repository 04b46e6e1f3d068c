"""The benchmark anchors (bench/anchors) start under daphne and broadcast to a room, sender included."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.support import ROOT, free_port

ANCHORS = ROOT / "bench" / "anchors"
DAPHNE = Path(sys.executable).parent / "daphne"


@contextlib.contextmanager
def anchor(module: str) -> Iterator[int]:
    port = free_port()
    # The anchors never read the hub's settings; a leftover settings module must not leak in.
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "LAYER")}
    log = tempfile.TemporaryFile()  # a file, not a pipe: daphne's log lines can never block it
    proc = subprocess.Popen([str(DAPHNE), "-b", "127.0.0.1", "-p", str(port), f"{module}:application"],
                            cwd=ANCHORS, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"{module} exited:\n{log.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"{module} did not listen on {port}"
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.mark.parametrize("module", ["plain_channels", "asgi_ceiling"])
def test_anchor_broadcasts_to_the_room_sender_included(module: str) -> None:
    with anchor(module) as port:
        url = f"ws://127.0.0.1:{port}/ws/room-a/"
        with connect(url, open_timeout=10) as a, connect(url, open_timeout=10) as b, \
                connect(f"ws://127.0.0.1:{port}/ws/room-b/", open_timeout=10) as other:
            a.send('{"t": "1", "n": 1}')
            assert a.recv(timeout=10) == '{"t": "1", "n": 1}'
            assert b.recv(timeout=10) == '{"t": "1", "n": 1}'
            b.send("second")
            assert a.recv(timeout=10) == "second"
            assert b.recv(timeout=10) == "second"
            # Another room hears nothing of room-a.
            with pytest.raises(TimeoutError):
                other.recv(timeout=0.3)
